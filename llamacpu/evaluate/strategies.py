"""Hypothesis strategies for task inputs, reused by the expert programs' tests and by
``python -m llamacpu.check``.

Task inputs, two kinds: the expert programs' free-text formats (:func:`numerals`,
:func:`operand_pairs`, :func:`comparisons`, :func:`digit_lists`, :func:`texts`,
:func:`worded`, ...) and operands in the contract of ``llamacpu.learn.tasks`` at a chosen
length (:func:`task_operands`, :func:`task_examples`), biased toward carry and borrow
chains, equal operands, leading zeros, sorted/reversed/constant lists, palindromes. The task
strategies draw in an alphabet (default: the default one): with
``isa.PRINTABLE_ALPHABET``, payloads of any printable character but ':' and the grammar's
capitalised wordings.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet

__all__ = [
    "numerals", "operand_pairs", "ordered_pairs", "comparisons", "digit_lists", "texts",
    "fib_inputs", "gcd_inputs", "worded", "worded_digit_lists", "worded_payloads", "filler",
    "numeral", "number_pair", "digit_list", "payload", "digit_function", "function_payload",
    "drawn_by_task", "task_operands", "task_examples",
]

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


def texts(max_len: int, alphabet: Alphabet = DEFAULT_ALPHABET) -> st.SearchStrategy[str]:
    """Any text over ``alphabet`` (default: the default one)."""
    chars = TEXT_CHARS if alphabet == DEFAULT_ALPHABET else _chars(alphabet)
    return st.text(chars, max_size=max_len)


def _chars(alphabet: Alphabet) -> str:
    """Every character of ``alphabet`` (END aside)."""
    return alphabet.decode(tuple(range(alphabet.end)))


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


def _payload_chars(alphabet: Alphabet) -> str:
    """What copy and reverse payloads are drawn from: ``alphabet`` minus ':'
    (:data:`PAYLOAD_CHARS` for the default one)."""
    if alphabet == DEFAULT_ALPHABET:
        return PAYLOAD_CHARS
    return "".join(c for c in _chars(alphabet) if c != ":")


@st.composite
def payload(draw: Callable, lo: int, hi: int | None = None, edge: bool = True,
            alphabet: Alphabet = DEFAULT_ALPHABET) -> tuple[str]:
    """A copy/reverse payload of lo..hi characters of ``alphabet`` but ':', not starting
    with a space (the programs skip spaces after ':'): any characters, one repeated, or a
    palindrome."""
    hi = lo if hi is None else hi
    chars = _payload_chars(alphabet)
    first = draw(st.sampled_from(chars.replace(" ", "")))
    rest = draw(st.text(chars, min_size=lo - 1, max_size=hi - 1))
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


def drawn_by_task(task: str, lo: int, hi: int | None = None,
                  edge: bool = True) -> st.SearchStrategy[tuple[str, ...]]:
    """Operands of ``task`` of lo..hi as its own draw makes them, from a drawn seed (the
    composed tasks, whose operands are a valid expression or chain: their draws keep every
    intermediate result non-negative); shrinking goes to seed 0 and the shortest length."""
    import random

    from llamacpu.learn.tasks import TASKS

    spec = TASKS[task]
    hi = lo if hi is None else hi
    rate = spec.edge_rate if edge else 0.0
    return st.builds(lambda seed, n: spec.draw(random.Random(seed), n, rate),
                     st.integers(0, 2**32 - 1), st.integers(lo, hi))


def task_operands(task: str, min_length: int = 1, max_length: int | None = None,
                  edge: bool = True, alphabet: Alphabet = DEFAULT_ALPHABET
                  ) -> st.SearchStrategy[tuple[str, ...]]:
    """Operands of ``task`` (``Task.make``'s argument) of a length in
    ``min_length..max_length`` (default ``min_length``), their characters in ``alphabet``
    (a text payload's); shrinking shortens them.

    The strategy is the task's operand kind's (one or two numerals, a digit list, a payload,
    a digit function and its payload; an expression or a chain by the task's own draw,
    :func:`drawn_by_task`), drawn through the task's ``fit`` where it has one (sub: the
    larger first; gcd: no zero)."""
    # imported here: tasks loads every task file, which tests of the programs need not
    from llamacpu.learn.tasks import TASKS, Operands

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    lo, hi = min_length, min_length if max_length is None else max_length
    spec = TASKS[task]
    spec.check_length(lo)
    spec.check_length(hi)
    if hi < lo:
        raise ValueError(f"max_length {hi} < min_length {lo}")
    kind = spec.operands
    if kind is Operands.NUMBERS:
        drawn = number_pair(lo, hi, edge) if spec.arity == 2 else \
            numeral(lo, hi, edge).map(lambda x: (x,))
    elif kind is Operands.DIGITS:
        drawn = digit_list(lo, hi, edge)
    elif kind is Operands.TEXT:
        drawn = payload(lo, hi, edge, alphabet)
    elif kind in (Operands.EXPRESSION, Operands.CHAIN):
        drawn = drawn_by_task(task, lo, hi, edge)
    else:
        drawn = function_payload(lo, hi, edge)
    if spec.fit is None:
        return drawn
    return drawn.map(spec.fit).filter(lambda ops: ops is not None)


def task_examples(task: str, min_length: int = 1, max_length: int | None = None,
                  split: str = "train", edge: bool = True,
                  alphabet: Alphabet = DEFAULT_ALPHABET) -> st.SearchStrategy:
    """``tasks.Example``s written in ``alphabet``: :func:`task_operands` in one of the
    task's wordings of ``split`` (any of ``tasks.ALL_SPLITS``; the grammar's, in the
    alphabet, with capitalised wordings when it has capitals); shrinking goes to the first
    wording."""
    from llamacpu.learn.tasks import TASKS

    spec = TASKS[task]
    operands = task_operands(task, min_length, max_length, edge, alphabet)
    return st.builds(spec.make, operands, st.sampled_from(spec.templates(split, alphabet)),
                     st.just(alphabet))
