"""Hypothesis strategies for llamacpu: random valid programs, their inputs, and fuzz text.

Every layer that takes a program reuses these (differential tests machine == interpreter,
assembler round trips, graph checks):

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

__all__ = ["programs", "inputs", "mutated", "lasm_texts", "Cost", "BUDGET", "INPUT_CHARS"]

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
        out.append("; a random program from llamacpu.evaluate.fuzz.programs")
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
