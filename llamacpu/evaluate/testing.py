"""Hypothesis strategies for llamacpu, and property checks of learned machines.

Every layer that takes a program reuses these (differential tests machine == interpreter,
assembler round trips, graph checks), and ``python -m llamacpu.check`` is built on them:

- Task inputs, two kinds: the expert programs' free-text formats (:func:`numerals`,
  :func:`operand_pairs`, :func:`comparisons`, :func:`digit_lists`, :func:`texts`,
  :func:`worded`, ...) and operands in the contract of ``llamacpu.learn.tasks`` at a chosen
  length (:func:`task_operands`, :func:`task_examples`), biased toward carry and borrow
  chains, equal operands, leading zeros, sorted/reversed/constant lists, palindromes.
- :func:`check_learned` — runs a machine free on :func:`task_examples`, compares with
  Python and the reference interpreter, and returns a :class:`CheckReport` with the
  shrunk counterexample and the first :class:`Divergence` of its trace from the expert's;
  :func:`learned_check` is the same as a pytest decorator. :class:`ExpertMachine` and
  :func:`corrupt_oeu` make a machine with one known bug, for testing the checker.

- :func:`programs` — ``.lasm`` text of a random valid program that halts without fault on
  every input from :func:`inputs`. It exercises every opcode (APPLY and WSET on WEIGHTS
  slots ``wt`` in the digit alphabets), every operand mode, the I/O ports and most of the source syntax; shrinking drops instructions.
- :func:`inputs` — short digit strings, possibly with ``+``.
- :func:`mutated` / :func:`lasm_texts` — text that is mostly *not* valid ``.lasm``, for
  fuzzing whatever parses it.

How ``programs`` guarantees termination and no fault, so a failing differential test is
always a bug in the code under test, never in the program:

- *Termination.* Main code is straight-line with forward jumps only and ends in HALT.
  Subroutines are placed after it; subroutine ``i`` may only call subroutines ``j > i``
  (no recursion), jumps only forward inside itself and ends in RET; main calls ``s0`` and
  each subroutine the next, so every one runs. Every instruction therefore runs a bounded
  number of times, and the strategy counts that bound (:class:`Cost`) while it draws,
  replacing an instruction that would exceed :data:`BUDGET` with NOP.
- *Values.* Slots are typed by what they may hold. ``dv`` slots and the data array hold
  digits only, so arithmetic on them never faults; ``av`` slots hold any symbol (input
  symbols, characters, END) and only feed MOV, compares and jumps. Input read through
  ``[IN]`` or ``[ip]`` is never used in arithmetic. The carry only ever holds a digit.
  WEIGHTS slots map every digit to a digit (other symbols to END), WSET only writes digit
  entries and MOV copies them only among themselves, so APPLY of a digit is a digit.
  DIV and MOD divide by an immediate ``#b``, b ≠ 0; DIV is preceded by ``SETC #k`` with
  k < b, which keeps its quotient a digit.
- *Pointers.* Data pointers ``dp`` start inside the array core ``mid`` and are only ever
  set to core addresses or copied from one another; the array has a margin on both sides
  as wide as the number of INC/DEC the run can execute. The input pointer ``ip`` is set to
  ``[IN]`` and moves forward only, at most ``BUDGET.in_incs`` times (< 256, the smallest
  output region, so it stays in memory); the output pointer ``o`` likewise from ``[OUT]``,
  at most ``BUDGET.out_incs`` times. Nothing writes to code, to the ports or through
  ``ip``.

Example::

    @given(programs(), inputs())
    def test_machine_matches_interpreter(text, input_text):
        program = assemble(text)
        expected = interp.run(program, input_text, max_steps=BUDGET.steps)
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from hypothesis import strategies as st

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet

__all__ = [
    "programs", "inputs", "mutated", "lasm_texts", "Cost", "BUDGET", "INPUT_CHARS",
    "numerals", "operand_pairs", "ordered_pairs", "comparisons", "digit_lists", "texts",
    "fib_inputs", "gcd_inputs", "worded", "worded_digit_lists", "worded_payloads", "filler",
    "numeral", "number_pair", "digit_list", "payload", "digit_function", "function_payload",
    "task_operands", "task_examples",
    "draw_examples", "check_learned", "learned_check", "CheckReport", "Bucket",
    "Counterexample", "Divergence", "first_divergence", "ExpertMachine", "corrupt_oeu",
]

INPUT_CHARS = "0123456789+"
"""What :func:`inputs` draws from: in every alphabet :func:`programs` declares."""


@dataclass(frozen=True)
class Cost:
    """Worst-case counts for one run of a piece of code (every instruction executes)."""

    steps: int = 0     # instructions executed
    moves: int = 0     # INC/DEC of data pointers
    in_incs: int = 0   # INC of the input pointer
    out_incs: int = 0  # INC of the output pointer

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.steps + other.steps, self.moves + other.moves,
                    self.in_incs + other.in_incs, self.out_incs + other.out_incs)

    def within(self, limit: Cost) -> bool:
        return (self.steps <= limit.steps and self.moves <= limit.moves
                and self.in_incs <= limit.in_incs and self.out_incs <= limit.out_incs)


BUDGET = Cost(steps=3000, moves=24, in_incs=64, out_incs=200)
"""Bounds on a whole run of a :func:`programs` program; ``max_steps=BUDGET.steps`` is enough.

``out_incs`` and ``in_incs`` stay below 256, the smallest output region the loader gives.
"""


@dataclass(frozen=True)
class _Alpha:
    """An alphabet a generated program may declare, and the characters its ``#'c'`` use."""

    directive: str | None  # the .alphabet line, or None for the default alphabet
    alphabet: Alphabet
    chars: str             # non-digit characters worth writing as 'c' immediates


ALPHABETS: tuple[_Alpha, ...] = (
    _Alpha(None, DEFAULT_ALPHABET, "+-;: a"),
    _Alpha(".alphabet base 16", Alphabet.numeric(16), "+*;z"),
    _Alpha('.alphabet base 10 charset "+-\'\\"\\\\;#\t x"',
           Alphabet(10, "+-'\"\\;#\t x"), "+-'\"\\;#\t x"),
    _Alpha(".alphabet bytes", Alphabet.byte_alphabet(), "+a'\\\x7f\xe9;"),
)
"""Alphabets :func:`programs` draws from (default first, so it shrinks there); every one
holds :data:`INPUT_CHARS`."""


def inputs(max_size: int = 12) -> st.SearchStrategy[str]:
    """Short task inputs: digit strings, possibly with ``+`` (e.g. ``"12+345"``)."""
    return st.text(alphabet=INPUT_CHARS, max_size=max_size)


