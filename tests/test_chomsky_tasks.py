"""The Chomsky-hierarchy benchmark's tasks (Delétang et al., ICLR 2023;
google-deepmind/neural_networks_chomsky_hierarchy, ``tasks/``) as llamacpu tasks: each
expert program answers its task's ``solve`` and, where ``solve`` could share a bug, an
independent restatement of the benchmark's rule, on random inputs of the benchmark's
training lengths (1..40) and a few long ones, at exactly the task's ``out_size``.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.golden import load_program
from llamacpu.core.interp import run
from llamacpu.evaluate.strategies import task_operands
from llamacpu.learn.tasks import TASKS, expert_program, reference

# ---------------------------------------------------------------------------- string tasks
# reverse_string (DCF), duplicate_string, odds_first, bucket_sort (CS): the string is the
# payload after the prompt's ':'; bits are the digits '0' and '1', bucket_sort's tokens
# 0 .. 4 the digits '0' .. '4'.

STRING_TASKS = ("reverse_string", "duplicate_string", "odds_first", "bucket_sort")
STRING_PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)


def _string_expert(name: str, text: str, template: str) -> str:
    """The expert's answer to the payload ``text`` in ``template``, at exactly out_size."""
    task = TASKS[name]
    ex = task.make((text,), template)
    return run(expert_program(ex), ex.prompt, 1_000_000,
               out_size=task.out_size(ex.operands)).output


