"""Task generators: prompts in many wordings, Python's answer, and the expert program's run.

A task is what the controller is asked to do ("calculate 12 + 35", "sort 3 1 2"). The
prompt text itself is placed in the machine's input region, and the expert program
(``programs/<task>.lasm``) reads its operands out of that free text:

- numbers are maximal digit runs; add, sub, mul, cmp and gcd use the first two, fib the
  first, so a template must name its operands in the order the program uses them
  (``{a}`` before ``{b}``; "subtract {b} from {a}" would compute b − a and is excluded);
- sort and max use every digit of the text, so templates contain no digits of their own;
- copy and reverse use the text after the first ``:`` (spaces after it skipped), so their
  templates end in ``: {text}`` and the payload starts with a non-space.

Every template of every task is checked by running the interpreter (tests/test_tasks.py).

Length is the difficulty measure a curriculum steps through, and ``Task.sample`` draws
examples of exactly that length:

=========  ===========  ==========================================================
operands   length unit  meaning
=========  ===========  ==========================================================
numbers    digits       digit symbols of the longest operand as written (leading
                        zeros count: the machine reads every symbol)
digits     items        digits in the list (sort, max)
text       characters   characters of the payload (copy, reverse)
=========  ===========  ==========================================================

Operands are drawn uniformly for their length except for a fraction ``Task.edge_rate`` of
edge cases that researchers expect a learned machine to fail first: carry and borrow chains
(``999+1``, ``1000-1``), equal operands, leading zeros, zeros and ones, already sorted or
reversed lists, palindromes. ``edge_rate=0`` gives the uniform distribution.

    >>> import random
    >>> ex = TASKS["add"].sample(random.Random(0), 3)
    >>> ex.length, ex.answer == str(int(ex.operands[0]) + int(ex.operands[1]))
    (3, True)
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from llamacpu.core import golden
from llamacpu.core.interp import DEFAULT_MAX_STEPS, Result, run
from llamacpu.core.isa import DEFAULT_ALPHABET, LlamacpuError, Program, Slot

__all__ = [
    "Operands", "Example", "Task", "TASKS", "TaskError", "ExpertRun", "expert",
    "default_out_size", "render", "with_template", "SPLITS", "expert_program", "heldout_key",
    "function_table",
]

SPLITS = ("train", "heldout")
"""Template splits: wordings used in training, and wordings kept for generalisation tests."""


class TaskError(LlamacpuError, ValueError):
    """A task asked for something it cannot give, or an expert run disagrees with Python."""


class Operands(enum.Enum):
    """What a task's operands are, which fixes its placeholders and its length unit."""

    NUMBERS = "digits"      # decimal numbers; placeholders {a} (and {b})
    DIGITS = "items"        # a list of single digits; one of {items} {items_comma} {digits}
    TEXT = "characters"     # one payload string; the placeholder {text}, after a ':'
    FUNCTION = "payload digits"  # a digit function by its ten examples, then a payload of
    #                              digits; the placeholders {defs} ';' {digits} (fmap)

    @property
    def unit(self) -> str:
        return self.value


_LIST_FIELDS = ("{items}", "{items_comma}", "{digits}")


@dataclass(frozen=True)
class Example:
    """One task instance: the prompt the machine reads and the answer it must write."""

    task: str                    # key of TASKS
    prompt: str                  # placed in the input region
    answer: str                  # Python's answer, computed from the operands
    program: str                 # expert program stem in programs/
    operands: tuple[str, ...]    # as written in the prompt, in prompt order ("007", "5")
    length: int                  # difficulty, in the task's unit (see the module docstring)
    template: str = ""           # the wording the prompt was rendered from


def render(template: str, kind: Operands, operands: tuple[str, ...]) -> str:
    """Fill a template's placeholders with operands as written."""
    if kind is Operands.FUNCTION:
        return template.format(defs=operands[0], digits=operands[1])
    if kind is Operands.NUMBERS:
        return template.format(**dict(zip("ab", operands)))
    if kind is Operands.DIGITS:
        return template.format(items=" ".join(operands), items_comma=", ".join(operands),
                               digits="".join(operands))
    return template.format(text=operands[0])