def _more(draw: Callable) -> bool:
    """Whether a list grows by one more element: 11 in 12, and shrinking says no."""
    return draw(st.sampled_from((False,) + (True,) * 11))


def _char_lit(ch: str, hex_form: bool) -> str:
    """``'c'`` with the escapes of docs/lasm.md; ``hex_form`` writes ``\\xHH`` instead."""
    if hex_form and ord(ch) < 256:
        return f"'\\x{ord(ch):02x}'"
    esc = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t"}
    return "'" + esc.get(ch, ch) + "'"


class _Ins(NamedTuple):
    """One drawn instruction. A jump's text has ``{T}`` where its target goes: the block
    ``ahead`` blocks further on (or the routine's last), through a code pointer if
    ``indirect``."""

    text: str
    ahead: int = 0
    indirect: bool = False


_KINDS = ("mov", "mov", "arith", "arith", "cmp", "cmp", "out", "out", "jump", "jump",
          "incdec", "incdec", "lea", "carry", "div", "mod", "peq", "slot", "nop")
"""Instruction families a block is drawn from (repeats weigh; the first is where shrinking
goes). "call" joins them when a subroutine is callable; "halt" is a rare "nop" in main."""

_ONE = Cost(steps=1)


class _Gen:
    """Draws the pieces of one program: operands by what they may hold, then blocks."""

    def __init__(self, draw: Callable, alpha: _Alpha) -> None:
        self.draw, self.alpha = draw, alpha
        self.base = alpha.alphabet.base
        self.n_dv = draw(st.integers(1, 4))   # digit-valued slots dv, dv+1, ...
        self.n_av = draw(st.integers(1, 3))   # any-valued slots av, av+1, ...
        self.n_dp = draw(st.integers(1, 3))   # data pointers dp, dp+1, ...
        self.width = draw(st.integers(1, 4))  # array core mid .. mid+width-1
        self.code_ptrs: list[str] = []        # `.ptr label` lines for indirect jumps
        raw = alpha.alphabet.raw_bytes
        self.n_w = 0 if raw else draw(st.integers(1, 2))  # WEIGHTS slots wt, wt+1

    # -- operands

    def at(self, label: str, n: int) -> str:
        """One of ``label``, ``label+1``, ... ``label+(n-1)``."""
        i = self.draw(st.integers(0, n - 1))
        return label if i == 0 else f"{label}+{i}"

    def digit(self) -> int:
        return self.draw(st.integers(0, self.base - 1))

    def dp(self) -> str:
        return self.at("dp", self.n_dp)

    def digit_dst(self) -> str:
        """A slot that only ever holds digits: ``dv+i`` or an array element ``[dp+i]``."""
        return self.at("dv", self.n_dv) if self.draw(st.booleans()) else f"[{self.dp()}]"

    def any_dst(self) -> str:
        """A slot that may hold any symbol: ``av+i`` or the next output slot ``[o]``."""
        return self.at("av", self.n_av) if self.draw(st.booleans()) else "[o]"

    def src(self, digit: bool, imm_ok: bool) -> tuple[str, bool]:
        """A source operand and whether it is an immediate; ``digit``: always a digit."""
        kinds = ["digit", "imm"] if digit else ["digit", "imm", "av", "in", "ip", "char", "end"]
        if not imm_ok:
            kinds = [k for k in kinds if k not in ("imm", "char", "end")]
        k = self.draw(st.sampled_from(kinds))
        if k == "digit":
            return self.digit_dst(), False
        if k == "imm":
            return f"#{self.digit()}", True
        if k == "av":
            return self.at("av", self.n_av), False
        if k in ("in", "ip"):  # input symbols: any symbol, END past the input
            return ("[IN]" if k == "in" else "[ip]"), False
        if k == "char":
            ch = self.draw(st.sampled_from(self.alpha.chars))
            return "#" + _char_lit(ch, self.draw(st.booleans())), True
        return "#END", True

    def srcs(self, n: int, digit: bool) -> list[str]:
        """``n`` source operands with at most one immediate among them."""
        out, imm_ok = [], True
        for _ in range(n):
            text, imm = self.src(digit, imm_ok)
            imm_ok = imm_ok and not imm
            out.append(text)
        return out

    # -- instructions

    def block(self, subs: list[Cost], first_sub: int, main: bool) -> tuple[list[_Ins], Cost]:
        """One block (jumps land on block starts, so a block runs whole) and its cost.

        ``subs[j]`` is the cost of subroutine ``first_sub + j``, callable from here.
        """
        d = self.draw
        k = d(st.sampled_from(_KINDS + (("call",) * 3 if subs else ())
                              + (("weights",) * 2 if self.n_w else ())))
        if main and k == "nop" and d(st.booleans()):
            k = "halt"  # rare: code after an early HALT never runs
        if k == "mov":
            digit = d(st.booleans())
            dst = self.digit_dst() if digit else self.any_dst()
            return [_Ins(f"mov {dst}, {self.srcs(1, digit)[0]}")], _ONE
        if k == "slot":  # whole-slot copies of a pointer slot (p0 and val)
            dst = self.dp() if d(st.booleans()) else self.at("av", self.n_av)
            return [_Ins(f"mov {dst}, {self.dp()}")], _ONE
        if k == "arith":
            op = d(st.sampled_from(["add", "sub", "mul"]))
            a, b = self.srcs(2, digit=True)
            return [_Ins(f"{op} {self.digit_dst()}, {a}, {b}")], _ONE
        if k in ("div", "mod"):  # divisor: a nonzero immediate; DIV: carry < divisor first
            b = d(st.integers(1, self.base - 1))
            ins = [_Ins(f"{k} {self.digit_dst()}, {self.digit_dst()}, #{b}")]
            if k == "div":
                ins.insert(0, _Ins(f"setc #{d(st.integers(0, b - 1))}"))
            return ins, Cost(steps=len(ins))
        if k == "cmp":
            op = d(st.sampled_from(["eq", "lt", "min", "max"]))
            digit = d(st.booleans())
            a, b = self.srcs(2, digit)
            dst = self.digit_dst() if op in ("eq", "lt") or digit else self.any_dst()
            return [_Ins(f"{op} {dst}, {a}, {b}")], _ONE
        if k == "carry":
            if d(st.booleans()):
                return [_Ins(f"setc {self.srcs(1, digit=True)[0]}")], _ONE
            return [_Ins(f"getc {self.digit_dst()}")], _ONE
        if k == "peq":
            p, q = (d(st.sampled_from(["dp", "ip", "o", "IN", "OUT", "[dp]"])) for _ in "pq")
            p, q = (x.replace("dp", self.dp()) for x in (p, q))
            return [_Ins(f"peq {self.digit_dst()}, {p}, {q}")], _ONE
        if k == "lea":
            which = d(st.sampled_from(["core", "copy", "out", "in"]))
            text = {"out": "lea o, [OUT]", "in": "lea ip, [IN]"}.get(which, "")
            if which == "core":
                text = f"lea {self.dp()}, {self.at('mid', self.width)}"
            elif which == "copy":
                text = f"lea {self.dp()}, [{self.dp()}]"
            return [_Ins(text)], _ONE
        if k == "incdec":
            which = d(st.sampled_from(["inc", "dec", "ip", "o"]))
            if which in ("inc", "dec"):
                return [_Ins(f"{which} {self.dp()}")], Cost(steps=1, moves=1)
            if which == "ip":
                return [_Ins("inc ip")], Cost(steps=1, in_incs=1)
            return [_Ins("inc o")], Cost(steps=1, out_incs=1)
        if k == "out":  # append one symbol to the answer
            src = self.srcs(1, digit=False)[0]
            return [_Ins(f"mov [o], {src}"), _Ins("inc o")], Cost(steps=2, out_incs=1)
        if k == "jump":
            op = d(st.sampled_from(["jmp", "jz", "jnz", "jeq", "jne"]))
            n_src = {"jmp": 0, "jz": 1, "jnz": 1, "jeq": 2, "jne": 2}[op]
            args = self.srcs(n_src, digit=d(st.booleans())) + ["{T}"]
            return [_Ins(f"{op} {', '.join(args)}", d(st.integers(1, 4)),
                         d(st.integers(0, 4)) == 0)], _ONE
        if k == "weights":  # APPLY, WSET, or a whole-slot copy of a WEIGHTS slot
            w = self.at("wt", self.n_w) if d(st.booleans()) else "[wp]"
            which = d(st.sampled_from(["apply", "apply", "wset", "wcopy"]))
            if which == "apply":
                digit = d(st.booleans())
                dst = self.digit_dst() if digit else self.any_dst()
                return [_Ins(f"apply {dst}, {w}, {self.srcs(1, digit)[0]}")], _ONE
            if which == "wset":
                a, b = self.srcs(2, digit=True)
                return [_Ins(f"wset {w}, {a}, {b}")], _ONE
            return [_Ins(f"mov {self.at('wt', self.n_w)}, {self.at('wt', self.n_w)}")], _ONE
        if k == "call":
            j = d(st.integers(0, len(subs) - 1))
            return [_Ins(f"call s{first_sub + j}")], _ONE + subs[j]
        return [_Ins(k)], _ONE  # nop, halt

    def routine(self, name: str, subs: list[Cost], first_sub: int, main: bool,
                max_instructions: int) -> tuple[list[str], Cost, int]:
        """Lines of main (prologue, blocks, HALT) or a subroutine (blocks, RET), its cost
        and the number of instructions drawn (at most ``max_instructions``)."""
        prologue = ["lea ip, [IN]", "lea o, [OUT]"] if main else []
        cost = Cost(steps=len(prologue) + 1)  # the prologue and the final HALT/RET
        blocks: list[list[_Ins]] = []
        n_ins = 0
        while n_ins < max_instructions and _more(self.draw):
            ins, c = self.block(subs, first_sub, main)
            if n_ins + len(ins) > max_instructions:  # a two-instruction block that won't fit
                break
            if not (cost + c).within(BUDGET):
                ins, c = [_Ins("nop")], _ONE
                if not (cost + c).within(BUDGET):
                    break
            blocks.append(ins)
            cost, n_ins = cost + c, n_ins + len(ins)
        if subs and (cost + _ONE + subs[0]).within(BUDGET):
            # main calls s0 and each subroutine the next one, so every one runs
            blocks.append([_Ins(f"call s{first_sub}")])
            cost = cost + _ONE + subs[0]
        blocks.append([_Ins("halt" if main else "ret")])

        last = len(blocks) - 1
        targets: set[int] = set()
        lines: list[list[str]] = []
        for i, block in enumerate(blocks):
            lines.append([])
            for ins in block:
                text = ins.text
                if ins.ahead:
                    t = min(i + ins.ahead, last)
                    targets.add(t)
                    target = f"{name}_{t}"
                    if ins.indirect:
                        cp = f"cp{len(self.code_ptrs)}"
                        self.code_ptrs.append(f"{cp}: .ptr {target}")
                        target = f"[{cp}]"
                    text = text.replace("{T}", target)
                lines[-1].append(text)
        if main:  # without `start` the entry is the first instruction: the same one
            out = ["start:"] if self.draw(st.booleans()) else []
            out += [" " * 8 + self._case(text) for text in prologue]
        else:
            out = [f"{name}:"]
        for i, block_lines in enumerate(lines):
            for k, text in enumerate(block_lines):
                label = f"{name}_{i}:" if k == 0 and i in targets else ""
                out.append(f"{label:<8}{self._case(text)}")
        return out, cost, n_ins

    def _case(self, text: str) -> str:
        """Mnemonics are case-insensitive: sometimes write one in upper case."""
        if self.draw(st.integers(0, 5)) == 0:
            head, _, rest = text.partition(" ")
            return head.upper() + (" " + rest if rest else "")
        return text


