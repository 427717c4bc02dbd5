"""Tasks: prompts in many wordings, Python's answer, and the expert program's run.

A task is what the controller is asked to do ("calculate 12 + 35", "sort 3 1 2"), and it is
one file: ``programs/<task>.py`` beside its expert program ``programs/<task>.lasm``. The
file defines ``TASK = Task(...)``: the operand kind, the training and held-out wordings, a
draw function and Python's answer (``solve``, written once: the answer on free text that
the expert program is checked against, :func:`reference`, is ``solve`` of the operands
read from the text). This module is the library those files import (:class:`Task`,
:class:`Operands` and the shared draw helpers: numbers with edge cases, digit lists, text
payloads, digit functions) and the loader that reads them (:func:`load_tasks`). ``TASKS``
holds the tasks of ``golden.PROGRAMS_DIR`` and of every directory named in the environment
variable ``LLAMACPU_TASKS`` (``os.pathsep``-separated), so a task kept in a directory of
one's own reaches the curriculum, ``python -m llamacpu.train`` and ``python -m
llamacpu.check`` (docs/extending.md, "Adding a task").

The prompt text itself is placed in the machine's input region, and the expert program
reads its operands out of that free text (``llamacpu.core.golden`` has the rules):

- numbers are maximal digit runs; add, sub, mul, cmp and gcd use the first two, fib the
  first, so a template must name its operands in the order the program uses them
  (``{a}`` before ``{b}``; "subtract {b} from {a}" would compute b − a and is excluded);
- sort and max use every digit of the text, so templates contain no digits of their own;
- copy and reverse use the text after the first ``:`` (spaces after it skipped), so their
  templates end in ``: {text}`` and the payload starts with a non-space.

Every template of every task is checked by running the interpreter (tests/test_tasks.py).

Length is the difficulty measure a curriculum steps through, and ``Task.sample`` draws
examples of exactly that length:

==========  ===========  ==========================================================
operands    length unit  meaning
==========  ===========  ==========================================================
numbers     digits       digit symbols of the longest operand as written (leading
                         zeros count: the machine reads every symbol)
digits      items        digits in the list (sort, max)
text        characters   characters of the payload (copy, reverse)
expression  digits       digits of the longest number (expr); its second size, the
                         number of operations, is the draw's ``ops=`` (DRAW_OPTIONS)
chain       digits       digits of the longest number (chain); ``ops=`` as for expr
==========  ===========  ==========================================================

Operands are drawn uniformly for their length except for a fraction ``Task.edge_rate`` of
edge cases that researchers expect a learned machine to fail first: carry and borrow chains
(``999+1``, ``1000-1``), equal operands, leading zeros, zeros and ones, already sorted or
reversed lists, palindromes. ``edge_rate=0`` gives the uniform distribution.

Every example is written in an alphabet (``Example.alphabet``, by default
``isa.DEFAULT_ALPHABET``; a run trained with ``--alphabet printable`` draws in
``isa.PRINTABLE_ALPHABET``): ``Task.sample`` and ``Task.make`` take it, its expert program is
assembled in it (:func:`expert_program`), text payloads may hold any of its characters but
``':'`` (:func:`draw_text`), and the grammar's capitalised wordings exist exactly when it
has capitals (``Task.templates``). The default alphabet's draws are pinned by a fixed hash
(``tests/test_tasks.py``): another alphabet never changes them.

    >>> import random
    >>> ex = TASKS["add"].sample(random.Random(0), 3)
    >>> ex.length, ex.answer == str(int(ex.operands[0]) + int(ex.operands[1]))
    (3, True)
    >>> reference("add", "what is 12 plus 35?"), reference("reverse", "reverse: hello")
    ('47', 'olleh')
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.util
import inspect
import os
import random
import re
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from llamacpu.core import golden
from llamacpu.core.interp import DEFAULT_MAX_STEPS, Result, run
from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    PRINTABLE_ALPHABET,
    Alphabet,
    LlamacpuError,
    Program,
)
from llamacpu.learn.composed import (
    CHAIN_STEPS,
    EXPRESSION_SYMBOLS,
    chain_phrasings,
    check_chain_template,
    expression_in,
    is_expression,
    render_chain,
)
from llamacpu.learn.draws import (
    Fit,
    apply_function,
    draw_digit_list,
    draw_function,
    draw_text,
    edge_case,
    fit_binary_pair,
    fit_tokens,
    function_table,
    is_defs,
    leading_zeros,
    number,
    ordered,
    pad,
    payload_chars,
    shorter,
    shuffled,
)
from llamacpu.learn.wordings import (
    WORDING_SPLITS,
    Frame,
    Grammar,
    Wording,
    binary_op_grammar,
    bits_grammar,
)

__all__ = [
    "Operands", "Example", "Task", "TASKS", "TaskError", "ExpertRun", "expert",
    "default_out_size", "render", "with_template", "SPLITS", "GRAMMAR_SPLITS", "NEW_FRAMES",
    "ALL_SPLITS",
    "TRAINING_SPLITS",
    "expert_program", "heldout_key",
    "function_table", "load_tasks", "reference", "TASKS_ENV",
    # the draw helpers task files use
    "number", "pad", "shorter", "shuffled", "leading_zeros", "edge_case", "ordered", "room",
    "draw_digit_list", "draw_text", "draw_function", "apply_function", "function_key",
    "fit_tokens", "fit_binary_pair", "Grammar", "Frame", "bits_grammar",
    "binary_op_grammar", "payload_chars", "DRAW_OPTIONS", "CHAIN_STEPS", "chain_phrasings",
    "expression_in",
]

SPLITS = ("train", "heldout")
"""Template splits: wordings used in training, and wordings kept for generalisation tests."""

GRAMMAR_SPLITS = ("recombined", "new_words")
"""The held-out splits of a task's grammar (``learn/wordings.py``): seen words and
structures in new combinations, and words and structures training never contains."""

TRAINING_SPLITS = ("train", "grammar_train")
"""The wordings a run may train on: the hand-written training templates (``train``), or
those and the grammar's train split (``grammar_train``; ``train --wordings grammar``)."""

