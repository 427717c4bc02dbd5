"""The golden table: hand-picked (program, input, expected) cases, and how programs read text.

Every layer is checked against this one table: the reference interpreter now, the
differentiable machine and the trained model later. A case names an expert program by its
file stem in ``programs/`` (``"add"`` is ``programs/add.lasm``); each program's header
comment defines its input and output formats. Python's own answer for any input follows
the same contract, so new inputs need no hand-written expectations: for a task's program
(add, sort, ...) it is the task's answer (``Task.solve`` in ``programs/<task>.py``) of the
operands read from the text by the rules below (:func:`numbers`, :func:`digits`,
:func:`payload`), which is ``llamacpu.learn.tasks.reference``; for the programs whose
contract no task states (apply, and fmap and fmap_data with the identity function their
files hold) it is :func:`reference` here.

Inputs are free text: in the learned machine the user's prompt itself ("calculate 12 + 35",
"what is 12 plus 35?", "12+35=") is the program's input, so every program finds its
operands the way a parser would, and the compact forms ("12+35") are just one wording:

- *Numbers* are maximal runs of decimal digits; every other symbol is ignored. add, sub,
  mul, cmp and gcd take the first two numbers of the text, fib the first; sub computes
  first − second (a negative result is printed with '-'), cmp answers ``<``, ``=`` or
  ``>`` for first against second.
- *Digit lists* (sort, max) are every digit of the text, in order, ignoring the rest:
  ``"sort 3 1 2"`` and ``"312"`` are the same list.
- *Definitions* (apply): every ``x>y`` before the first ``';'`` defines f(x) = y, and f is
  applied to every digit after it: ``"f: 0>3 1>7 ; apply f to 101"`` → ``"737"``.
- *Mapped payloads* (fmap, fmap_data): the text up to the first ``';'`` is skipped and the
  program's own function (a WEIGHTS slot, or ten DATA slots; the identity in the files,
  written per example by the curriculum's experts and by the controller) is applied to every
  digit after it: ``"f: 0>3 ; apply f to 40"`` → ``"40"``.
- *Payloads* (copy, reverse) are the text after its first ``':'`` without the spaces right
  after it, or the whole text if it has no ``':'``: ``"reverse: abc"`` → ``"cba"``.

A text without the numbers or digits a program needs is outside the contract (the program
faults, or answers nothing where its header says so), and the readers and references raise
ValueError for it.

    >>> numbers("what is 012 plus 35?", 2), digits("sort 3, 1 and 2"), payload("reverse: hi")
    (['012', '35'], '312', 'hi')
    >>> reference("apply", "f: 0>3 1>7 ; apply f to 101")
    '737'
    >>> [c.input for c in GOLDEN if c.program == "cmp"][:2]
    ['7?7', '12?13']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llamacpu.core.asm import assemble
from llamacpu.core.isa import PRINTABLE_ALPHABET, Alphabet, Program

__all__ = [
    "GoldenCase", "GOLDEN", "PROGRAMS_DIR", "PROGRAM_NAMES", "load_program", "reference",
    "numbers", "digits", "payload",
]


def _programs_dir() -> Path:
    package = Path(__file__).resolve().parent.parent    # llamacpu/
    installed = package / "programs"       # a wheel install ships them as package data
    return installed if installed.is_dir() else package.parent / "programs"   # a source checkout


PROGRAMS_DIR = _programs_dir()
"""The expert programs: ``llamacpu/programs/`` in a wheel, the repository's ``programs/``
in a source checkout (editable install)."""

PROGRAM_NAMES: tuple[str, ...] = tuple(sorted(p.stem for p in PROGRAMS_DIR.glob("*.lasm")))
"""The expert programs: the stems of every ``.lasm`` file in :data:`PROGRAMS_DIR`, sorted."""


@dataclass(frozen=True)
class GoldenCase:
    """One checked run: ``program`` on ``input`` must answer ``expected``."""

    name: str       # unique, "<program>/<what it exercises>"
    program: str    # file stem in programs/
    input: str
    expected: str


def _cases(program: str, *rows: tuple[str, str, str]) -> tuple[GoldenCase, ...]:
    return tuple(GoldenCase(f"{program}/{what}", program, inp, out) for what, inp, out in rows)


GOLDEN: tuple[GoldenCase, ...] = (
    *_cases("copy",
            ("empty", "", ""),
            ("one", "x", "x"),
            ("text", "hello, world", "hello, world"),
            ("punctuation", "(1+2)*3=9!", "(1+2)*3=9!"),
            ("worded", "copy: hello world", "hello world"),
            ("first_colon_only", "echo:  a: b", "a: b"),
            ("spaces_kept_without_colon", "  two  spaces", "  two  spaces"),
            ("empty_payload", "copy:", "")),
    *_cases("reverse",
            ("empty", "", ""),
            ("one", "x", "x"),
            ("text", "abc,12", "21,cba"),
            ("palindrome", "racecar", "racecar"),
            ("worded", "reverse: hello", "olleh"),
            ("first_colon_only", "reverse this:  a:b c", "c b:a"),
            ("empty_payload", "reverse: ", "")),
    *_cases("max",
            ("one", "0", "0"),
            ("first", "91", "9"),
            ("last", "19", "9"),
            ("repeated", "31415", "5"),
            ("all_zero", "000", "0"),
            ("worded", "max of 4, 9, 2", "9"),
            ("digits_of_numbers", "what is the largest digit in 3141 and 27?", "7")),
    *_cases("sort",
            ("empty", "", ""),
            ("one", "7", "7"),
            ("sorted", "0123", "0123"),
            ("reversed", "9876543210", "0123456789"),
            ("duplicates", "31415926", "11234569"),
            ("worded", "sort 3 1 2", "123"),
            ("separated", "sort these: 5, 0, 9, 5", "0559"),
            ("no_digits", "sort nothing", "")),
    *_cases("cmp",
            ("equal_one_digit", "7?7", "="),
            ("less_same_length", "12?13", "<"),
            ("greater_last_digit", "99?98", ">"),
            ("less_shorter", "5?12", "<"),
            ("greater_longer", "100?99", ">"),
            ("leading_zeros_equal", "007?7", "="),
            ("leading_zeros_greater", "0123?99", ">"),
            ("zeros", "0?000", "="),
            ("worded_less", "compare 12 and 35", "<"),
            ("worded_greater", "is 100 bigger than 99?", ">"),
            ("worded_equal", "which is larger, 007 or 7?", "=")),
    *_cases("add",
            ("one_digit", "2+3", "5"),
            ("zero", "0+0", "0"),
            ("carry_out", "5+5", "10"),
            ("carry_chain", "999+1", "1000"),
            ("carry_chain_b_longer", "1+999", "1000"),
            ("long", "987654321+123456789", "1111111110"),
            ("leading_zeros", "007+05", "12"),
            ("zero_with_leading_zeros", "00+000", "0"),
            ("worded_question", "what is 12 plus 35?", "47"),
            ("worded_command", "calculate 999 + 1", "1000"),
            ("trailing_equals", "12+35=", "47"),
            ("third_number_ignored", "add 1 and 2 then 3", "3")),
    *_cases("sub",
            ("one_digit", "5-3", "2"),
            ("equal", "5-5", "0"),
            ("borrow_chain", "1000-1", "999"),
            ("to_one", "100-99", "1"),
            ("long", "1111111110-123456789", "987654321"),
            ("leading_zeros", "007-7", "0"),
            ("negative", "3-5", "-2"),
            ("negative_longer_b", "1-100", "-99"),
            ("negative_padded_a", "00-5", "-5"),
            ("worded", "what is 100 minus 1?", "99"),
            ("worded_negative", "what is 2 minus 7?", "-5")),
    *_cases("mul",
            ("one_digit", "3*4", "12"),
            ("zero", "0*0", "0"),
            ("zero_times_long", "0*12345", "0"),
            ("nines", "99*99", "9801"),
            ("carry_chain", "999*999", "998001"),
            ("long", "123456789*987654321", "121932631112635269"),
            ("leading_zeros", "007*03", "21"),
            ("worded", "what is 12 times 34?", "408"),
            ("worded_x", "multiply 99 by 99", "9801")),
    *_cases("fib",
            ("zero", "0", "0"),
            ("one", "1", "1"),
            ("two", "2", "1"),
            ("ten", "10", "55"),
            ("padded_by_successor", "6", "8"),
            ("first_two_digits", "7", "13"),
            ("leading_zeros", "007", "13"),
            ("hundred", "100", "354224848179261915075"),
            ("worded", "what is fib of 10?", "55"),
            ("later_numbers_ignored", "fib 12, not 3", "144")),
    *_cases("gcd",
            ("ones", "1,1", "1"),
            ("equal", "6,6", "6"),
            ("coprime", "7,13", "1"),
            ("classic", "84,36", "12"),
            ("divides", "3,12", "3"),
            ("leading_zeros", "012,018", "6"),
            ("one_slow", "99,1", "1"),
            ("fibonacci_pair", "987,610", "1"),
            ("worded", "gcd of 84 and 36", "12"),
            ("worded_question", "what is the greatest common divisor of 12 and 18?", "6")),
    *_cases("reverse_string",
            ("benchmark", "011010", "010110"),
            ("one", "1", "1"),
            ("worded", "reverse the bits: 0011", "1100"),
            ("spaces_after_colon", "reverse the bits:   01", "10"),
            ("empty_payload", "reverse the bits: ", "")),
    *_cases("duplicate_string",
            ("benchmark", "101", "101101"),
            ("ones", "111111", "111111111111"),
            ("worded", "duplicate the bits: 10", "1010"),
            ("empty_payload", "duplicate:", "")),
    *_cases("odds_first",
            ("benchmark", "00110101", "01110100"),
            ("odd_length", "110", "110"),
            ("one", "odds first: 1", "1"),
            ("worded", "odds first: 0101", "1100")),
    *_cases("bucket_sort",
            ("benchmark", "10204112", "00111224"),
            ("binary", "1110001", "0001111"),
            ("worded", "bucket sort: 43210", "01234"),
            ("one", "sorted: 3", "3")),
    *_cases("binary_addition",
            ("benchmark", "101+011", "1101"),
            ("carry_out", "11+1", "001"),
            ("ones", "1+1", "01"),
            ("worded", "add in binary: 1+1", "01")),
    *_cases("binary_multiplication",
            ("benchmark", "11*11", "1001"),
            ("shift", "01*1", "01"),
            ("zero", "1*0", "0"),
            ("worded", "binary product: 11*1", "11")),
    *_cases("compute_sqrt",
            ("nine", "1001", "11"),
            ("six", "110", "10"),
            ("one", "1", "1"),
            ("worded", "sqrt: 11111111", "1111")),
    *_cases("decline",
            ("division", "divide 12 by 4", ""),
            ("translation", "translate to french: cat", ""),
            ("empty", "", ""),
            ("a_known_task_worded", "what is 12 plus 35?", "")),
    *_cases("apply",
            ("issue_example", "f: 0>3 1>7 2>2 3>9 4>0 5>1 6>8 7>5 8>6 9>4 ; apply f to 40917",
             "03475"),
            ("compact", "1>2;1x1", "22"),
            ("later_wins", "0>1 0>2 ; 00", "22"),
            ("undefined_ends", "1>5 ; 121", "5"),
            ("no_payload", "1>2", ""),
            ("to_symbols", "1>a 2>? ; 2 1", "?a")),
    *_cases("fmap",
            ("issue_example", "f: 0>3 1>7 2>2 3>9 4>0 5>1 6>8 7>5 8>6 9>4 ; apply f to 40917",
             "40917"),
            ("compact", ";123", "123"),
            ("first_semicolon_only", "a;b;1;2", "12"),
            ("no_payload", "1>2", ""),
            ("symbols_skipped", "x ; 9 a 0!", "90")),
    *_cases("fmap_data",
            ("issue_example", "g: 0>3 1>7 2>2 3>9 4>0 5>1 6>8 7>5 8>6 9>4 ; look up g for 40917",
             "40917"),
            ("compact", ";9876543210", "9876543210"),
            ("first_semicolon_only", "a;b;1;2", "12"),
            ("no_payload", "1>2", ""),
            ("symbols_skipped", "x ; 9 a 0!", "90")),
)


def load_program(name: str, directory: str | Path | None = None,
                 alphabet: Alphabet | None = None) -> Program:
    """Assemble ``<directory>/<name>.lasm``, by default from :data:`PROGRAMS_DIR`, in
    ``alphabet`` (default: the default alphabet; a file's own ``.alphabet`` line wins).
    Cached: programs are immutable."""
    return _load(name, PROGRAMS_DIR if directory is None else Path(directory).resolve(),
                 alphabet)


@functools.cache
def _load(name: str, directory: Path, alphabet: Alphabet | None) -> Program:
    path = directory / f"{name}.lasm"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.lasm")))
        raise FileNotFoundError(f"no expert program {name!r} at {path} (known: {known})")
    return assemble(path.read_text(encoding="utf-8"), file=str(path), alphabet=alphabet)


def reference(name: str, input_text: str) -> str:
    """Python's answer for program ``name`` on ``input_text``, by that program's contract,
    for the programs whose contract no task states (apply, fmap, fmap_data); a task's
    program answers what its task does (``llamacpu.learn.tasks.reference``).

    Raises ValueError for an input outside the documented format or contract, KeyError for
    any other program.
    """
    try:
        fn = _REFERENCES[name]
    except KeyError:
        raise KeyError(f"no reference in golden for program {name!r} (known: "
                       f"{', '.join(_REFERENCES)}; a task's program answers what its task "
                       "does: llamacpu.learn.tasks.reference)") from None
    return fn(input_text)


_NUMBER = re.compile(r"[0-9]+")
"""A number of the text: a maximal run of decimal digits (ASCII only, as in the alphabet)."""


def _text(text: str) -> str:
    """``text``, if every character is printable ASCII (the largest alphabet the expert
    programs assemble in, ``PRINTABLE_ALPHABET``); InputError (a ValueError) otherwise."""
    PRINTABLE_ALPHABET.encode(text)
    return text


def numbers(text: str, count: int) -> list[str]:
    """The first ``count`` numbers of ``text`` as written ("007"); ValueError if it has
    fewer."""
    found = _NUMBER.findall(_text(text))
    if len(found) < count:
        raise ValueError(f"expected at least {count} number(s) (runs of digits) in the text, "
                         f"found {len(found)} in {text!r}")
    return found[:count]


def digits(text: str) -> str:
    """Every digit of ``text``, in order: the list sort and max work on."""
    return "".join(ch for ch in _text(text) if "0" <= ch <= "9")


def payload(text: str) -> str:
    """The text after the first ':' without the spaces right after it, else all of it."""
    _, colon, rest = _text(text).partition(":")
    return rest.lstrip(" ") if colon else text


def _apply(text: str) -> str:
    """f (defined by the x>y before the first ';') of every digit after it."""
    defs, semi, rest = _text(text).partition(";")
    if not semi:
        return ""
    f: dict[str, str] = {}
    for i, ch in enumerate(defs):
        if ch == ">":
            if i == 0:
                raise ValueError(f"apply: a '>' with no key before it in {text!r}")
            f[defs[i - 1]] = (defs + ";")[i + 1]
    out = []
    for d in rest:
        if "0" <= d <= "9":
            if d not in f:
                return "".join(out)  # f(d) = END ends the answer
            out.append(f[d])
    return "".join(out)


def _fmap(text: str) -> str:
    """The identity function (the files' own f) of every digit after the first ';'."""
    _, semi, rest = _text(text).partition(";")
    return "".join(ch for ch in rest if "0" <= ch <= "9") if semi else ""


_REFERENCES: Mapping[str, Callable[[str], str]] = {
    "apply": _apply,
    "fmap": _fmap,
    "fmap_data": _fmap,
}
"""The programs whose contract no task states: apply has no task, and fmap and fmap_data
answer with the identity their files hold (their tasks write each example's function in)."""