def _digits_item(draw: Callable, alpha: _Alpha, values: list[int]) -> str:
    """Items of a ``.data`` line: comma-separated digits, or a "..." string of digit chars."""
    if alpha.alphabet.base == 10 and draw(st.booleans()):
        return '"' + "".join(str(v) for v in values) + '"'
    return ", ".join(str(v) for v in values)


@st.composite
def programs(draw: Callable, max_instructions: int = 24) -> str:
    """``.lasm`` text of a random valid program that halts without fault on any input.

    Valid on every input from :func:`inputs` (digits and ``+``): no fault, HALT within
    ``BUDGET.steps`` instructions. At most ``max_instructions`` drawn instructions, spread
    over main and up to three subroutines (each of those gets at most a sixth), plus the
    fixed frame: a two-instruction prologue, HALT, a RET per subroutine and the CALL that
    links each routine to the next subroutine. See the module docstring for how the
    guarantees are kept.
    """
    alpha = draw(st.sampled_from(ALPHABETS))
    g = _Gen(draw, alpha)
    n_subs = draw(st.integers(0, 3))
    sub_costs: list[Cost] = []
    sub_lines: list[list[str]] = []
    left = max_instructions
    for r in reversed(range(n_subs)):  # later subroutines first: earlier ones may call them
        lines, cost, used = g.routine(f"s{r}", sub_costs, r + 1, False,
                                      min(left, max(1, max_instructions // 6)))
        sub_costs.insert(0, cost)
        sub_lines.insert(0, lines)
        left -= used
    main_lines, main_cost, _ = g.routine("m", sub_costs, 0, True, left)
    margin = max(main_cost.moves, 1)  # no data pointer gets further than this from the core

    out: list[str] = []
    if alpha.directive is not None:
        out.append(alpha.directive)
    elif draw(st.booleans()):
        out.append("; a random program from llamacpu.evaluate.testing.programs")
    out += main_lines
    for lines in sub_lines:
        out += lines

    any_vals = []
    for _ in range(g.n_av):
        kind = draw(st.sampled_from(["digit", "char", "end"]))
        if kind == "digit":
            any_vals.append(str(g.digit()))
        elif kind == "char":
            any_vals.append(_char_lit(draw(st.sampled_from(alpha.chars)), draw(st.booleans())))
        else:
            any_vals.append("END")
    out += ["ip:     .ptr IN", "o:      .ptr OUT"]
    out += [f"{'dp:' if i == 0 else '':<8}.ptr {g.at('mid', g.width)}" for i in range(g.n_dp)]
    out += g.code_ptrs
    if g.n_w:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:g.base]
        out.append("wp:     .ptr wt")
        for i in range(g.n_w):
            vals = "".join(digits[g.digit()] for _ in digits)
            out.append(f'{"wt:" if i == 0 else "":<8}.weights "{digits}" -> "{vals}"')
    out.append(f"dv:     .data {_digits_item(draw, alpha, [g.digit() for _ in range(g.n_dv)])}")
    out.append(f"av:     .data {', '.join(any_vals)}")
    fill = draw(st.sampled_from(["", ", 0", f", {g.base - 1}"]))
    out.append(f"lo:     .space {margin}{fill}")
    out.append(f"mid:    .data {_digits_item(draw, alpha, [g.digit() for _ in range(g.width)])}")
    out.append(f"hi:     .space {margin}{fill}")
    if draw(st.booleans()):  # syntax the code does not read: a string and EMPTY slots
        chars = draw(st.lists(st.sampled_from(alpha.chars), max_size=4))
        lit = "".join(_char_lit(c, False)[1:-1].replace("\\'", "'").replace('"', '\\"')
                      for c in chars)
        out.append(f'msg:    .string "{lit}"  ; never read')
        out.append(f"        .empty {draw(st.integers(1, 3))}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ program inputs
#
# Inputs for the expert programs' free-text formats: compact ("12+35", "312") and worded
# ("what is 12 plus 35?"). Biased toward the cases digit arithmetic gets wrong first.

DIGITS = "0123456789"
TEXT_CHARS = DEFAULT_ALPHABET.decode(tuple(range(DEFAULT_ALPHABET.end)))
"""Every character of the default alphabet: digits, punctuation, lowercase letters."""


@st.composite
def zero_padded(draw, max_digits: int) -> str:
    """A numeral with leading zeros, at most ``max_digits`` long."""
    body = draw(st.text(DIGITS, min_size=1, max_size=max_digits))
    return "0" * draw(st.integers(0, max_digits - len(body))) + body


def numerals(max_digits: int) -> st.SearchStrategy[str]:
    """Decimal numerals of 1..max_digits digits, biased toward the hard cases of digit
    arithmetic: 99…9 (a carry through every digit), 10…0 (a borrow through every digit)
    and leading zeros."""
    lengths = st.integers(1, max_digits)
    return st.one_of(
        st.text(DIGITS, min_size=1, max_size=max_digits),
        lengths.map(lambda n: "9" * n),
        lengths.map(lambda n: "1" + "0" * (n - 1)),
        zero_padded(max_digits),
    )


@st.composite
def close_to(draw, a: str) -> str:
    """A numeral equal to ``a`` up to zero padding, or ``a`` with one digit replaced:
    the pairs a comparison has to scan to the end to decide."""
    if draw(st.booleans()):
        return "0" * draw(st.integers(0, 3)) + a
    i = draw(st.integers(0, len(a) - 1))
    return a[:i] + draw(st.sampled_from(DIGITS)) + a[i + 1:]


def numeral_pairs(max_digits: int) -> st.SearchStrategy[tuple[str, str]]:
    """(A, B): two independent numerals."""
    return st.tuples(numerals(max_digits), numerals(max_digits))


def operand_pairs(sep: str, max_digits: int) -> st.SearchStrategy[str]:
    """``"A<sep>B"`` for two independent numerals."""
    return numeral_pairs(max_digits).map(sep.join)


def ordered_pairs(sep: str, max_digits: int) -> st.SearchStrategy[str]:
    """``"A<sep>B"`` with A ≥ B by value."""
    def order(ab: tuple[str, str]) -> str:
        a, b = sorted(ab, key=int, reverse=True)
        return f"{a}{sep}{b}"
    return numeral_pairs(max_digits).map(order)


def comparison_pairs(max_digits: int) -> st.SearchStrategy[tuple[str, str]]:
    """(A, B): independent numerals, or a numeral and one close to it."""
    close = numerals(max_digits).flatmap(lambda a: st.tuples(st.just(a), close_to(a)))
    return st.one_of(numeral_pairs(max_digits), close)


def comparisons(max_digits: int) -> st.SearchStrategy[str]:
    """``"A?B"`` for the pairs of :func:`comparison_pairs`."""
    return comparison_pairs(max_digits).map("?".join)


def digit_lists(max_items: int, min_items: int = 0) -> st.SearchStrategy[str]:
    """A digit list as the sort and max programs take it: one digit per item."""
    return st.text(DIGITS, min_size=min_items, max_size=max_items)


def texts(max_len: int) -> st.SearchStrategy[str]:
    """Any text over the default alphabet."""
    return st.text(TEXT_CHARS, max_size=max_len)


def fib_inputs(max_n: int) -> st.SearchStrategy[str]:
    """n in decimal, sometimes with leading zeros."""
    n = st.integers(0, max_n)
    return st.one_of(n.map(str), st.tuples(st.integers(1, 2), n).map(lambda t: "0" * t[0] + str(t[1])))


def gcd_inputs(max_value: int) -> st.SearchStrategy[str]:
    """``"A,B"`` with 1 ≤ A, B ≤ max_value."""
    v = st.integers(1, max_value)
    return st.tuples(v, v).map(lambda ab: f"{ab[0]},{ab[1]}")


# Worded prompts: the operands inside digit-free filler, as a user would type them.

WORDS = ("what", "is", "the", "of", "and", "plus", "minus", "times", "by", "than", "from",
         "calculate", "compute", "compare", "please", "sort", "max", "fib", "gcd", "reverse",
         "copy", "number", "answer", "x")
"""Filler words: lowercase, without digits."""
PUNCTUATION = "+-*/%=<>,;:.()?!_"
"""The default alphabet's punctuation, space aside."""


@st.composite
def filler(draw, min_size: int = 0, colons: bool = True) -> str:
    """Digit-free text of up to 6 words or punctuation marks, each followed by a space, a
    comma or nothing; at least ``min_size`` characters (a separator between two numbers
    needs one). ``colons=False`` leaves out ':' (for the text before a payload)."""
    marks = PUNCTUATION if colons else PUNCTUATION.replace(":", "")
    token = st.one_of(st.sampled_from(WORDS), st.sampled_from(marks))
    parts: list[str] = []
    while len(parts) < 12 and draw(st.booleans()):
        parts += [draw(token), draw(st.sampled_from((" ", " ", "", ", ")))]
    text = "".join(parts)
    if len(text) < min_size:
        text += draw(st.sampled_from((" ", "+", ", ", " and ", "?"))) * min_size
    return text


@st.composite
def worded(draw, operands: st.SearchStrategy[tuple[str, ...]], more: bool = True) -> str:
    """A prompt holding the operands in order: filler before, between (never empty, so
    each operand stays one maximal run of digits) and after them; with ``more``, sometimes
    another number after them, which the program must ignore."""
    ops = draw(operands)
    text = draw(filler())
    for i, op in enumerate(ops):
        text += (draw(filler(min_size=1)) if i else "") + op
    if more and draw(st.booleans()):
        text += draw(filler(min_size=1)) + draw(numerals(5))
    return text + draw(filler())


@st.composite
def worded_digit_lists(draw, max_runs: int, min_runs: int = 0) -> str:
    """Digit runs of 1..3 digits in filler (which may be empty: runs then merge, and that is
    fine, as every digit is an item)."""
    runs = draw(st.lists(st.text(DIGITS, min_size=1, max_size=3),
                         min_size=min_runs, max_size=max_runs))
    return "".join(draw(filler()) + r for r in runs) + draw(filler())


@st.composite
def worded_payloads(draw, max_len: int) -> str:
    """``"<words>:<spaces><payload>"``: a colon-free instruction, the first ':', 0..3 spaces,
    and any text (it may hold more ':' and start with spaces of its own)."""
    spaces = " " * draw(st.integers(0, 3))
    return draw(filler(colons=False)) + ":" + spaces + draw(texts(max_len))




# ------------------------------------------------------------------ task operands
#
# Operands in the contract of ``llamacpu.learn.tasks`` (what ``Task.make`` takes), with a length
# in the task's unit drawn from lo..hi (lo = hi: exactly that length, for per-length
# tables). Lengths come from the size of drawn text or lists, so shrinking deletes digits,
# items or characters. Each strategy is mostly the plain uniform draw (every digit pair
# meets in some column, so a single wrong ALU entry gets hit) plus the edge cases: carry
# and borrow chains (999…9 + 1, 100…0 − 1), equal operands, leading zeros, B = 0 or 1,
# near misses for compare; sorted, reversed, constant lists; repeated characters and
# palindromes. ``edge=False`` gives the plain draws only. The first choice of every
# ``sampled_from`` is the plain one, so shrinking lands on plain inputs.


def _digits(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(DIGITS, min_size=lo, max_size=hi)


@st.composite
def numeral(draw: Callable, lo: int, hi: int | None = None, edge: bool = True) -> str:
    """A numeral of lo..hi digits as written (leading zeros allowed, and they count):
    uniform two times in three, else 9…9, 10…0 or a shorter number zero-padded."""
    hi = lo if hi is None else hi
    kinds = ("plain",) * 6 + (("nines", "power", "padded") if edge else ())
    kind = draw(st.sampled_from(kinds))
    if kind == "plain":
        return draw(_digits(lo, hi))
    n = draw(st.integers(lo, hi))
    if kind == "nines":
        return "9" * n
    if kind == "power":
        return "1" + "0" * (n - 1)
    return draw(_digits(1, n)).rjust(n, "0")


@st.composite
def number_pair(draw: Callable, lo: int, hi: int | None = None,
                edge: bool = True) -> tuple[str, str]:
    """(A, B), the longer one lo..hi digits as written: independent (half the time as long
    as each other), equal, B = 1 or 0, B one digit off A, or B = 9…9; either order."""
    a = draw(numeral(lo, hi, edge))
    kinds = ("any",) * 8 + (("equal", "one", "zero", "near", "nines") if edge else ())
    kind = draw(st.sampled_from(kinds))
    if kind == "any":
        same = draw(st.booleans())
        b = draw(numeral(len(a), len(a), edge) if same else _digits(1, len(a)))
    elif kind == "equal":
        b = a
    elif kind == "one":
        b = "1"
    elif kind == "zero":
        b = "0"
    elif kind == "near":
        i = draw(st.integers(0, len(a) - 1))
        b = a[:i] + draw(st.sampled_from(DIGITS)) + a[i + 1:]
    else:
        b = "9" * draw(st.integers(1, len(a)))
    return (b, a) if draw(st.booleans()) else (a, b)


def _by_value(pair: tuple[str, str]) -> tuple[str, str]:
    a, b = pair
    return (a, b) if int(a) >= int(b) else (b, a)


@st.composite
def digit_list(draw: Callable, lo: int, hi: int | None = None,
               edge: bool = True) -> tuple[str, ...]:
    """lo..hi single digits: random (with duplicates), sorted, reversed or constant."""
    hi = lo if hi is None else hi
    items = draw(st.lists(st.sampled_from(DIGITS), min_size=lo, max_size=hi))
    kinds = ("as drawn",) * 3 + (("sorted", "reversed", "constant") if edge else ())
    order = draw(st.sampled_from(kinds))
    if order == "sorted":
        items = sorted(items)
    elif order == "reversed":
        items = sorted(items, reverse=True)
    elif order == "constant":
        items = [items[0]] * len(items)
    return tuple(items)


PAYLOAD_CHARS = "".join(c for c in TEXT_CHARS if c != ":")
"""What copy and reverse payloads are drawn from: the default alphabet minus ':'."""


@st.composite
def payload(draw: Callable, lo: int, hi: int | None = None, edge: bool = True) -> tuple[str]:
    """A copy/reverse payload of lo..hi characters, not starting with a space (the programs
    skip spaces after ':'): any characters, one repeated, or a palindrome."""
    hi = lo if hi is None else hi
    first = draw(st.sampled_from(PAYLOAD_CHARS.replace(" ", "")))
    rest = draw(st.text(PAYLOAD_CHARS, min_size=lo - 1, max_size=hi - 1))
    text = first + rest
    kinds = ("any",) * 3 + (("repeated", "palindrome") if edge else ())
    kind = draw(st.sampled_from(kinds))
    if kind == "repeated":
        return (first * len(text),)
    if kind == "palindrome":
        half = text[: (len(text) + 1) // 2]
        return (half + half[: len(text) // 2][::-1],)
    return (text,)


@st.composite
def digit_function(draw: Callable, edge: bool = True) -> tuple[int, ...]:
    """A digit function f(0..9): any map, or the identity, a constant, a permutation."""
    kinds = ("any",) * 3 + (("identity", "constant", "permutation") if edge else ())
    kind = draw(st.sampled_from(kinds))
    if kind == "identity":
        return tuple(range(10))
    if kind == "constant":
        return (draw(st.integers(0, 9)),) * 10
    if kind == "permutation":
        return tuple(draw(st.permutations(range(10))))
    return tuple(draw(st.lists(st.integers(0, 9), min_size=10, max_size=10)))


@st.composite
def function_payload(draw: Callable, lo: int, hi: int | None = None,
                     edge: bool = True) -> tuple[str, str]:
    """fmap's operands: a :func:`digit_function`'s ten definitions ``x>y`` in a drawn order
    (shrinking goes to 0..9 in order), and a payload of lo..hi digits."""
    hi = lo if hi is None else hi
    f = draw(digit_function(edge))
    order = draw(st.permutations(range(10)))
    return " ".join(f"{x}>{f[x]}" for x in order), draw(_digits(max(1, lo), hi))


def task_operands(task: str, min_length: int = 1, max_length: int | None = None,
                  edge: bool = True) -> st.SearchStrategy[tuple[str, ...]]:
    """Operands of ``task`` (``Task.make``'s argument) of a length in
    ``min_length..max_length`` (default ``min_length``); shrinking shortens them."""
    from llamacpu.learn.tasks import TASKS  # tasks imports golden, which tests import cheaply

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    lo, hi = min_length, min_length if max_length is None else max_length
    TASKS[task].check_length(lo)
    TASKS[task].check_length(hi)
    if hi < lo:
        raise ValueError(f"max_length {hi} < min_length {lo}")
    if task in ("add", "mul", "cmp"):
        return number_pair(lo, hi, edge)
    if task == "sub":  # the contract: A >= B
        return number_pair(lo, hi, edge).map(_by_value)
    if task in ("sort", "max"):
        return digit_list(lo, hi, edge)
    if task in ("copy", "reverse"):
        return payload(lo, hi, edge)
    if task == "fib":
        return numeral(lo, hi, edge).map(lambda x: (x,))
    if task == "gcd":  # positive operands
        return number_pair(lo, hi, edge).filter(lambda ab: int(ab[0]) > 0 and int(ab[1]) > 0)
    if task in ("fmap", "fmap_data"):
        return function_payload(lo, hi, edge)
    raise ValueError(f"no operand strategy for task {task!r}")


def task_examples(task: str, min_length: int = 1, max_length: int | None = None,
                  split: str = "train", edge: bool = True) -> st.SearchStrategy:
    """``tasks.Example``s: :func:`task_operands` in one of the task's wordings of ``split``
    ("train" or "heldout"); shrinking goes to the first wording."""
    from llamacpu.learn.tasks import TASKS

    operands = task_operands(task, min_length, max_length, edge)
    return st.builds(TASKS[task].make, operands, st.sampled_from(TASKS[task].templates(split)))


# ------------------------------------------------------------------------------ fuzzing

_JUNK = ("#", "[", "]", ",", ":", "'", '"', "\\", ";", "\n", "+", "-", ".", ".data",
         ".ptr", ".alphabet base 10", "END", "IN", "OUT", "start:", "x", "999999999999999999999",
         "\t", "\r", "é", "\x00", "#'\\x4", "\u2028", "mov", "[IN]", "jmp", " ")


@st.composite
def mutated(draw: Callable, texts: st.SearchStrategy[str], max_edits: int = 4) -> str:
    """Texts drawn from ``texts`` after 1..``max_edits`` random edits.

    Edits: delete, duplicate or move a span of characters, insert a junk token (quotes,
    brackets, escapes, huge numbers, control and non-ASCII characters, keywords), or delete
    a whitespace-separated token. For fuzzing parsers with almost-valid input.
    """
    text = draw(texts)
    for _ in range(draw(st.integers(1, max_edits))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 12)))
        edit = draw(st.sampled_from(["delete", "insert", "duplicate", "token", "move"]))
        if edit == "delete":
            text = text[:i] + text[j:]
        elif edit == "insert":
            text = text[:i] + draw(st.sampled_from(_JUNK)) + text[i:]
        elif edit == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif edit == "move":
            k = draw(st.integers(0, n - (j - i)))
            rest = text[:i] + text[j:]
            text = rest[:k] + text[i:j] + rest[k:]
        else:
            words = text.split(" ")
            if len(words) > 1:
                del words[draw(st.integers(0, len(words) - 1))]
            text = " ".join(words)
    return text


def lasm_texts(extra: list[str] | tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Fuzz input for anything that reads ``.lasm``: valid programs, mutated programs and
    arbitrary unicode text. ``extra`` adds seed texts (e.g. the files in programs/)."""
    seeds = programs(max_instructions=8)
    if extra:
        seeds = st.one_of(seeds, st.sampled_from(list(extra)))
    return st.one_of(seeds, mutated(seeds), st.text())


# ------------------------------------------------------------------------------ checking
#
# check_learned: hypothesis against a machine that runs free. Two phases, so the machine
# runs in batches and shrinking still works:
#
# 1. generate: hypothesis draws the examples (seeded, no database); the machine runs them
#    all, many prompts per machine run, grouped by length. This gives the pass rates.
# 2. shrink (only if something failed): the same seeded search again, now failing on the
#    failures; every example phase 1 saw is answered from its cache, and only the smaller
#    candidates hypothesis tries while shrinking run the machine, one prompt at a time.
#    Hypothesis reports the smallest failing example; both traces of it, the machine's
#    and the reference interpreter's, give the first step where they part.


class ExpertMachine:
    """The expert programs on the differentiable :class:`~llamacpu.machine.machine.Machine`.

    A stand-in for a learned machine whose controller emits the expert program exactly;
    with an exact OEU it is always right, with :func:`corrupt_oeu` it is a deliberately
    broken machine for testing the checker. Same interface as ``LearnedMachine`` as far as
    :func:`check_learned` is concerned (``emit`` and ``machine``).
    """

    def __init__(self, oeu=None) -> None:
        from llamacpu.machine.machine import MachineConfig, SymbolicOEU

        self.config = MachineConfig()
        self.oeu = oeu if oeu is not None else SymbolicOEU(self.config.alphabet)
        self._machine = None

    def emit(self, examples: list) -> list:
        from llamacpu.learn.tasks import expert_program

        return [expert_program(e) for e in examples]

    def machine(self, prompts: list[str]):
        from llamacpu.machine.machine import Machine

        if self._machine is None:  # the symbolic sequencer needs no prompts: one machine
            self._machine = Machine(self.config, oeu=self.oeu)
        return self._machine


def corrupt_oeu(op: str = "ADD", a: int = 7, b: int = 8, carry: int = 0, result: int | None = None,
                alphabet: Alphabet = DEFAULT_ALPHABET):
    """An exact ``SymbolicOEU`` with ONE entry wrong: ``op`` on digits (a, b) with carry in
    ``carry`` gives ``result`` (default: the right one + 1, mod base) in both the hard
    lookup table and the soft arithmetic table; the carry out stays right."""
    import torch

    from llamacpu.core.isa import Op
    from llamacpu.machine.machine import _ARITH_CARRY, SymbolicOEU, exact_op

    oeu = SymbolicOEU(alphabet)
    code = Op[op]
    C, V = alphabet.base, alphabet.size
    t = torch.tensor
    right, _ = exact_op(t(int(code)), t(a), t(b), t(carry), t(False), alphabet)
    wrong = (int(right) + 1) % C if result is None else result
    oeu.lookup_result[((int(code) * V + a) * V + b) * C + carry] = wrong
    if code in _ARITH_CARRY:
        row = oeu.table_arith_result[list(_ARITH_CARRY).index(code), (a * C + b) * C + carry]
        row.zero_()
        row[wrong] = 1.0
    return oeu


@dataclass(frozen=True)
class Divergence:
    """The first step where the machine's trace departs from the expert's."""

    step: int
    field: str        # the first field that differs: pc, op, operands, carry_in, result, ...
    expected: object  # interp.TraceStep of the expert (None: the expert had halted)
    got: object       # TraceStep of the machine (None: the machine had stopped)

    def describe(self) -> str:
        def one(t) -> str:
            if t is None:
                return "(no step: the run had ended)"
            return (f"pc {t.pc} {t.op.name} operands {tuple(t.values)} carry {t.carry_in} → "
                    f"result {t.result} carry {t.carry_out}, writes slot {t.write_addr}, "
                    f"next pc {t.next_pc}")
        return (f"step {self.step}: {self.field} differs\n  expected {one(self.expected)}\n"
                f"  got      {one(self.got)}")


_TRACE_FIELDS = ("pc", "op", "values", "carry_in", "result", "carry_out", "write_addr",
                 "next_pc")


def first_divergence(expected: tuple, got: tuple) -> Divergence | None:
    """Compare two traces step by step; None if they agree on every step."""
    for i in range(max(len(expected), len(got))):
        e = expected[i] if i < len(expected) else None
        g = got[i] if i < len(got) else None
        if e is None or g is None:
            return Divergence(i, "length", e, g)
        for f in _TRACE_FIELDS:
            if getattr(e, f) != getattr(g, f):
                return Divergence(i, "operands" if f == "values" else f, e, g)
    return None


@dataclass(frozen=True)
class Counterexample:
    """A failing example, shrunk by hypothesis, with why it failed."""

    example: object           # tasks.Example
    got: str                  # the machine's answer ("" on a fault)
    fault: str | None         # the machine's fault or "did not halt", if any
    reference: str            # the reference interpreter's answer (the expert program)
    divergence: Divergence | None
    program_differs_at: int | None  # first slot where the emitted program is not the expert's

    def describe(self) -> str:
        e = self.example
        lines = [f"counterexample ({e.task}, length {e.length}): {e.prompt!r}",
                 f"  operands {e.operands}; expected {e.answer!r} (Python; reference "
                 f"interpreter {self.reference!r}), got {self.got!r}"
                 + (f" [{self.fault}]" if self.fault else "")]
        if self.program_differs_at is not None:
            lines.append(f"  the emitted program differs from the expert's at slot "
                         f"{self.program_differs_at}")
        if self.divergence is not None:
            lines.append("  first divergence from the expert trace, " + self.divergence.describe())
        return "\n".join(lines)


@dataclass(frozen=True)
class Bucket:
    """Pass counts at one length."""

    length: int
    n: int
    passed: int

    @property
    def rate(self) -> float:
        return self.passed / self.n if self.n else float("nan")


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_learned` found."""

    task: str
    buckets: tuple[Bucket, ...]
    counterexample: Counterexample | None
    seconds: float

    @property
    def n(self) -> int:
        return sum(b.n for b in self.buckets)

    @property
    def passed(self) -> int:
        return sum(b.passed for b in self.buckets)

    @property
    def ok(self) -> bool:
        return self.passed == self.n

    def table(self) -> str:
        from llamacpu.learn.tasks import TASKS

        unit = TASKS[self.task].unit
        rows = [f"| {self.task}: {unit} | examples | exact match |", "|---:|---:|---:|"]
        rows += [f"| {b.length} | {b.n} | {100 * b.rate:.1f}% |" for b in self.buckets]
        return "\n".join(rows)

    def describe(self) -> str:
        head = (f"{self.task}: {self.passed}/{self.n} examples pass "
                f"({self.seconds:.1f} s)\n" + self.table())
        if self.counterexample is not None:
            head += "\n" + self.counterexample.describe()
        return head

    def assert_ok(self) -> None:
        """Raise AssertionError with the counterexample if anything failed."""
        if not self.ok:
            raise AssertionError(self.describe())


class _Failed(Exception):
    """Raised inside the hypothesis test for a failing example."""


def _emit(machine, examples: list) -> list:
    """The programs the machine runs: the controller's greedy plan, or the expert's."""
    if hasattr(machine, "controller"):
        import torch

        with torch.no_grad():
            was = machine.training
            machine.eval()
            try:
                return machine.controller.emit([e.prompt for e in examples])
            finally:
                machine.train(was)
    return machine.emit(examples)


def _run_machine(machine, examples: list, max_steps: int, trace: bool = False) -> list:
    """Run the examples free on the machine, one batch; MachineResults in order."""
    import torch

    from llamacpu.learn.tasks import default_out_size

    prompts = [e.prompt for e in examples]
    programs = _emit(machine, examples)
    with torch.no_grad():
        return machine.machine(prompts).run_batch(
            programs, prompts, max_steps=max_steps, on_limit="stop", trace=trace,
            out_size=max(default_out_size(e) for e in examples)), programs


def _expert(example, trace: bool = False):
    """The reference interpreter running the expert program (answer, steps, trace)."""
    from llamacpu.core.interp import run
    from llamacpu.learn.tasks import default_out_size, expert_program

    return run(expert_program(example), example.prompt, 100_000_000, trace=trace,
               out_size=default_out_size(example))


def _verdict(example, result, reference: str) -> str | None:
    """None if the machine's answer is right, else why not."""
    if result.fault is not None:
        return result.fault
    if not result.halted:
        return "did not halt within the step budget"
    if reference != example.answer:
        return f"the reference interpreter answers {reference!r}, Python {example.answer!r}"
    if result.output != example.answer:
        return "wrong answer"
    return None


def _budget(steps: int) -> int:
    """Machine steps allowed for an example whose expert run took ``steps``."""
    return 2 * steps + 100


def draw_examples(task: str, length: int, count: int, seed: int = 0, split: str = "train",
                  plain: bool = False) -> list:
    """The examples :func:`check_learned` runs at one length of a ``lengths`` plan (with
    ``plain = length >= plain_from``): for scoring other models on the same inputs."""
    strategy = task_examples(task, length, length, split, edge=not plain)
    return _generate(strategy, count + plain, seed)[plain:]


def _generate(strategy, n: int, seed: int) -> list:
    """``n`` examples drawn by hypothesis (fewer if the strategy has fewer), seeded."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @hseed(seed)
    @given(strategy)
    def collect(example) -> None:
        out.append(example)

    collect()
    return out


def _diagnose(machine, example, why: str) -> Counterexample:
    """Both traces of one failing example, and where they part."""
    ref = _expert(example, trace=True)
    (res,), (program,) = _run_machine(machine, [example], _budget(ref.steps), trace=True)
    expert = _expert_program(example).slots
    differs = next((i for i in range(max(len(program.slots), len(expert)))
                    if program.slots[i:i + 1] != expert[i:i + 1]), None)
    return Counterexample(example, res.output, None if why == "wrong answer" else why,
                          ref.output, first_divergence(ref.trace or (), res.trace or ()),
                          differs)


def _expert_program(example):
    from llamacpu.learn.tasks import expert_program

    return expert_program(example)


def check_learned(machine, task: str, *, min_length: int = 1, max_length: int | None = None,
                  lengths: dict[int, int] | None = None, examples: int = 1000, seed: int = 0,
                  batch: int = 64, split: str = "train", shrink_seconds: float = 120.0,
                  plain_from: int = 10**9, log: Callable[[str], None] | None = None
                  ) -> CheckReport:
    """Run ``machine`` free on hypothesis-drawn examples of ``task`` and compare with the
    reference interpreter and Python's answer.

    ``machine``: a ``LearnedMachine`` (its controller compiles every prompt, the machine
    runs the emitted program with the neural OEU and the learned sequencer) or an
    :class:`ExpertMachine`. Examples come from :func:`task_examples`: ``examples`` of them
    over lengths ``min_length..max_length`` (default: ``min_length``), or, with
    ``lengths={length: count}``, ``count`` at each length; lengths from ``plain_from`` on
    (where only a few examples are affordable) draw plain operands only and skip
    hypothesis's first example, which is always the simplest (all zeros). On failure the
    report holds the
    smallest failing example hypothesis shrinks to (within ``shrink_seconds`` of machine
    time) and the first step where the machine's trace departs from the expert trace.
    """
    import time

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    start = time.time()
    if lengths is None:
        hi = min_length if max_length is None else max_length
        plan = [(task_examples(task, min_length, hi, split), examples, False)]
    else:
        plan = [(task_examples(task, L, L, split, edge=L < plain_from), k, L >= plain_from)
                for L, k in sorted(lengths.items())]

    verdicts: dict[str, str | None] = {}   # prompt -> None (pass) or why it failed
    seen: dict[str, object] = {}           # prompt -> Example, of phase 1
    counts: dict[int, list[int]] = {}
    first_failing = None  # (strategy, count) of the first plan entry with a failure
    for strategy, count, plain in plan:
        drawn = _generate(strategy, count + plain, seed)[plain:]
        todo = {e.prompt: e for e in drawn if e.prompt not in verdicts}
        refs = {p: _expert(e) for p, e in todo.items()}
        order = sorted(todo, key=lambda p: (refs[p].steps, p))
        for i in range(0, len(order), batch):
            chunk = [todo[p] for p in order[i:i + batch]]
            budget = _budget(max(refs[e.prompt].steps for e in chunk))
            results, _ = _run_machine(machine, chunk, budget)
            for e, r in zip(chunk, results):
                verdicts[e.prompt] = _verdict(e, r, refs[e.prompt].output)
        for e in drawn:
            seen[e.prompt] = e
            c = counts.setdefault(e.length, [0, 0])
            c[0] += 1
            c[1] += verdicts[e.prompt] is None
        if log:
            lens = sorted({e.length for e in drawn})
            log(f"{task} lengths {lens[0]}..{lens[-1]}: {len(drawn)} examples, "
                f"{sum(verdicts[e.prompt] is None for e in drawn)} pass "
                f"({time.time() - start:.1f} s)")
        if first_failing is None and any(verdicts[e.prompt] for e in drawn):
            first_failing = (strategy, count + plain)
    buckets = tuple(Bucket(L, n, p) for L, (n, p) in sorted(counts.items()))

    counter = None
    if first_failing is not None:
        deadline = time.time() + shrink_seconds

        def fails(example) -> None:
            if example.prompt not in verdicts:
                if time.time() > deadline:
                    return  # out of shrinking time: treat unseen candidates as passing
                ref = _expert(example)
                (r,), _ = _run_machine(machine, [example], _budget(ref.steps))
                verdicts[example.prompt] = _verdict(example, r, ref.output)
            if verdicts[example.prompt] is not None:
                raise _Failed(example)

        strategy, count = first_failing
        search = settings(max_examples=count, database=None, deadline=None,
                          phases=[Phase.generate, Phase.shrink],
                          suppress_health_check=list(HealthCheck),
                          report_multiple_bugs=False)(hseed(seed)(given(strategy)(fails)))
        try:
            search()
        except _Failed as e:
            smallest = e.args[0]
            counter = _diagnose(machine, smallest, verdicts[smallest.prompt])
        else:  # the seeded replay met no failure (the machine is not deterministic?)
            bad = min((e for e in seen.values() if verdicts[e.prompt] is not None),
                      key=lambda e: (e.length, len(e.prompt)))
            counter = _diagnose(machine, bad, verdicts[bad.prompt])
    return CheckReport(task, buckets, counter, time.time() - start)


def learned_check(task: str, **options) -> Callable:
    """Decorator for pytest tests: after the test body, :func:`check_learned` runs on the
    test's first argument (a machine, e.g. the ``learned_machine`` fixture) and the test
    fails with the shrunk counterexample and the divergence step if any example fails::

        @learned_check("add", max_length=4, examples=300)
        def test_my_adder(learned_machine):
            pass
    """
    import functools

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            fn(*args, **kwargs)
            machine = args[0] if args else next(iter(kwargs.values()))
            check_learned(machine, task, **options).assert_ok()
        return wrapper
    return deco