NEW_FRAMES = "new_frames"
"""The part of ``new_words`` whose frame is new: requests in a structure training never
contains (for the decline tasks, families of requests the machine never saw)."""

ALL_SPLITS = ("train", "grammar_train", "heldout", *GRAMMAR_SPLITS, NEW_FRAMES)


class TaskError(LlamacpuError, ValueError):
    """A task asked for something it cannot give, or an expert run disagrees with Python."""


class Operands(enum.Enum):
    """What a task's operands are, which fixes its placeholders and its length unit."""

    NUMBERS = "digits"      # decimal numbers; placeholders {a} (and {b})
    DIGITS = "items"        # a list of single digits; one of {items} {items_comma} {digits}
    TEXT = "characters"     # one payload string; the placeholder {text}, after a ':'
    FUNCTION = "payload digits"  # a digit function by its ten examples, then a payload of
    #                              digits; the placeholders {defs} ';' {digits} (fmap)
    EXPRESSION = "expression"  # one arithmetic expression (+ - * and parentheses over
    #                            numbers); the placeholder {expr} (expr)
    CHAIN = "chain"          # a left-to-right chain: numbers and step names alternating,
    #                          n0 op1 n1 op2 n2 ...; the wording phrases every step kind
    #                          (chain_phrasings)

    @property
    def unit(self) -> str:
        """What a length counts: the digits of the longest number for the composed kinds."""
        return "digits" if self in (Operands.EXPRESSION, Operands.CHAIN) else self.value


_LIST_FIELDS = ("{items}", "{items_comma}", "{digits}")