def _templates(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(TASKS[name].train_templates + TASKS[name].heldout_templates)


def _bits(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text("01", min_size=1, max_size=max_size)


@STRING_PROPERTY
@given(s=_bits(), template=_templates("reverse_string"))
def test_reverse_string_expert_is_the_reverse(s: str, template: str) -> None:
    out = _string_expert("reverse_string", s, template)
    assert out == TASKS["reverse_string"].solve((s,))
    n = len(s)
    assert len(out) == n and all(out[i] == s[n - 1 - i] for i in range(n))   # s_n ... s_1


@STRING_PROPERTY
@given(s=_bits(), template=_templates("duplicate_string"))
def test_duplicate_string_expert_writes_it_twice(s: str, template: str) -> None:
    out = _string_expert("duplicate_string", s, template)
    assert out == TASKS["duplicate_string"].solve((s,))
    assert len(out) == 2 * len(s) and out[: len(s)] == out[len(s):] == s


@STRING_PROPERTY
@given(s=_bits(), template=_templates("odds_first"))
def test_odds_first_expert_puts_odd_indices_first(s: str, template: str) -> None:
    out = _string_expert("odds_first", s, template)
    assert out == TASKS["odds_first"].solve((s,))
    n, odd = len(s), len(s) // 2                       # 0-based odd indices: 1, 3, ...
    assert len(out) == n
    assert all(out[k] == s[2 * k + 1] for k in range(odd))
    assert all(out[odd + k] == s[2 * k] for k in range(n - odd))


@STRING_PROPERTY
@given(s=st.text("01234", min_size=1, max_size=40), template=_templates("bucket_sort"))
def test_bucket_sort_expert_sorts(s: str, template: str) -> None:
    out = _string_expert("bucket_sort", s, template)
    assert out == TASKS["bucket_sort"].solve((s,))
    assert Counter(out) == Counter(s) and all(a <= b for a, b in zip(out, out[1:]))


@pytest.mark.parametrize("length", [100, 250])
@pytest.mark.parametrize("name", STRING_TASKS)
def test_string_experts_on_long_inputs(name: str, length: int) -> None:
    """Far past the benchmark's training lengths: uniform and edge-case draws."""
    task = TASKS[name]
    rng = random.Random(f"chomsky/{name}/{length}")
    for edge_rate in (0.0, 1.0, 1.0, 1.0):
        ops = task.draw(rng, length, edge_rate)
        assert len(ops[0]) == length
        assert _string_expert(name, ops[0], rng.choice(task.train_templates)) == \
            task.solve(ops)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data(), name=st.sampled_from(STRING_TASKS))
def test_string_tasks_draw_through_fit(data: st.DataObject, name: str) -> None:
    """The property strategy (any payload, made to fit: bits, or tokens 0..4) keeps the
    drawn length, and the expert answers the drawn operands."""
    ops = data.draw(task_operands(name, 1, 40))
    vocab = "01234" if name == "bucket_sort" else "01"
    assert 1 <= len(ops[0]) <= 40 and set(ops[0]) <= set(vocab)
    assert _string_expert(name, ops[0], TASKS[name].train_templates[0]) == \
        TASKS[name].solve(ops)


@pytest.mark.parametrize("name", STRING_TASKS)
def test_string_tasks_sample_the_benchmark_vocabulary(name: str) -> None:
    task = TASKS[name]
    vocab = set("01234" if name == "bucket_sort" else "01")
    rng = random.Random(f"chomsky/vocab/{name}")
    for length in range(1, 41):
        ex = task.sample(rng, length)
        assert ex.length == len(ex.operands[0]) == length and set(ex.operands[0]) <= vocab


@pytest.mark.parametrize("name, text, expected", [
    # the examples of the benchmark's docstrings
    ("reverse_string", "011010", "010110"),
    ("duplicate_string", "101", "101101"),
    ("duplicate_string", "111111", "111111111111"),
    ("bucket_sort", "10204112", "00111224"),
    ("bucket_sort", "1110001", "0001111"),
    # odds_first follows the benchmark's sample_batch, s[1::2] + s[::2]; its docstring
    # (and the paper) give 0100 0111 and 10 1, the 1-based reading
    ("odds_first", "00110101", "01110100"),
    ("odds_first", "110", "110"),
    # worded, with the spaces after ':' skipped
    ("reverse_string", "reverse the bits:   0011", "1100"),
    ("odds_first", "odds first: 0", "0"),
    ("bucket_sort", "sorted: 43210", "01234"),
    # bucket_sort: any vocab_size up to 10
    ("bucket_sort", "9081726354", "0123456789"),
])
def test_string_tasks_on_the_benchmark_examples(name: str, text: str, expected: str) -> None:
    assert reference(name, text) == expected
    assert run(load_program(name), text).output == expected


def test_string_experts_answer_nothing_for_an_empty_payload() -> None:
    for name in STRING_TASKS:
        assert run(load_program(name), "x:  ").output == ""
        assert run(load_program(name), "").output == ""


def test_bucket_sort_drops_non_digits_as_documented() -> None:
    """Outside the contract (a payload of digits) the program still halts: after bucket 9
    every symbol left unplaced is a non-digit, and it is dropped."""
    assert run(load_program("bucket_sort"), "sort: 3a1,2").output == "123"


@pytest.mark.parametrize("name, cost", [
    ("reverse_string", lambda n: 6 * n + 20),
    ("duplicate_string", lambda n: 8 * n + 22),
    ("odds_first", lambda n: 6 * n + 22),
    ("bucket_sort", lambda n: 20 * n + 45),        # every token 0..4 present: 5 passes
])
def test_string_expert_costs_are_as_their_headers_say(name: str, cost) -> None:
    rng = random.Random(f"chomsky/cost/{name}")
    for n in (5, 40, 100, 500):
        s = "01234" + "".join(rng.choice("01234") for _ in range(n - 5))
        if name != "bucket_sort":
            s = "".join("01"[int(c) % 2] for c in s)
        assert run(load_program(name), "x: " + s).steps == cost(n), (name, n)


# ---------------------------------------------------------------------------- binary arithmetic
# binary_addition, binary_multiplication (little-endian "N+M", "N*M"; the benchmark's
# separator token 2 is '+' or '*', its termination token the END that closes the answer) and
# compute_sqrt (big-endian X, the root in ceil(len / 2) bits), all CS tasks. Each expert is
# checked against ``solve`` and against a restatement written here bit by bit: ripple-carry
# addition, shift-and-add multiplication, the root built greedily from its top bit.

BINARY_TASKS = ("binary_addition", "binary_multiplication", "compute_sqrt")
BINARY_OP = {"binary_addition": "+", "binary_multiplication": "*"}
BINARY_PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)


