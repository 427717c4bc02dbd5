"""The expert programs in programs/: golden cases, properties against Python, length genericity.

Every program runs on the reference interpreter and must agree with ``tasks.reference``
(Python's own answer) on the golden table and on hypothesis-generated inputs: the compact
formats ("12+35", "312") and worded prompts around the same operands ("what is 12 plus
35?", "sort 3, 1 and 2"), since the learned machine puts the user's prompt itself in the
input region. The input strategies come from ``llamacpu.evaluate.strategies``.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.asm import AssemblyError, assemble
from llamacpu.core.golden import GOLDEN, PROGRAM_NAMES, PROGRAMS_DIR, load_program
from llamacpu.core.graph import validate
from llamacpu.core.interp import MachineFault, run
from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, Alphabet, Kind, Slot
from llamacpu.evaluate.strategies import (
    DIGITS,
    TEXT_CHARS,
    WORDS,
    comparison_pairs,
    comparisons,
    digit_lists,
    fib_inputs,
    filler,
    gcd_inputs,
    numeral_pairs,
    numerals,
    operand_pairs,
    ordered_pairs,
    task_examples,
    texts,
    worded,
    worded_digit_lists,
    worded_payloads,
    zero_padded,
)
from llamacpu.learn.tasks import TASKS, reference

# ------------------------------------------------------------------ helpers

MAX_STEPS = 5_000_000  # gcd by subtraction of 4-digit numbers needs ~0.6M at worst


def run_program(name: str, text: str):
    return run(load_program(name), text, max_steps=MAX_STEPS)


def check(name: str, text: str) -> None:
    got = run_program(name, text).output
    want = reference(name, text)
    assert got == want, f"{name}({text!r}) = {got!r}, expected {want!r}"


PROPERTY = settings(max_examples=200, deadline=None, derandomize=True)

# ------------------------------------------------------------------ the table itself


def test_program_files_match_names():
    assert sorted(p.stem for p in PROGRAMS_DIR.glob("*.lasm")) == sorted(PROGRAM_NAMES)


@pytest.mark.parametrize("name", PROGRAM_NAMES)
def test_program_is_valid_and_documented(name):
    program = load_program(name)
    assert [d for d in validate(program) if d.severity == "error"] == []
    header = (PROGRAMS_DIR / f"{name}.lasm").read_text().splitlines()[:4]
    assert header[0].startswith(f"; {name}.lasm: ")
    assert any(line.startswith("; Input") for line in header)


def test_golden_table_is_well_formed():
    names = [c.name for c in GOLDEN]
    assert len(names) == len(set(names))
    for prog in PROGRAM_NAMES:
        assert sum(c.program == prog for c in GOLDEN) >= 4, prog
    assert {c.program for c in GOLDEN} == set(PROGRAM_NAMES)


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: c.name)
def test_golden_case(case):
    assert reference(case.program, case.input) == case.expected
    result = run_program(case.program, case.input)
    assert result.halted
    assert result.output == case.expected


@pytest.mark.parametrize("name, text", [
    ("add", "1+"), ("add", "12"), ("add", "what is 5 plus?"), ("cmp", "1?x"), ("max", ""),
    ("max", "max of none"), ("sort", "sört 3 1"), ("gcd", "0,5"), ("gcd", "gcd of 7"),
    ("fib", "fib of what?"), ("sub", "12 minus"), ("mul", ""), ("copy", "café"),
    ("reverse", "reverse: \t"),  # characters outside printable ASCII
])
def test_reference_rejects_inputs_outside_the_format(name, text):
    with pytest.raises(ValueError):
        reference(name, text)


@pytest.mark.parametrize("name, text, expected", [
    ("add", "12+35", "47"), ("add", "a12b35c", "47"), ("add", "1 2 3", "3"),
    ("sub", "what is 2 minus 7?", "-5"), ("cmp", "5, 5", "="), ("fib", "f(10)=?", "55"),
    ("max", "4 or 13", "4"), ("sort", "3, 10 and 2", "0123"), ("copy", "a:  b:  c", "b:  c"),
    ("copy", " : x", "x"), ("reverse", "  ab", "ba  "), ("reverse", "::", ":"),
])
def test_reference_parses_free_text_as_documented(name, text, expected):
    assert reference(name, text) == expected


def test_load_program_is_cached_and_names_unknown_programs():
    assert load_program("add") is load_program("add")
    with pytest.raises(FileNotFoundError, match="known: add"):
        load_program("nope")


# ------------------------------------------------------------------ properties


@PROPERTY
@given(operand_pairs("+", 200))
def test_add(text):
    check("add", text)


@PROPERTY
@given(ordered_pairs("-", 200))
def test_sub(text):
    check("sub", text)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(ordered_pairs("-", 30))
def test_sub_below_zero_prints_the_negative_result(text):
    a, b = text.split("-")
    if int(a) == int(b):
        return
    assert run_program("sub", f"{b}-{a}").output == f"-{int(a) - int(b)}"


@PROPERTY
@given(comparisons(200))
def test_cmp(text):
    check("cmp", text)


@PROPERTY
@given(operand_pairs("*", 30))
def test_mul(text):
    check("mul", text)


@PROPERTY
@given(texts(100))
def test_copy(text):
    check("copy", text)


@PROPERTY
@given(texts(100))
def test_reverse(text):
    check("reverse", text)


@PROPERTY
@given(digit_lists(50))
def test_sort(text):
    check("sort", text)


@PROPERTY
@given(digit_lists(50, min_items=1))
def test_max(text):
    check("max", text)


@PROPERTY
@given(fib_inputs(150))
def test_fib(text):
    check("fib", text)


@PROPERTY
@given(gcd_inputs(9999))
def test_gcd(text):
    check("gcd", text)


# ------------------------------------------------------------------ worded prompts


@PROPERTY
@given(worded(numeral_pairs(60)))
def test_add_worded(text):
    check("add", text)


@PROPERTY
@given(worded(numeral_pairs(60)))
def test_sub_worded(text):  # A < B included: the program prints the negative result
    check("sub", text)


@PROPERTY
@given(worded(comparison_pairs(60)))
def test_cmp_worded(text):
    check("cmp", text)


@PROPERTY
@given(worded(numeral_pairs(12)))
def test_mul_worded(text):
    check("mul", text)


@PROPERTY
@given(worded(st.tuples(fib_inputs(150))))
def test_fib_worded(text):
    check("fib", text)


@PROPERTY
@given(worded(st.tuples(zero_padded(4).filter(lambda n: int(n) > 0),
                        st.integers(1, 9999).map(str))))
def test_gcd_worded(text):
    check("gcd", text)


@PROPERTY
@given(worded_digit_lists(15))
def test_sort_worded(text):
    check("sort", text)


@PROPERTY
@given(worded_digit_lists(15, min_runs=1))
def test_max_worded(text):
    check("max", text)


@PROPERTY
@given(worded_payloads(60))
def test_copy_worded(text):
    check("copy", text)


@PROPERTY
@given(worded_payloads(60))
def test_reverse_worded(text):
    check("reverse", text)


TWO_NUMBERS = ("add", "sub", "mul", "cmp", "gcd")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(TWO_NUMBERS + ("fib",)), st.data())
def test_a_missing_number_faults_as_documented(name, data):
    """Fewer numbers than the program takes is outside the contract: the reference raises,
    and the program faults (its search runs off the end of memory) instead of answering."""
    count = data.draw(st.integers(0, 1 if name in TWO_NUMBERS else 0))
    text = data.draw(worded(st.tuples(*[numerals(5)] * count), more=False))
    with pytest.raises(ValueError):
        reference(name, text)
    with pytest.raises(MachineFault, match="outside memory"):
        run_program(name, text)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(filler())
def test_digit_lists_without_digits_answer_nothing(text):
    """sort of no digits is the empty list; max of none is outside its contract, and the
    program answers nothing, as its header says."""
    assert run_program("sort", text).output == reference("sort", text) == ""
    assert run_program("max", text).output == ""
    with pytest.raises(ValueError):
        reference("max", text)


@pytest.mark.parametrize("name", TWO_NUMBERS + ("fib",))
def test_number_programs_end_in_a_non_digit_sentinel(name):
    """The slot before the input is the program's last: it must hold a non-digit, so that a
    number at the very start of the input ends there, as any other number does."""
    last = load_program(name).slots[-1]
    assert last.kind == Kind.DATA and not DEFAULT_ALPHABET.is_digit(last.val)
    assert load_program(name).symbols["edge"] == len(load_program(name)) - 1


def test_a_digit_in_the_sentinel_would_join_the_first_number():
    """The sentinel matters: with a digit there, "2+3" reads as 12 + 3 in add."""
    program = load_program("add")
    patched = dataclasses.replace(program, slots=program.slots[:-1] + (Slot.data(1),))
    assert run(patched, "2+3").output == "15"
    assert run(program, "2+3").output == "5"


# ------------------------------------------------------------------ length genericity

_rng = random.Random(20240607)


def _num(n: int) -> str:
    return "".join(_rng.choice(DIGITS) for _ in range(n))


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


BIG = 1000
def _words(n: int) -> str:
    """About n characters of filler words."""
    text = ""
    while len(text) < n:
        text += _rng.choice(WORDS) + _rng.choice((" ", ", ", "? "))
    return text


LONG_INPUTS = {  # far longer than anything in the golden table
    "add": ["9" * BIG + "+1", _num(BIG) + "+" + _num(BIG),
            f"{_words(300)}{_num(BIG)} plus {_num(300)}?"],
    "sub": ["1" + "0" * BIG + "-1", _num(BIG) + "-" + _num(BIG - 1),
            f"{_words(300)}1{_num(BIG)} minus {_num(BIG)}"],
    "cmp": [(a := _num(BIG)) + "?" + a[:-1] + str((int(a[-1]) + 1) % 10), "0" * BIG + "?0",
            f"{_words(300)}0{a} and {a}?"],
    "mul": ["9" * 100 + "*" + "9" * 100, _num(100) + "*" + _num(80),
            f"{_words(300)}{_num(60)} times {_num(60)}"],
    "copy": ["".join(_rng.choice(TEXT_CHARS) for _ in range(300)),
             f"{_words(300)}: {_words(300)}"],
    "reverse": ["".join(_rng.choice(TEXT_CHARS) for _ in range(300)),
                f"{_words(300)}:  {_words(300)}"],
    "max": ["0" * BIG + "7" + "0" * BIG, f"{_words(BIG)}3 {_words(BIG)}8 {_words(BIG)}"],
    "sort": [_num(200), " ".join(_num(1) for _ in range(150))],
    "fib": ["400", f"{_words(BIG)}400"],  # the answer is the long part: 84 digits
    "apply": ["f: " + " ".join(f"{d}>{(7 * d + 3) % 10}" for d in range(10)) + " ; " + _num(BIG),
              f"{_words(300)}1>2 3>4 ; {_words(300)}" + "13" * 300],
    "fmap": ["f: " + " ".join(f"{d}>{(7 * d + 3) % 10}" for d in range(10)) + " ; " + _num(BIG),
             f"{_words(300)} ; {_words(300)}" + "13" * 300],
    "fmap_data": ["g: 9>1 ; " + _num(BIG), f"{_words(300)} ; {_words(300)}" + "90" * 300],
    "decline": [f"divide {_num(BIG)} by {_num(BIG)}", f"translate: {_words(BIG)}"],
    "reverse_string": ["".join(_rng.choice("01") for _ in range(BIG)),
                       f"{_words(300)}:  " + "".join(_rng.choice("01") for _ in range(300))],
    "duplicate_string": ["".join(_rng.choice("01") for _ in range(BIG)),
                         f"{_words(300)}: " + "".join(_rng.choice("01") for _ in range(300))],
    "odds_first": ["".join(_rng.choice("01") for _ in range(BIG)),
                   f"{_words(300)}: " + "".join(_rng.choice("01") for _ in range(301))],
    "bucket_sort": ["".join(_rng.choice("01234") for _ in range(BIG)),
                    f"{_words(300)}: " + "".join(_rng.choice(DIGITS) for _ in range(300))],
    "binary_addition": ["".join(_rng.choice("01") for _ in range(BIG)) + "+1",
                        f"{_words(300)}: " + "".join(_rng.choice("01") for _ in range(300))
                        + "+" + "".join(_rng.choice("01") for _ in range(200)) + "1"],
    "binary_multiplication": ["1" * 100 + "*" + "1" * 80,
                              f"{_words(300)}: " + "".join(_rng.choice("01") for _ in range(60))
                              + "1*1" + "".join(_rng.choice("01") for _ in range(60))],
    "compute_sqrt": ["1" + "".join(_rng.choice("01") for _ in range(399)),
                     f"{_words(300)}: 1" + "".join(_rng.choice("01") for _ in range(300))],
    "gcd": [f"{_fib(300)},{_fib(299)}", f"{_fib(200) * 7},{_fib(199) * 7}",
            f"{_words(300)}{_fib(150) * 3} and {_fib(149) * 3}"],
}


@pytest.mark.parametrize("name", PROGRAM_NAMES)
def test_length_generic(name):
    """One fixed program (no slot depends on the input) handles inputs or answers longer
    than itself and far longer than any golden case, and never writes over its own code."""
    program = load_program(name)
    assert set(LONG_INPUTS) == set(PROGRAM_NAMES)
    for text in LONG_INPUTS[name]:
        result = run_program(name, text)
        assert result.output == reference(name, text)
        assert max(len(text), len(result.output)) > len(program)
        assert result.steps <= len(program) or name != "decline"  # it reads nothing
        assert result.image.in_base == len(program)
        code = [a for a, s in enumerate(program.slots) if s.kind == Kind.INSTR]
        assert all(result.memory[a] == program.slots[a] for a in code)


def test_fib_memory_bound_is_as_documented():
    """fib.lasm: the default output region fits every n <= 431; past that it faults."""
    assert run_program("fib", "431").output == reference("fib", "431")
    with pytest.raises(MachineFault, match="outside memory"):
        run_program("fib", "432")
    assert run(load_program("fib"), "432", out_size=400).output == reference("fib", "432")


def test_gcd_of_zero_never_halts_as_documented():
    with pytest.raises(MachineFault, match="step"):
        run(load_program("gcd"), "0,5", max_steps=10_000)
    result = run(load_program("gcd"), "5,0", max_steps=10_000, on_limit="stop")
    assert not result.halted


# (program, input of size n, size 10n, expected growth): linear programs take ~10x the
# steps on a 10x longer input, quadratic ones ~100x, so none hides a size-dependent path.
SCALING = [
    ("add", "9" * 100 + "+1", "9" * 1000 + "+1", 10),
    ("sub", "1" + "0" * 100 + "-1", "1" + "0" * 1000 + "-1", 10),
    ("cmp", "5" * 100 + "?" + "5" * 100, "5" * 1000 + "?" + "5" * 1000, 10),
    ("copy", "ab" * 50, "ab" * 500, 10),
    ("reverse", "ab" * 50, "ab" * 500, 10),
    ("max", "3" * 100, "3" * 1000, 10),
    ("mul", "7" * 10 + "*" + "7" * 10, "7" * 100 + "*" + "7" * 100, 100),
    ("sort", "9876543210" * 2, "9876543210" * 20, 100),
    ("reverse_string", "01" * 50, "01" * 500, 10),
    ("duplicate_string", "01" * 50, "01" * 500, 10),
    ("odds_first", "01" * 50, "01" * 500, 10),
    ("bucket_sort", "01234" * 20, "01234" * 200, 10),
    ("binary_addition", "1" * 50 + "+" + "1" * 50, "1" * 500 + "+" + "1" * 500, 10),
    ("binary_multiplication", "1" * 20 + "*" + "1" * 20, "1" * 200 + "*" + "1" * 200, 100),
    ("compute_sqrt", "1" * 150, "1" * 1500, 100),  # ~3.2h² + 44h + 7L: 82x at this size
]


@pytest.mark.parametrize("name, small, large, growth", SCALING, ids=[s[0] for s in SCALING])
def test_steps_grow_with_input_as_documented(name, small, large, growth):
    ratio = run_program(name, large).steps / run_program(name, small).steps
    assert 0.75 * growth <= ratio <= 1.1 * growth, ratio


_PRINTABLE = "".join(chr(c) for c in range(32, 127))
_WORDY = "".join(c for c in _PRINTABLE if not c.isdigit() and c not in ":;")


@pytest.mark.parametrize("task", sorted(t for t, s in TASKS.items()
                                        if s.program_for is None and not s.declines))
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_every_expert_program_runs_in_printable_ascii(task, data):
    """Assembled in PRINTABLE_ALPHABET (capitals and every printable character added after
    the default symbols), each expert program answers as Python does on its prompts typed
    with them: a capitalised request, words of any printable character around it."""
    spec = TASKS[task]
    program = load_program(spec.program, spec.directory, PRINTABLE_ALPHABET)
    assert program.alphabet == PRINTABLE_ALPHABET
    length = data.draw(st.integers(1, min(6, spec.max_length or 6)))
    ex = data.draw(task_examples(task, length, length))
    words = st.text(st.sampled_from([c for c in _WORDY if c not in spec.reserved]),
                    max_size=12)
    head, colon, payload = ex.prompt.partition(":")
    prompt = data.draw(words).lstrip() + " " + head[:1].upper() + head[1:] + colon + payload
    if not colon:
        prompt += data.draw(words)
    want = spec.reference(prompt)
    assert want == ex.answer  # the words changed nothing Python reads
    assert run(program, prompt, 1_000_000, out_size=4 * len(prompt) + 256).output == want


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.text(st.sampled_from(_PRINTABLE), min_size=1, max_size=40))
def test_copy_and_reverse_take_any_printable_payload(text):
    copy = load_program("copy", alphabet=PRINTABLE_ALPHABET)
    rev = load_program("reverse", alphabet=PRINTABLE_ALPHABET)
    payload = text.lstrip(" ") or "x"
    assert run(copy, "Copy: " + payload).output == payload
    assert run(rev, "Reverse this: " + payload).output == payload[::-1]


def test_a_program_assembles_only_in_an_alphabet_that_extends_its_own():
    assert PRINTABLE_ALPHABET.extends(DEFAULT_ALPHABET)
    assert not DEFAULT_ALPHABET.extends(PRINTABLE_ALPHABET)
    add = load_program("add", alphabet=PRINTABLE_ALPHABET)
    assert add.slots[2:] != load_program("add").slots[2:]  # END has a new number
    assert run(add, "What is 12 plus 35?").output == "47"
    with pytest.raises(AssemblyError, match="not part of the one asked for"):
        assemble(".alphabet base 10\nhalt", alphabet=Alphabet.numeric(16))