@dataclass(frozen=True)
class Example:
    """One task instance: the prompt the machine reads and the answer it must write."""

    task: str                    # key of TASKS
    prompt: str                  # placed in the input region
    answer: str                  # Python's answer, computed from the operands
    program: str                 # expert program stem in programs/
    operands: tuple[str, ...]    # as written in the prompt, in prompt order ("007", "5";
    #                              a chain's numbers with its steps between them)
    length: int                  # difficulty, in the task's unit (see the module docstring)
    template: str = ""           # the wording the prompt was rendered from
    alphabet: Alphabet = field(default=DEFAULT_ALPHABET, repr=False)  # what the prompt is
    #                              written in; the expert program is assembled in it


def render(template: str, kind: Operands, operands: tuple[str, ...]) -> str:
    """Fill a template's placeholders with operands as written."""
    if kind is Operands.FUNCTION:
        return template.format(defs=operands[0], digits=operands[1])
    if kind is Operands.NUMBERS:
        return template.format(**dict(zip("ab", operands)))
    if kind is Operands.DIGITS:
        return template.format(items=" ".join(operands), items_comma=", ".join(operands),
                               digits="".join(operands))
    if kind is Operands.EXPRESSION:
        return template.replace("{expr}", operands[0])
    if kind is Operands.CHAIN:
        return render_chain(template, operands)
    return template.format(text=operands[0])


def _length(kind: Operands, operands: tuple[str, ...]) -> int:
    if kind is Operands.NUMBERS:
        return max(len(x) for x in operands)
    if kind is Operands.EXPRESSION:
        return max(map(len, re.findall(r"[0-9]+", operands[0])))
    if kind is Operands.CHAIN:
        return max(len(x) for x in operands[0::2])
    if kind is Operands.DIGITS:
        return len(operands)
    if kind is Operands.FUNCTION:
        return len(operands[1])
    return len(operands[0])


# Draws operands of exactly ``length`` for a task: (rng, length, edge_rate) -> operands. A
# draw that also takes the keyword ``alphabet`` is given the alphabet of the examples being
# drawn (draw_text: the characters a payload may hold); one that does not draws the same
# operands in every alphabet (Task.draw_operands). A draw may take the keywords of
# DRAW_OPTIONS, the sizes of a task beyond its length: it is given each only when one is
# asked for (Task.sample(..., ops=4)), and decides it itself otherwise.
Draw = Callable[..., tuple[str, ...]]
# Python's own answer from the operands.
Solve = Callable[[tuple[str, ...]], str]
# Output-region slots the expert program needs, from the operands as written: what it
# writes (its .lasm header) plus the END that terminates the answer. tests/test_tasks.py
# runs every task at exactly this size, and checks two slots fewer is too few.
OutSize = Callable[[tuple[str, ...]], int]


DRAW_OPTIONS = ("ops", "parens")
"""Sizes beyond the length that a task's draw may take as keywords (``Task.draw_options``):
the number of operations of a composed task (``ops``: expr and chain; by default each draws
1 or 2) and whether an expression has parentheses (``parens``: expr; by default either)."""