def _binary_expert(name: str, payload: str, template: str | None = None) -> str:
    """The expert's answer to ``payload`` in ``template``, at exactly the task's out_size."""
    task = TASKS[name]
    ex = task.make((payload,), template or task.train_templates[0])
    return run(expert_program(ex), ex.prompt, 1_000_000,
               out_size=task.out_size(ex.operands)).output


def _ripple_add(n: list[int], m: list[int]) -> list[int]:
    """Little-endian bit lists added column by column with a carry; high zeros cut."""
    out, carry = [], 0
    for i in range(max(len(n), len(m))):
        s = (n[i] if i < len(n) else 0) + (m[i] if i < len(m) else 0) + carry
        out.append(s % 2)
        carry = s // 2
    out.append(carry)
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return out


def _shift_add(n: list[int], m: list[int]) -> list[int]:
    """Little-endian N · M: N shifted by j added once for every 1 bit m_j."""
    total = [0]
    for j, bit in enumerate(m):
        if bit:
            total = _ripple_add(total, [0] * j + n)
    return total


def _greedy_root(x: str) -> str:
    """floor(√X) built from its top bit down (a bit stays if the square still fits),
    written in ceil(len / 2) bits."""
    value, h = int(x, 2), (len(x) + 1) // 2
    root = 0
    for k in reversed(range(h)):
        if (root | 1 << k) ** 2 <= value:
            root |= 1 << k
    return "".join(str(root >> k & 1) for k in reversed(range(h)))


def _bit_list(s: str) -> list[int]:
    return [int(c) for c in s]


@st.composite
def _binary_pair(draw, op: str, max_length: int = 40) -> str:
    """``N<op>M``, 3 .. max_length symbols: uniform bits, all ones, or 1 with high zeros."""
    length = draw(st.integers(3, max_length))
    ln = draw(st.integers(1, length - 2))

    def number(width: int) -> str:
        kind = draw(st.sampled_from(("any", "any", "ones", "one")))
        if kind == "ones":
            return "1" * width
        if kind == "one":
            return "1" + "0" * (width - 1)
        return draw(st.text("01", min_size=width, max_size=width))

    return number(ln) + op + number(length - 1 - ln)


def _binary_payloads(name: str) -> st.SearchStrategy[str]:
    """The benchmark's inputs: ``N<op>M``, or one number of 1 or 2 bits."""
    short = st.text("01", min_size=1, max_size=2)
    return st.one_of(short, _binary_pair(BINARY_OP[name]))


@BINARY_PROPERTY
@given(payload=_binary_payloads("binary_addition"),
       template=_templates("binary_addition"))
def test_binary_addition_expert_is_ripple_carry_addition(payload: str, template: str) -> None:
    out = _binary_expert("binary_addition", payload, template)
    assert out == TASKS["binary_addition"].solve((payload,))
    n, _, m = payload.partition("+")
    assert _bit_list(out) == _ripple_add(_bit_list(n), _bit_list(m))


@BINARY_PROPERTY
@given(payload=_binary_payloads("binary_multiplication"),
       template=_templates("binary_multiplication"))
def test_binary_multiplication_expert_is_shift_and_add(payload: str, template: str) -> None:
    out = _binary_expert("binary_multiplication", payload, template)
    assert out == TASKS["binary_multiplication"].solve((payload,))
    n, op, m = payload.partition("*")
    if op:
        assert _bit_list(out) == _shift_add(_bit_list(n), _bit_list(m))
    else:  # the benchmark's fixed answer at lengths 1 and 2
        assert out == "0" * (len(payload) - 1)