def _length(kind: Operands, operands: tuple[str, ...]) -> int:
    if kind is Operands.NUMBERS:
        return max(len(x) for x in operands)
    if kind is Operands.DIGITS:
        return len(operands)
    if kind is Operands.FUNCTION:
        return len(operands[1])
    return len(operands[0])


# Draws operands of exactly ``length`` for a task: (rng, length, edge_rate) -> operands.
Draw = Callable[[random.Random, int, float], tuple[str, ...]]
# Python's own answer from the operands.
Solve = Callable[[tuple[str, ...]], str]
# Output-region slots the expert program needs, from the operands as written.
OutSize = Callable[[tuple[str, ...]], int]


@dataclass(frozen=True)
class Task:
    """A task: its expert program, its wordings, and how to draw and answer instances."""

    name: str
    program: str                        # expert program stem in programs/
    operands: Operands                  # fixes placeholders and the length unit
    train_templates: tuple[str, ...]    # wordings for training
    heldout_templates: tuple[str, ...]  # wordings never used in training
    draw: Draw                          # operands of an exact length (see Draw)
    solve: Solve                        # Python's answer (see Solve)
    out_size: OutSize                   # output-region slots the expert needs (see OutSize)
    arity: int = 1                      # numbers read by the program (NUMBERS tasks)
    edge_rate: float = 0.25             # fraction of edge-case draws; 0 = uniform
    max_length: int | None = None       # longest length the expert runs in reasonable time
    description: str = ""
    program_for: Callable[[Example], Program] | None = None  # the expert program of an
    #                                     example when it depends on the example (fmap writes
    #                                     the prompt's function into it); None: the file's
    heldout_key: Callable[[Example], str] | None = None  # what the held-out partition
    #                                     hashes (curriculum.is_heldout); None: the prompt
    reserved: str = ""                  # symbols the expert reads as structure (fmap's ';'):
    #                                     the trainer's filler words never contain them

    def __post_init__(self) -> None:
        if not 0.0 <= self.edge_rate <= 1.0:
            raise ValueError(f"task {self.name}: edge_rate must be in [0, 1], "
                             f"got {self.edge_rate}")
        if not self.train_templates or not self.heldout_templates:
            raise ValueError(f"task {self.name}: needs train and heldout templates")
        every = self.train_templates + self.heldout_templates
        if len(set(every)) != len(every):
            raise ValueError(f"task {self.name}: a template is repeated across the splits")
        for t in every:
            self._check_template(t)

    def _check_template(self, t: str) -> None:
        where = f"task {self.name}, template {t!r}"
        fields = re.findall(r"\{[^}]*\}", t)
        literal = re.sub(r"\{[^}]*\}", "", t)
        if any(ch.isdigit() for ch in literal):
            raise ValueError(f"{where}: templates have no digits of their own (the "
                             "programs read every digit run of the prompt as an operand)")
        DEFAULT_ALPHABET.encode(literal)  # InputError (a ValueError) outside the alphabet
        if self.operands is Operands.NUMBERS:
            want = ["{a}", "{b}"][: self.arity]
            if fields != want:
                raise ValueError(f"{where}: needs the placeholders {' then '.join(want)}, "
                                 "once each, in the order the program reads them")
            if self.arity == 2 and not re.search(r"\{a\}\D+\{b\}", t):
                raise ValueError(f"{where}: {{a}} and {{b}} need a non-digit between them")
        elif self.operands is Operands.FUNCTION:
            between = t.partition("{defs}")[2].partition("{digits}")[0]
            if fields != ["{defs}", "{digits}"] or literal.count(";") != 1 \
                    or ";" not in between or ">" in literal:
                raise ValueError(f"{where}: needs {{defs}}, then the text's only ';', then "
                                 "{digits}, and no '>' of its own")
        elif self.operands is Operands.DIGITS:
            if len(fields) != 1 or fields[0] not in _LIST_FIELDS:
                raise ValueError(f"{where}: needs exactly one of {', '.join(_LIST_FIELDS)}")
        else:
            head = t.removesuffix("{text}")
            if fields != ["{text}"] or head == t or head.count(":") != 1 \
                    or head.split(":")[1].strip(" "):
                raise ValueError(f"{where}: needs one ':' followed only by spaces and "
                                 "{text} at the end (the program copies what follows ':')")

    def _check_operands(self, ops: tuple[str, ...]) -> None:
        kind = self.operands
        ok = (kind is Operands.NUMBERS and len(ops) == self.arity
              and all(x.isdigit() and x.isascii() for x in ops)) \
            or (kind is Operands.DIGITS and len(ops) >= 1
                and all(len(x) == 1 and x in string.digits for x in ops)) \
            or (kind is Operands.TEXT and len(ops) == 1 and ops[0][:1] not in ("", " ")) \
            or (kind is Operands.FUNCTION and len(ops) == 2 and _is_defs(ops[0])
                and ops[1].isdigit() and ops[1].isascii())
        if not ok:
            want = {Operands.NUMBERS: f"{self.arity} decimal numerals",
                    Operands.FUNCTION: "ten definitions 'x>y' (each digit x once, "
                                       "space-separated) and a payload of digits",
                    Operands.DIGITS: "one or more single digits",
                    Operands.TEXT: "one non-empty text not starting with a space"}[kind]
            raise TaskError(f"task {self.name}: operands must be {want}, got {ops!r}")

    @property
    def unit(self) -> str:
        """What length counts: digits, items or characters."""
        return self.operands.unit

    def templates(self, split: str = "train") -> tuple[str, ...]:
        """The wordings of a split: "train" or "heldout"."""
        if split == "train":
            return self.train_templates
        if split == "heldout":
            return self.heldout_templates
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")

    def check_length(self, length: int) -> None:
        if length < 1 or (self.max_length is not None and length > self.max_length):
            allowed = "at least 1" if self.max_length is None else f"in 1..{self.max_length}"
            raise TaskError(f"task {self.name}: length must be {allowed} ({self.unit}), "
                            f"got {length}")

    def sample(self, rng: random.Random, length: int, split: str = "train") -> Example:
        """One example whose operands have exactly ``length`` (in ``self.unit``)."""
        self.check_length(length)
        templates = self.templates(split)
        operands = self.draw(rng, length, self.edge_rate)
        return self.make(operands, rng.choice(templates))

    def make(self, operands: tuple[str, ...], template: str | None = None) -> Example:
        """The example for given operands (as written) in a given wording."""
        operands = tuple(operands)
        self._check_operands(operands)
        template = self.train_templates[0] if template is None else template
        prompt = render(template, self.operands, operands)
        return Example(self.name, prompt, self.solve(operands), self.program, operands,
                       _length(self.operands, operands), template)