@dataclass(frozen=True)
class Task:
    """A task: its expert program, its wordings, and how to draw and answer instances."""

    name: str
    program: str                        # expert program stem (<program>.lasm)
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
    fit: Fit | None = None              # operands of the task's kind made to fit its
    #                                     contract (sub: the larger first), or None when they
    #                                     cannot (gcd: a zero); the property tests draw
    #                                     through it (evaluate.strategies); None: all fit
    terminated: bool = False            # the benchmark the task comes from scores a
    #                                     termination token after the answer: per-token
    #                                     accuracy counts the answer's END as one more
    #                                     position (evaluation.token_score)
    directory: Path | None = None       # where <program>.lasm is: the task file's directory
    #                                     (load_tasks sets it); None: golden.PROGRAMS_DIR
    grammar: Grammar | None = None      # how people ask (learn/wordings.py): the splits
    #                                     recombined and new_words; None: templates only
    commutative: bool = False           # the answer does not depend on the operands' order,
    #                                     so a wording may name b before a ("add {b} to {a}")
    declines: bool = False              # a request the machine has no program for: its
    #                                     expert is decline.lasm, and a free run is right when
    #                                     the machine declines it (Solution.abstained)

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

    def _check_template(self, t: str, alphabet: Alphabet = DEFAULT_ALPHABET) -> None:
        """Raise ValueError unless ``t`` is a template of this task written in ``alphabet``
        (a task's own templates: the default alphabet, which every alphabet extends)."""
        where = f"task {self.name}, template {t!r}"
        fields = re.findall(r"\{[^}]*\}", t)
        if self.commutative and fields == ["{b}", "{a}"]:  # either order reads the same
            fields, t = fields[::-1], t.replace("{a}", "{B}").replace("{b}", "{a}").replace(
                "{B}", "{b}")
        literal = re.sub(r"\{[^}]*\}", "", t)
        if any(ch.isdigit() for ch in literal):
            raise ValueError(f"{where}: templates have no digits of their own (the "
                             "programs read every digit run of the prompt as an operand)")
        alphabet.encode(literal)  # InputError (a ValueError) outside the alphabet
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
        elif self.operands is Operands.EXPRESSION:
            if fields != ["{expr}"] or any(c in literal for c in EXPRESSION_SYMBOLS):
                raise ValueError(f"{where}: needs {{expr}} once and no "
                                 f"{' '.join(EXPRESSION_SYMBOLS)} of its own (the "
                                 "expression is the text's only one: expression_in)")
        elif self.operands is Operands.CHAIN:
            check_chain_template(t, where)
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
            or (kind is Operands.FUNCTION and len(ops) == 2 and is_defs(ops[0])
                and ops[1].isdigit() and ops[1].isascii()) \
            or (kind is Operands.EXPRESSION and len(ops) == 1 and is_expression(ops[0])) \
            or (kind is Operands.CHAIN and len(ops) >= 3 and len(ops) % 2 == 1
                and all(x.isdigit() and x.isascii() for x in ops[0::2])
                and all(x in CHAIN_STEPS for x in ops[1::2]))
        if not ok:
            want = {Operands.NUMBERS: f"{self.arity} decimal numerals",
                    Operands.FUNCTION: "ten definitions 'x>y' (each digit x once, "
                                       "space-separated) and a payload of digits",
                    Operands.DIGITS: "one or more single digits",
                    Operands.TEXT: "one non-empty text not starting with a space",
                    Operands.EXPRESSION: "one arithmetic expression (digits, spaces, "
                                         "+ - * and parentheses; no space at either end)",
                    Operands.CHAIN: "numerals and steps alternating, at least one step: "
                                    f"n0 op1 n1 ..., each op one of {', '.join(CHAIN_STEPS)}",
                    }[kind]
            raise TaskError(f"task {self.name}: operands must be {want}, got {ops!r}")

    @property
    def unit(self) -> str:
        """What length counts: digits, items or characters."""
        return self.operands.unit

    @property
    def draw_options(self) -> tuple[str, ...]:
        """The sizes beyond the length that this task's draw takes (of
        :data:`DRAW_OPTIONS`): ``("ops", "parens")`` for expr, ``("ops",)`` for chain,
        ``()`` for the others."""
        return tuple(k for k in DRAW_OPTIONS if _takes(self.draw, k))

    def templates(self, split: str = "train",
                  alphabet: Alphabet = DEFAULT_ALPHABET) -> tuple[str, ...]:
        """The wordings of a split: "train" or "heldout" (the hand-written templates, the
        same in every alphabet); "grammar_train" (those for training and the grammar's
        train split); "recombined" or "new_words" (the grammar's held-out splits);
        "new_frames" (those of "new_words" whose frame is new). Grammar wordings are those
        ``alphabet`` writes that the task's program reads right (:meth:`grammar_wordings`)."""
        if split == "train":
            return self.train_templates
        if split == "heldout":
            return self.heldout_templates
        if split == "grammar_train":
            return (self._split_templates(alphabet)["grammar_train"] if self.grammar
                    else self.train_templates)
        if split in (*GRAMMAR_SPLITS, NEW_FRAMES):
            out = self._split_templates(alphabet)[split] if self.grammar else ()
            if not out:
                raise TaskError(f"task {self.name}: no grammar, so no {split} wordings")
            return out
        raise ValueError(f"split must be one of {', '.join(ALL_SPLITS)}, got {split!r}")

    @cached_property
    def _by_alphabet(self) -> dict[Alphabet, tuple[tuple[Wording, ...], dict]]:
        """{alphabet: (grammar wordings, split templates)}, filled as alphabets are asked
        for (a frozen dataclass holding a grammar's dicts is not hashable: no lru_cache)."""
        return {}

    def _wordings_in(self, alphabet: Alphabet) -> tuple[tuple[Wording, ...], dict]:
        got = self._by_alphabet.get(alphabet)
        if got is None:
            orders = ("ab", "ba", "") if self.commutative else ("ab", "")
            every = self.grammar.wordings(alphabet, pinned=self.train_templates,
                                          kept_out=self.heldout_templates)
            words = tuple(w for w in every if w.order in orders)
            out: dict[str, list[str]] = {s: [] for s in WORDING_SPLITS}
            for w in words:
                out[w.split].append(w.text)
            out["grammar_train"] = list(dict.fromkeys(self.train_templates
                                                      + tuple(out["train"])))
            out[NEW_FRAMES] = [w.text for w in words if w.split == "new_words" and w.new_frame]
            got = words, {k: tuple(v) for k, v in out.items()}
            self._by_alphabet[alphabet] = got
        return got

    def _split_templates(self, alphabet: Alphabet) -> dict[str, tuple[str, ...]]:
        return self._wordings_in(alphabet)[1]

    def grammar_wordings(self, alphabet: Alphabet = DEFAULT_ALPHABET) -> tuple[Wording, ...]:
        """The grammar's wordings that ``alphabet`` writes (capitalised ones only with
        capitals), with their splits, that the task's program reads right: operands in the
        order the program reads them (either order for a commutative task); () without a
        grammar. The hand-written training templates the grammar generates are in its train
        split, the held-out ones never are (nor their capitalised forms); a wording is in
        the same split in every alphabet that writes it (``learn/wordings.py``)."""
        return () if self.grammar is None else self._wordings_in(alphabet)[0]

    def check_length(self, length: int) -> None:
        if length < 1 or (self.max_length is not None and length > self.max_length):
            allowed = "at least 1" if self.max_length is None else f"in 1..{self.max_length}"
            raise TaskError(f"task {self.name}: length must be {allowed} ({self.unit}), "
                            f"got {length}")

    def sample(self, rng: random.Random, length: int, split: str = "train",
               alphabet: Alphabet = DEFAULT_ALPHABET, *, ops: int | None = None,
               parens: bool | None = None) -> Example:
        """One example whose operands have exactly ``length`` (in ``self.unit``), in a
        wording of ``split``, written in ``alphabet``; a composed task's with ``ops``
        operations and (expr) parentheses or none when asked (:meth:`draw_operands`)."""
        self.check_length(length)
        templates = self.templates(split, alphabet)
        operands = self.draw_operands(rng, length, alphabet, ops=ops, parens=parens)
        return self.make(operands, rng.choice(templates), alphabet)

    def draw_operands(self, rng: random.Random, length: int,
                      alphabet: Alphabet = DEFAULT_ALPHABET, *, ops: int | None = None,
                      parens: bool | None = None) -> tuple[str, ...]:
        """Operands of exactly ``length`` by the task's draw (:data:`Draw`), with its edge
        rate; a draw that takes ``alphabet`` draws in it. ``ops`` and ``parens``
        (:data:`DRAW_OPTIONS`) reach the draw only when given: TaskError for a task whose
        draw does not take one (:attr:`draw_options`)."""
        options: dict[str, object] = {"alphabet": alphabet} if _takes(self.draw, "alphabet") \
            else {}
        for key, value in (("ops", ops), ("parens", parens)):
            if value is None:
                continue
            if not _takes(self.draw, key):
                raise TaskError(f"task {self.name}: its draw takes no {key}= (its sizes: "
                                f"{', '.join(('length', *self.draw_options))})")
            options[key] = value
        return self.draw(rng, length, self.edge_rate, **options)

    def make(self, operands: tuple[str, ...], template: str | None = None,
             alphabet: Alphabet = DEFAULT_ALPHABET) -> Example:
        """The example for given operands (as written) in a given wording, written in
        ``alphabet`` (which the prompt must fit: the expert program reads it in it)."""
        operands = tuple(operands)
        self._check_operands(operands)
        template = self.train_templates[0] if template is None else template
        prompt = render(template, self.operands, operands)
        return Example(self.name, prompt, self.solve(operands), self.program, operands,
                       _length(self.operands, operands), template, alphabet)

    def expert_program(self, example: Example) -> Program:
        """The expert program of one of this task's examples, in the example's alphabet:
        ``program_for``'s (the function written in, for fmap), else
        ``<directory>/<program>.lasm``."""
        if self.program_for is not None:
            return self.program_for(example)
        return golden.load_program(example.program, self.directory, example.alphabet)

    def parse(self, text: str) -> tuple[str, ...]:
        """The operands the expert program reads from free text, by golden's rules: the first
        ``arity`` numbers (as written), every digit, the payload after the first ':', or the
        arithmetic expression (:func:`expression_in`).

        Raises ValueError for a text without them or outside the alphabet, TaskError for a
        digit function (fmap's program holds it in its own slots, not in the text) and for
        a chain (its operations are words of the wording, which the text alone does not
        name: the main program is compiled from the example's operands)."""
        kind = self.operands
        if kind is Operands.NUMBERS:
            return tuple(golden.numbers(text, self.arity))
        if kind is Operands.DIGITS:
            return tuple(golden.digits(text))
        if kind is Operands.TEXT:
            return (golden.payload(text),)
        if kind is Operands.EXPRESSION:
            PRINTABLE_ALPHABET.encode(text)  # InputError (a ValueError) beyond it
            return (expression_in(text),)
        raise TaskError(f"task {self.name}: {kind.name} operands are not read from the text "
                        "alone")

    def reference(self, text: str) -> str:
        """Python's answer for the expert program on free text: ``solve`` of :meth:`parse`
        (nothing, for a task that declines: decline.lasm reads no operands)."""
        if self.declines:
            return ""
        return self.solve(self.parse(text))