@BINARY_PROPERTY
@given(x=st.one_of(st.text("01", min_size=1, max_size=40),
                   st.integers(1, 20).map(lambda h: "1" * (2 * h)),
                   st.integers(1, 2 ** 20 - 1).map(lambda s: f"{s * s:b}"),
                   st.integers(2, 2 ** 20 - 1).map(lambda s: f"{s * s - 1:b}")),
       template=_templates("compute_sqrt"))
def test_compute_sqrt_expert_is_the_floor_of_the_root(x: str, template: str) -> None:
    out = _binary_expert("compute_sqrt", x, template)
    assert out == TASKS["compute_sqrt"].solve((x,)) == _greedy_root(x)
    root = int(out, 2)
    assert len(out) == (len(x) + 1) // 2 and root ** 2 <= int(x, 2) < (root + 1) ** 2


@pytest.mark.parametrize("length", [100, 250, 500])
@pytest.mark.parametrize("name", BINARY_TASKS)
def test_binary_experts_on_long_inputs(name: str, length: int) -> None:
    """Far past the benchmark's training lengths (500: its longest test length), uniform
    and edge-case draws."""
    task = TASKS[name]
    rng = random.Random(f"chomsky/{name}/{length}")
    for edge_rate in (0.0, 1.0, 1.0):
        ops = task.draw(rng, length, edge_rate)
        assert len(ops[0]) == length
        assert _binary_expert(name, ops[0], rng.choice(task.heldout_templates)) == \
            task.solve(ops)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data(), name=st.sampled_from(BINARY_TASKS))
def test_binary_tasks_draw_through_fit(data: st.DataObject, name: str) -> None:
    """The property strategy (any payload, made to fit) gives the benchmark's form at the
    drawn length, and the expert answers it."""
    (payload,) = data.draw(task_operands(name, 1, 40))
    op = BINARY_OP.get(name)
    if op is None or len(payload) <= 2:
        assert set(payload) <= set("01")
    else:
        n, _, m = payload.partition(op)
        assert n and m and set(n + m) <= set("01")
    assert _binary_expert(name, payload) == TASKS[name].solve((payload,))


@pytest.mark.parametrize("name", BINARY_TASKS)
def test_binary_tasks_sample_the_benchmark_inputs(name: str) -> None:
    """Uniform draws are the benchmark's: from length 3 on, two nonzero numbers split
    around the separator (every split seen); one number below 2^length − 1 before that
    (compute_sqrt: X in 1 .. 2^length − 1, big-endian)."""
    task = TASKS[name]
    op = BINARY_OP.get(name)
    rng = random.Random(f"chomsky/inputs/{name}")
    for length in range(1, 41):
        splits = set()
        for _ in range(40 if length <= 6 else 3):
            (payload,) = task.draw(rng, length, 0.0)
            assert len(payload) == length
            if op is None:
                assert set(payload) <= set("01") and int(payload, 2) >= 1
            elif length <= 2:
                assert set(payload) <= set("01") and int(payload[::-1], 2) < 2 ** length - 1
            else:
                n, sep, m = payload.partition(op)
                assert sep and n and m and int(n, 2) and int(m, 2) and set(n + m) <= set("01")
                splits.add(len(n))
        if op and 3 <= length <= 6:
            assert splits == set(range(1, length - 1))