# ---------------------------------------------------------------------------- operands


def _num(rng: random.Random, width: int) -> str:
    """A number of exactly ``width`` digits and no leading zero ("0" is one digit)."""
    if width == 1:
        return str(rng.randrange(10))
    return str(rng.randrange(10 ** (width - 1), 10 ** width))


def _pad(x: str, width: int) -> str:
    return x.rjust(width, "0")


def _shorter(rng: random.Random, length: int) -> str:
    """The second operand: same width half the time, else a uniform width ≤ length."""
    width = length if rng.random() < 0.5 else rng.randint(1, length)
    return _num(rng, width)


def _shuffled(rng: random.Random, a: str, b: str) -> tuple[str, str]:
    return (a, b) if rng.random() < 0.5 else (b, a)


def _leading_zeros(rng: random.Random, length: int) -> tuple[str, str]:
    """One operand of full width, the other short and zero-padded to a width ≤ length."""
    short = _num(rng, rng.randint(1, length - 1))
    return _num(rng, length), _pad(short, rng.randint(len(short) + 1, length))


def _edge(rng: random.Random, edge_rate: float,
          cases: list[Callable[[], tuple[str, ...]]]) -> tuple[str, ...] | None:
    """With probability ``edge_rate``, one of the applicable edge cases, else None."""
    if cases and rng.random() < edge_rate:
        return rng.choice(cases)()
    return None