# ---------------------------------------------------------------------------- draw helpers
#
# The library the task files draw with is llamacpu.learn.draws (re-exported above); these
# two need the types of this module.


def room(extra: int) -> OutSize:
    """Output slots for a room of la + lb digit slots, then ``extra`` slots (add, sub, cmp;
    la, lb: digits of A and B as written)."""
    return lambda ops: len(ops[0]) + len(ops[1]) + extra


def function_key(ex: Example) -> str:
    """fmap's held-out key: the function itself, whatever its order, wording or payload."""
    return "function " + "".join(map(str, function_table(ex.operands[0])))


# ---------------------------------------------------------------------------- task files

TASKS_ENV = "LLAMACPU_TASKS"
"""The environment variable naming directories of task files (``os.pathsep``-separated)
that ``TASKS`` holds beside the built-in ones."""


def load_tasks(directory: str | Path) -> dict[str, Task]:
    """The tasks of a directory: every ``<name>.py`` in it (but ``_*.py``) defines ``TASK``,
    a :class:`Task` named ``<name>`` whose expert program is ``<program>.lasm`` in the same
    directory (or a built-in one of ``golden.PROGRAMS_DIR``). Sorted by name.

    Raises TaskError for a file that breaks these rules (and whatever its own code raises).
    """
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise TaskError(f"no task directory {directory}")
    return {path.stem: _task_file(path) for path in sorted(directory.glob("*.py"))
            if not path.name.startswith("_")}