def _benchmark_target(name: str, payload: str) -> list[int]:
    """The benchmark's output tokens for an input (sample_batch's construction): the answer's
    bits, the termination token 2 (binary_addition/multiplication), zeros up to its
    output_length (L + 1, L; compute_sqrt: ceil(L / 2) bits, no termination)."""
    length = len(payload)
    if name == "compute_sqrt":
        return [int(c) for c in f"{math.isqrt(int(payload, 2)):b}".zfill(-(-length // 2))]
    numbers = [int(x[::-1], 2) for x in payload.split(BINARY_OP[name])]
    if name == "binary_addition":
        res = [int(c) for c in f"{sum(numbers):b}"[::-1]]
        return res + [2] + [0] * (length - len(res))
    res = ([int(c) for c in f"{math.prod(numbers):b}"[::-1]] if length > 2
           else [0] * (length - 1))
    return res + [2] + [0] * (length - 1 - len(res))


@pytest.mark.parametrize("name", BINARY_TASKS)
def test_binary_answers_are_the_benchmark_targets_up_to_termination(name: str) -> None:
    """The answer is the benchmark's target up to its termination token (which the
    accuracy mask keeps, and END stands for); the target has the benchmark's
    output_length, so the answer fits it."""
    task = TASKS[name]
    rng = random.Random(f"chomsky/targets/{name}")
    for length in range(1, 41):
        (payload,) = task.draw(rng, length, 0.25)
        target = _benchmark_target(name, payload)
        answer = [int(c) for c in task.solve((payload,))]
        if name == "compute_sqrt":
            assert answer == target and len(target) == (length + 1) // 2
        else:
            assert target[: len(answer) + 1] == answer + [2]
            assert len(target) == length + (name == "binary_addition")


@pytest.mark.parametrize("name, text, expected", [
    # the examples of the benchmark's docstrings (the targets up to the termination token)
    ("binary_addition", "001+01101", "01011"),            # 4 + 22 = 26: 010112000
    ("binary_addition", "1001+000001", "100101"),         # 9 + 32 = 41: 10010120000
    ("binary_multiplication", "001*01101", "0001101"),    # 4 · 22 = 88: 000110120
    ("binary_multiplication", "1001*000001", "000001001"),  # 9 · 32 = 288: 00000100120
    # compute_sqrt's docstring says 37 → 101; its code (math.isqrt) gives 6 → 110
    ("compute_sqrt", "100101", "110"),
    ("compute_sqrt", "111", "10"),
    # lengths 1 and 2: one number; binary_multiplication's fixed answers "" and "0"
    ("binary_addition", "0", "0"), ("binary_addition", "01", "01"),
    ("binary_multiplication", "1", ""), ("binary_multiplication", "10", "0"),
    # worded, with the spaces after ':' skipped; carries out of the top; zeros
    ("binary_addition", "add in binary:   1111+1", "00001"),
    ("binary_addition", "binary sum: 000+00", "0"),
    ("binary_multiplication", "binary product: 11*11", "1001"),
    ("binary_multiplication", "binary product: 000*1", "0"),
    ("compute_sqrt", "sqrt: 0000", "00"),
    ("compute_sqrt", "sqrt: 1", "1"),
])
def test_binary_tasks_on_the_benchmark_examples(name: str, text: str, expected: str) -> None:
    assert reference(name, text) == expected
    assert run(load_program(name), text).output == expected


@pytest.mark.parametrize("name, bound", [
    # the headers' costs for a payload of L symbols after "x: " (about 10 steps to find it)
    ("binary_addition", lambda n, m, L: 21 * max(n, m) + 3 * n + 40),
    ("binary_multiplication", lambda n, m, L: 8 * n * m + 15 * m + 5 * n + 40),
    ("compute_sqrt", lambda n, m, L: 5 * ((L + 1) // 2) ** 2 + 44 * ((L + 1) // 2) + 7 * L + 40),
])
def test_binary_expert_costs_are_as_their_headers_say(name: str, bound) -> None:
    """All ones (every row added, every compare and subtraction run) at the worst split,
    and uniform draws: within the header's bound."""
    task = TASKS[name]
    rng = random.Random(f"chomsky/cost/{name}")
    op = BINARY_OP.get(name, "")
    for length in (5, 40, 100, 500):
        worst = ["1" * length] if not op else \
            ["1" * (length // 2) + op + "1" * (length - 1 - length // 2),
             "1" + op + "1" * (length - 2), "1" * (length - 2) + op + "1"]
        for payload in worst + [task.draw(rng, length, 0.0)[0] for _ in range(3)]:
            n, _, m = payload.partition(op) if op else (payload, "", "")
            steps = run(load_program(name), "x: " + payload).steps
            assert steps <= bound(len(n), len(m), length), (name, payload, steps)