def _draw_add(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    cases = [
        lambda: _shuffled(rng, "9" * length, str(rng.randint(1, 9))),   # carry chain
        lambda: (x := _num(rng, length), x),                             # equal operands
        lambda: _shuffled(rng, _num(rng, length), "0"),                  # adding zero
    ]
    if length > 1:
        cases.append(lambda: _shuffled(rng, *_leading_zeros(rng, length)))
    return _edge(rng, edge_rate, cases) or _shuffled(rng, _num(rng, length),
                                                     _shorter(rng, length))


def _ordered(a: str, b: str) -> tuple[str, str]:
    """(larger, smaller) by value: sub's contract is A ≥ B."""
    return (a, b) if int(a) >= int(b) else (b, a)


def _draw_sub(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    cases = [
        lambda: (x := _num(rng, length), x),                             # difference 0
        lambda: (_num(rng, length), "0"),                                # minus zero
    ]
    if length > 1:
        cases += [
            lambda: ("1" + "0" * (length - 1), str(rng.randint(1, 9))),  # borrow chain
            lambda: _leading_zeros(rng, length),
        ]
    return _edge(rng, edge_rate, cases) or _ordered(_num(rng, length), _shorter(rng, length))


def _one_digit_changed(rng: random.Random, x: str) -> str:
    """``x`` with one digit replaced, keeping a nonzero leading digit when ``len(x) > 1``."""
    i = rng.randrange(len(x))
    low = 1 if i == 0 and len(x) > 1 else 0
    choices = [str(d) for d in range(low, 10) if str(d) != x[i]]
    return x[:i] + rng.choice(choices) + x[i + 1:]


def _draw_cmp(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    if rng.random() < 1 / 3:  # class balance: "=" is a third of the answers
        if length > 1 and rng.random() < edge_rate:  # equal by value, not by text: 007?7
            y = _num(rng, rng.randint(1, length - 1))
            return _shuffled(rng, _pad(y, length), y)
        x = _num(rng, length)
        return x, x
    cases = [lambda: (x := _num(rng, length), _one_digit_changed(rng, x))]  # near miss
    if length > 1:
        cases.append(lambda: _shuffled(rng, *_leading_zeros(rng, length)))
    return _edge(rng, edge_rate, cases) or _shuffled(rng, _num(rng, length),
                                                     _shorter(rng, length))


def _draw_mul(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    cases = [
        lambda: ("9" * length, "9" * rng.randint(1, length)),           # carry chains
        lambda: _shuffled(rng, _num(rng, length), "0"),
        lambda: _shuffled(rng, _num(rng, length), "1"),
        lambda: (x := _num(rng, length), x),                             # squares
    ]
    if length > 1:
        cases.append(lambda: _shuffled(rng, *_leading_zeros(rng, length)))
    return _edge(rng, edge_rate, cases) or _shuffled(rng, _num(rng, length),
                                                     _shorter(rng, length))


def _draw_fib(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    cases = [lambda: (_pad(str(rng.randint(0, 2)), length),)]           # F(0..2), padded
    return _edge(rng, edge_rate, cases) or (_num(rng, length),)


def _positive(rng: random.Random, width: int) -> str:
    return str(rng.randrange(max(1, 10 ** (width - 1)), 10 ** width))


def _draw_gcd(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    def divides() -> tuple[str, ...]:
        b = _positive(rng, length)
        divisors = [d for d in range(1, int(b) + 1) if int(b) % d == 0]
        return _shuffled(rng, b, str(rng.choice(divisors)))

    cases = [
        lambda: (x := _positive(rng, length), x),
        lambda: _shuffled(rng, _positive(rng, length), "1"),
        divides,
    ]
    width = length if rng.random() < 0.5 else rng.randint(1, length)
    return _edge(rng, edge_rate, cases) or _shuffled(rng, _positive(rng, length),
                                                     _positive(rng, width))


def _draw_digit_list(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    def run_of(order: Callable[[list[str]], list[str]]) -> Callable[[], tuple[str, ...]]:
        return lambda: tuple(order([str(rng.randrange(10)) for _ in range(length)]))

    cases = [
        run_of(sorted),                                                  # already sorted
        run_of(lambda xs: sorted(xs, reverse=True)),                     # reversed
        lambda: (str(rng.randrange(10)),) * length,                      # all equal
        lambda: ("0",) * length,                                         # all zero
    ]
    return _edge(rng, edge_rate, cases) or tuple(str(rng.randrange(10)) for _ in range(length))


_LETTERS = string.ascii_lowercase
_TEXT_CHARS = "".join(c for c in DEFAULT_ALPHABET.charset if c != ":") + string.digits
"""Payload characters: the alphabet minus ':' (only the first ':' of a prompt matters, but
a payload without one reads unambiguously)."""


def _words(rng: random.Random, length: int) -> str:
    """Lowercase words separated by single spaces; first and last characters are letters."""
    out: list[str] = []
    for i in range(length):
        inner = 0 < i < length - 1 and out[-1] != " "
        out.append(" " if inner and rng.random() < 0.18 else rng.choice(_LETTERS))
    return "".join(out)


def _mixed(rng: random.Random, length: int) -> str:
    """Any payload characters; first and last are not spaces (leading spaces are skipped)."""
    solid = _TEXT_CHARS.replace(" ", "")
    return "".join(rng.choice(solid if i in (0, length - 1) else _TEXT_CHARS)
                   for i in range(length))


def _draw_text(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    def palindrome() -> tuple[str, ...]:
        half = _words(rng, (length + 1) // 2)
        return (half + half[: length // 2][::-1],)

    cases = [palindrome, lambda: (rng.choice(_LETTERS) * length,)]
    drawn = _edge(rng, edge_rate, cases)
    if drawn:
        return drawn
    return (_words(rng, length) if rng.random() < 0.6 else _mixed(rng, length),)


def _draw_function(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """A uniform digit function (edge cases: identity, constant, a permutation), its ten
    definitions in a random order, and a payload of ``length`` digits."""
    cases = [
        lambda: tuple(range(10)),                                       # identity
        lambda: (rng.randrange(10),) * 10,                              # constant
        lambda: tuple(rng.sample(range(10), 10)),                       # a permutation
    ]
    f = _edge(rng, edge_rate, cases) or tuple(rng.randrange(10) for _ in range(10))
    order = rng.sample(range(10), 10)
    defs = " ".join(f"{x}>{f[x]}" for x in order)
    return defs, "".join(str(rng.randrange(10)) for _ in range(length))


def _is_defs(defs: str) -> bool:
    pairs = defs.split(" ")
    return (len(pairs) == 10 and all(len(p) == 3 and p[1] == ">" and p[0].isdigit()
                                     and p[2].isdigit() for p in pairs)
            and sorted(p[0] for p in pairs) == list("0123456789"))


def function_table(defs: str) -> tuple[int, ...]:
    """f(0..9) from definitions as written ("3>9 0>3 ..."; every digit defined once)."""
    f = {int(p[0]): int(p[2]) for p in defs.split(" ")}
    return tuple(f[x] for x in range(10))


def _fmap(ops: tuple[str, ...]) -> str:
    f = function_table(ops[0])
    return "".join(str(f[int(d)]) for d in ops[1])


def _function_key(ex: Example) -> str:
    """fmap's held-out key: the function itself, whatever its order, wording or payload."""
    return "function " + "".join(map(str, function_table(ex.operands[0])))


def _fmap_program(ex: Example) -> Program:
    """fmap.lasm with the example's function in WEIGHTS slot f (other symbols map to END)."""
    p = golden.load_program("fmap")
    end = p.alphabet.end
    table = list(function_table(ex.operands[0])) + [end] * (p.alphabet.size - 10)
    slots = list(p.slots)
    slots[p.symbols["f"]] = Slot.weights(table)
    return dataclasses.replace(p, slots=tuple(slots))


def _fmap_data_program(ex: Example) -> Program:
    """fmap_data.lasm with the example's f(0..9) in its ten DATA slots tab+0..9."""
    p = golden.load_program("fmap_data")
    slots = list(p.slots)
    tab = p.symbols["tab"]
    for x, y in enumerate(function_table(ex.operands[0])):
        slots[tab + x] = Slot.data(y)
    return dataclasses.replace(p, slots=tuple(slots))


# ---------------------------------------------------------------------------- answers


def _cmp(ops: tuple[str, ...]) -> str:
    a, b = int(ops[0]), int(ops[1])
    return "<" if a < b else ">" if a > b else "="


def _fib(ops: tuple[str, ...]) -> str:
    a, b = 0, 1
    for _ in range(int(ops[0])):
        a, b = b, a + b
    return str(a)


# ---------------------------------------------------------------------------- the tasks
#
# out_size: output-region slots each expert program writes (programs/*.lasm headers), plus
# the END that terminates the answer. la, lb: digits of A and B as written; fib keeps F(k)
# and F(k+1) interleaved, 3 slots per digit of F(n + 1) plus 2. tests/test_tasks.py runs
# every task at exactly these sizes, and checks one slot fewer is too few.


def _room(extra: int) -> OutSize:
    """add, sub, cmp: a room of la + lb digit slots, then ``extra`` slots."""
    return lambda ops: len(ops[0]) + len(ops[1]) + extra


TASKS: Mapping[str, Task] = {t.name: t for t in (
    Task(
        "add", "add", Operands.NUMBERS,
        train_templates=("calculate {a} + {b}", "what is {a} plus {b}?", "{a}+{b}=",
                         "add {a} and {b}", "sum of {a} and {b}", "{a} + {b}"),
        heldout_templates=("how much is {a}+{b}?", "compute the sum of {a} and {b}.",
                           "{a} plus {b} equals?", "add {a} to {b}"),
        draw=_draw_add, solve=lambda ops: str(int(ops[0]) + int(ops[1])),
        out_size=_room(1), arity=2,
        description="decimal addition of two numbers"),
    Task(
        "sub", "sub", Operands.NUMBERS,
        # The program computes first − second: "subtract {b} from {a}" names b first in the
        # text and would compute b − a, so it is not a template. Operands keep A ≥ B.
        train_templates=("what is {a} minus {b}?", "{a}-{b}=", "{a} - {b}",
                         "calculate {a} - {b}", "from {a} subtract {b}", "{a} minus {b}"),
        heldout_templates=("how much is {a} take away {b}?", "compute {a}-{b}.",
                           "difference of {a} and {b}", "{a} less {b} is?"),
        draw=_draw_sub, solve=lambda ops: str(int(ops[0]) - int(ops[1])),
        out_size=_room(1), arity=2,
        description="decimal subtraction, first minus second, first ≥ second"),
    Task(
        "cmp", "cmp", Operands.NUMBERS,
        train_templates=("compare {a} and {b}", "{a}?{b}", "{a} ? {b}",
                         "compare {a} with {b}", "{a} vs {b}", "how does {a} compare to {b}?"),
        heldout_templates=("order {a} and {b}", "relation of {a} to {b}?",
                           "is {a} less than, equal to or greater than {b}?"),
        draw=_draw_cmp, solve=_cmp, out_size=_room(2), arity=2,
        description="compare two numbers by value: '<', '=' or '>'"),
    Task(
        "mul", "mul", Operands.NUMBERS,
        train_templates=("{a}*{b}=", "{a} * {b}", "multiply {a} by {b}",
                         "what is {a} times {b}?", "product of {a} and {b}",
                         "calculate {a} * {b}"),
        heldout_templates=("{a} x {b}", "how much is {a} times {b}?",
                           "compute the product of {a} and {b}."),
        draw=_draw_mul, solve=lambda ops: str(int(ops[0]) * int(ops[1])),
        out_size=lambda ops: 2 * len(ops[0]) + len(ops[1]) + 3, arity=2,
        description="decimal multiplication, schoolbook"),
    Task(
        "copy", "copy", Operands.TEXT,
        train_templates=("copy: {text}", "repeat after me: {text}", "echo: {text}",
                         "say: {text}", "copy this: {text}", "write:  {text}"),
        heldout_templates=("please repeat: {text}", "parrot this: {text}",
                           "type exactly: {text}"),
        draw=_draw_text, solve=lambda ops: ops[0],
        out_size=lambda ops: len(ops[0]) + 1,
        description="echo the text after the first ':'"),
    Task(
        "reverse", "reverse", Operands.TEXT,
        train_templates=("reverse: {text}", "reverse this: {text}", "backwards: {text}",
                         "write backwards: {text}", "mirror: {text}",
                         "reverse the text:  {text}"),
        heldout_templates=("spell backwards: {text}", "flip: {text}",
                           "read it in reverse: {text}"),
        draw=_draw_text, solve=lambda ops: ops[0][::-1],
        out_size=lambda ops: len(ops[0]) + 1,
        description="the text after the first ':', reversed"),
    Task(
        "sort", "sort", Operands.DIGITS,
        train_templates=("sort {items}", "sort the digits {digits}", "sort {items_comma}",
                         "sort: {items}", "arrange in ascending order: {items_comma}",
                         "order {items} from small to large"),
        heldout_templates=("put {items} in order", "sort these digits: {digits}",
                           "ascending: {items_comma}"),
        draw=_draw_digit_list, solve=lambda ops: "".join(sorted(ops)),
        out_size=lambda ops: len(ops) + 1,
        description="every digit of the text, ascending, without separators"),
    Task(
        "max", "max", Operands.DIGITS,
        train_templates=("max of {items}", "largest digit in {items}", "max {digits}",
                         "what is the largest of {items_comma}?", "maximum: {items}",
                         "biggest digit of {digits}"),
        heldout_templates=("which is the greatest of {items}?", "find the max in {items_comma}",
                           "top digit: {digits}"),
        draw=_draw_digit_list, solve=lambda ops: max(ops), out_size=lambda ops: 2,
        description="the largest digit of the text"),
    Task(
        "fib", "fib", Operands.NUMBERS,
        train_templates=("fib {a}", "fibonacci {a}", "fib({a})", "what is fibonacci number {a}?"),
        heldout_templates=("compute fib of {a}.", "the fibonacci number at index {a}"),
        draw=_draw_fib, solve=_fib,
        out_size=lambda ops: 3 * len(_fib((str(int(ops[0]) + 1),))) + 2, arity=1, max_length=2,
        description="the n-th Fibonacci number (n < 100: the run grows as n·digits(F(n)))"),
    Task(
        "gcd", "gcd", Operands.NUMBERS,
        train_templates=("gcd of {a} and {b}", "gcd({a}, {b})", "{a},{b}",
                         "greatest common divisor of {a} and {b}"),
        heldout_templates=("what is the gcd of {a} and {b}?",
                           "highest common factor of {a}, {b}"),
        draw=_draw_gcd, solve=lambda ops: str(math.gcd(int(ops[0]), int(ops[1]))),
        out_size=lambda ops: 2 * (len(ops[0]) + len(ops[1]) + 1), arity=2,
        max_length=2,
        description="greatest common divisor of two positive numbers (Euclid by "
                    "subtraction: gcd(A, 1) takes A − 1 rounds, hence short operands)"),
    Task(
        # The weight-token channel's task: the controller must write f into the program's
        # WEIGHTS slot (docs/weights.md). Held out by FUNCTION: eval functions are never
        # trained on, whatever their wording, order or payload.
        "fmap", "fmap", Operands.FUNCTION,
        train_templates=("f: {defs} ; apply f to {digits}", "{defs} ; {digits}",
                         "let f be {defs} ; map f over {digits}",
                         "define f by {defs}; what is f of each digit of {digits}?"),
        heldout_templates=("f is {defs} ; now apply it to {digits}",
                           "given {defs} ; translate {digits}"),
        draw=_draw_function, solve=_fmap, out_size=lambda ops: len(ops[1]) + 1,
        edge_rate=0.1, program_for=_fmap_program, heldout_key=_function_key, reserved=";",
        description="a digit function defined by its ten examples (shuffled), applied to "
                    "every payload digit; f travels in a WEIGHTS slot"),
    Task(
        # The same problem with the channel off: f travels in ten DATA slots. Its own
        # wordings ("g", "look up"), so a controller trained on both knows which program
        # a prompt wants; the same held-out functions as fmap.
        "fmap_data", "fmap_data", Operands.FUNCTION,
        train_templates=("g: {defs} ; look up g for {digits}", "{defs} ; look up {digits}",
                         "let g be {defs} ; look g up for {digits}",
                         "table g is {defs}; read g at each digit of {digits}"),
        heldout_templates=("g is {defs} ; look it up at {digits}",
                           "lookup table {defs} ; keys {digits}"),
        draw=_draw_function, solve=_fmap, out_size=lambda ops: len(ops[1]) + 1,
        edge_rate=0.1, program_for=_fmap_data_program, heldout_key=_function_key,
        reserved=";",
        description="fmap with the function in ten DATA slots (the channel-off baseline)"),
)}


def expert_program(example: Example) -> Program:
    """The expert program of an example: its task's ``program_for`` (the function written
    in, for fmap), else ``programs/<example.program>.lasm``."""
    hook = TASKS[example.task].program_for
    return hook(example) if hook is not None else golden.load_program(example.program)


def heldout_key(example: Example) -> str:
    """What the held-out partition hashes for an example: its task's ``heldout_key`` (fmap:
    the function), else the prompt."""
    hook = TASKS[example.task].heldout_key
    return hook(example) if hook is not None else example.prompt


# ---------------------------------------------------------------------------- the expert


@dataclass(frozen=True)
class ExpertRun:
    """The expert program's run on an example: the supervision the trainer imitates."""

    example: Example
    program: Program
    result: Result      # with the trace (TraceStep per instruction)
    out_size: int       # output-region slots the run was given


def default_out_size(example: Example) -> int:
    """Output-region slots for an example: a few past what its expert program writes.

    Much smaller than the loader's default (``isa.default_out_size``, 4·(n + 1) + 256),
    because a tensor machine pays for every slot; tests run every task at exactly this size.
    """
    return TASKS[example.task].out_size(example.operands)


def expert(example: Example, out_size: int | None = None,
           max_steps: int = DEFAULT_MAX_STEPS) -> ExpertRun:
    """Run the example's expert program on its prompt, with the trace.

    Raises TaskError if the program's answer is not the example's answer (a bug in a
    program, a template or a generator, never a property of the example), MachineFault if
    the run faults.
    """
    size = default_out_size(example) if out_size is None else out_size
    program = expert_program(example)
    result = run(program, example.prompt, max_steps, trace=True, out_size=size)
    if result.output != example.answer:
        raise TaskError(f"expert {example.program}.lasm answers {result.output!r} to "
                        f"{example.prompt!r}, Python says {example.answer!r}")
    return ExpertRun(example, program, result, size)


def with_template(example: Example, template: str) -> Example:
    """The same operands in another wording (the answer does not depend on it)."""
    return TASKS[example.task].make(example.operands, template)