def _task_file(path: Path) -> Task:
    """Execute one task file (as a module of its own) and return its TASK, checked."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    spec = importlib.util.spec_from_file_location(f"llamacpu_task_{path.stem}_{digest}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses and pickle look a module up here
    spec.loader.exec_module(module)
    task = getattr(module, "TASK", None)
    if not isinstance(task, Task):
        raise TaskError(f"{path}: a task file defines TASK = Task(...)")
    if task.name != path.stem:
        raise TaskError(f"{path}: TASK is named {task.name!r}; a task file is named for its "
                        f"task ({task.name}.py)")
    here = path.parent
    if task.directory is not None and (Path(task.directory) / f"{task.program}.lasm").is_file():
        return task  # the task names its program's directory (expr, chain: the library's)
    if here != golden.PROGRAMS_DIR and (here / f"{task.program}.lasm").is_file():
        return dataclasses.replace(task, directory=here)
    if not (golden.PROGRAMS_DIR / f"{task.program}.lasm").is_file():
        raise TaskError(f"{path}: no expert program {task.program}.lasm beside it or in "
                        f"{golden.PROGRAMS_DIR}")
    return task


def _all_tasks() -> dict[str, Task]:
    """The built-in tasks, then those of each directory in ``$LLAMACPU_TASKS``."""
    tasks = load_tasks(golden.PROGRAMS_DIR)
    for name in os.environ.get(TASKS_ENV, "").split(os.pathsep):
        if not name:
            continue
        for task in load_tasks(name).values():
            if task.name in tasks:
                raise TaskError(f"task {task.name!r} of {name} ({TASKS_ENV}) is already "
                                "defined: a task name is used once")
            tasks[task.name] = task
    return tasks


def reference(program: str, text: str) -> str:
    """Python's answer for expert program ``program`` on free text: the answer of the task
    whose expert the file is as it stands (:meth:`Task.reference`), else
    ``golden.reference`` (apply, and fmap/fmap_data with the identity their files hold).

    Raises ValueError for a text outside the program's contract, KeyError for an unknown
    program.
    """
    for task in TASKS.values():
        if task.program == program and task.program_for is None:
            return task.reference(text)
    return golden.reference(program, text)


def expert_program(example: Example) -> Program:
    """The expert program of an example, assembled in the example's alphabet: its task's
    ``program_for`` (the function written in, for fmap), else ``<example.program>.lasm``
    (:meth:`Task.expert_program`)."""
    return TASKS[example.task].expert_program(example)


@functools.cache
def _takes(draw: Callable, keyword: str) -> bool:
    """Whether a task's draw takes ``keyword`` (``alphabet``, or one of
    :data:`DRAW_OPTIONS`; :data:`Draw`)."""
    try:
        return keyword in inspect.signature(draw).parameters
    except (TypeError, ValueError):  # a callable without a signature: the three arguments
        return False


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
    """The same operands in another wording (the answer does not depend on it), in the
    example's alphabet."""
    return TASKS[example.task].make(example.operands, template, example.alphabet)


TASKS: Mapping[str, Task] = _all_tasks()
"""Every task by name: ``programs/*.py``, then the task files of ``$LLAMACPU_TASKS``. Last
in this module: the task files import the library above while it loads."""
