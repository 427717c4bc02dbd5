"""The draw helpers task files draw their operands with: ``(rng, ...) -> operands as
written``. A task's draw is ``edge_case(rng, edge_rate, [its edge cases]) or <its uniform
draw>`` (programs/add.py); ``llamacpu.learn.tasks`` re-exports every one, so task files
import them from there.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Callable

from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet

__all__ = ["Fit", "number", "pad", "shorter", "shuffled", "leading_zeros", "edge_case",
           "ordered", "draw_digit_list", "payload_chars", "draw_text", "fit_tokens",
           "fit_binary_pair", "draw_function", "is_defs", "function_table", "apply_function"]

# Operands of the task's kind made to fit its contract, or None when they cannot.
Fit = Callable[[tuple[str, ...]], "tuple[str, ...] | None"]


def number(rng: random.Random, width: int) -> str:
    """A number of exactly ``width`` digits and no leading zero ("0" is one digit)."""
    if width == 1:
        return str(rng.randrange(10))
    return str(rng.randrange(10 ** (width - 1), 10 ** width))


def pad(x: str, width: int) -> str:
    """``x`` with leading zeros up to ``width`` digits."""
    return x.rjust(width, "0")


def shorter(rng: random.Random, length: int) -> str:
    """The second operand: same width half the time, else a uniform width ≤ length."""
    width = length if rng.random() < 0.5 else rng.randint(1, length)
    return number(rng, width)


def shuffled(rng: random.Random, a: str, b: str) -> tuple[str, str]:
    """(a, b) or (b, a), even odds."""
    return (a, b) if rng.random() < 0.5 else (b, a)


def leading_zeros(rng: random.Random, length: int) -> tuple[str, str]:
    """One operand of full width, the other short and zero-padded to a width ≤ length."""
    short = number(rng, rng.randint(1, length - 1))
    return number(rng, length), pad(short, rng.randint(len(short) + 1, length))


def edge_case(rng: random.Random, edge_rate: float,
              cases: list[Callable[[], tuple[str, ...]]]) -> tuple[str, ...] | None:
    """With probability ``edge_rate``, one of the applicable edge cases, else None."""
    if cases and rng.random() < edge_rate:
        return rng.choice(cases)()
    return None


def ordered(a: str, b: str) -> tuple[str, str]:
    """(larger, smaller) by value: sub's contract is A ≥ B."""
    return (a, b) if int(a) >= int(b) else (b, a)


def draw_digit_list(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """``length`` single digits; edge cases: sorted, reversed, all equal, all zero."""
    def run_of(order: Callable[[list[str]], list[str]]) -> Callable[[], tuple[str, ...]]:
        return lambda: tuple(order([str(rng.randrange(10)) for _ in range(length)]))

    cases = [
        run_of(sorted),                                                  # already sorted
        run_of(lambda xs: sorted(xs, reverse=True)),                     # reversed
        lambda: (str(rng.randrange(10)),) * length,                      # all equal
        lambda: ("0",) * length,                                         # all zero
    ]
    return edge_case(rng, edge_rate, cases) or tuple(str(rng.randrange(10))
                                                      for _ in range(length))


_LETTERS = string.ascii_lowercase


@functools.cache
def payload_chars(alphabet: Alphabet = DEFAULT_ALPHABET) -> str:
    """The characters a text payload is drawn from: the alphabet's text characters but ':'
    (only the first ':' of a prompt matters, but a payload without one reads
    unambiguously), then its digits (the default alphabet: its punctuation, lowercase
    letters and digits; the printable one: every printable ASCII character but ':')."""
    digits = "".join(alphabet.decode_symbol(v) for v in range(alphabet.base))
    return "".join(c for c in alphabet.charset if c != ":") + digits


def _capitals(alphabet: Alphabet) -> str:
    """The capital letters of the alphabet's text characters ("" for the default one)."""
    return "".join(c for c in alphabet.charset if c in string.ascii_uppercase)


def _words(rng: random.Random, length: int) -> str:
    """Lowercase words separated by single spaces; first and last characters are letters."""
    out: list[str] = []
    for i in range(length):
        inner = 0 < i < length - 1 and out[-1] != " "
        out.append(" " if inner and rng.random() < 0.18 else rng.choice(_LETTERS))
    return "".join(out)


def _capitalised(rng: random.Random, text: str) -> str:
    """``text`` with each word's first letter a capital one time in three."""
    return "".join(ch.upper() if ch.isalpha() and (i == 0 or text[i - 1] == " ")
                   and rng.random() < 1 / 3 else ch for i, ch in enumerate(text))


def _mixed(rng: random.Random, length: int, chars: str) -> str:
    """Any payload characters; first and last are not spaces (leading spaces are skipped)."""
    solid = chars.replace(" ", "")
    return "".join(rng.choice(solid if i in (0, length - 1) else chars)
                   for i in range(length))


def draw_text(rng: random.Random, length: int, edge_rate: float,
              alphabet: Alphabet = DEFAULT_ALPHABET) -> tuple[str, ...]:
    """A payload of ``length`` characters of ``alphabet``: words (six in ten) or any
    characters (:func:`payload_chars`); edge cases: a palindrome, one letter repeated. With
    capitals in the alphabet, a word starts with one a third of the time and the repeated
    letter may be one; without them (the default alphabet) words are lowercase."""
    capitals = _capitals(alphabet)

    def words(n: int) -> str:
        text = _words(rng, n)
        return _capitalised(rng, text) if capitals else text

    def palindrome() -> tuple[str, ...]:
        half = words((length + 1) // 2)
        return (half + half[: length // 2][::-1],)

    cases = [palindrome, lambda: (rng.choice(_LETTERS + capitals) * length,)]
    drawn = edge_case(rng, edge_rate, cases)
    if drawn:
        return drawn
    return (words(length) if rng.random() < 0.6 else _mixed(rng, length,
                                                            payload_chars(alphabet)),)


def fit_tokens(tokens: str) -> Fit:
    """A :data:`Fit` that makes any text payload a string over ``tokens`` of the same length
    (each symbol's code point mod ``len(tokens)``; the tokens themselves stay): for the
    benchmark tasks whose inputs are strings over a small vocabulary."""
    def fit(ops: tuple[str, ...]) -> tuple[str, ...]:
        return ("".join(tokens[ord(c) % len(tokens)] for c in ops[0]),)
    return fit


def fit_binary_pair(op: str) -> Fit:
    """A :data:`Fit` that makes any text payload two bit strings joined by ``op`` (binary
    addition's and multiplication's inputs), of the same length: every symbol a bit (code
    point mod 2), and from length 3 on one ``op`` with bits on both sides, at the payload's
    first ``op`` if that has a symbol on each side, else at a position its symbols pick.
    Shorter payloads are one bit string."""
    def fit(ops: tuple[str, ...]) -> tuple[str, ...]:
        text = ops[0]
        bits = fit_tokens("01")(ops)[0]
        if len(text) <= 2:
            return (bits,)
        at = text.find(op)
        if not 0 < at < len(text) - 1:
            at = 1 + sum(map(ord, text)) % (len(text) - 2)
        return (bits[:at] + op + bits[at + 1:],)
    return fit


def draw_function(rng: random.Random, length: int, edge_rate: float) -> tuple[str, ...]:
    """A uniform digit function (edge cases: identity, constant, a permutation), its ten
    definitions in a random order, and a payload of ``length`` digits."""
    cases = [
        lambda: tuple(range(10)),                                       # identity
        lambda: (rng.randrange(10),) * 10,                              # constant
        lambda: tuple(rng.sample(range(10), 10)),                       # a permutation
    ]
    f = edge_case(rng, edge_rate, cases) or tuple(rng.randrange(10) for _ in range(10))
    order = rng.sample(range(10), 10)
    defs = " ".join(f"{x}>{f[x]}" for x in order)
    return defs, "".join(str(rng.randrange(10)) for _ in range(length))


def is_defs(defs: str) -> bool:
    pairs = defs.split(" ")
    return (len(pairs) == 10 and all(len(p) == 3 and p[1] == ">" and p[0].isdigit()
                                     and p[2].isdigit() for p in pairs)
            and sorted(p[0] for p in pairs) == list("0123456789"))


def function_table(defs: str) -> tuple[int, ...]:
    """f(0..9) from definitions as written ("3>9 0>3 ..."; every digit defined once)."""
    f = {int(p[0]): int(p[2]) for p in defs.split(" ")}
    return tuple(f[x] for x in range(10))


def apply_function(ops: tuple[str, ...]) -> str:
    """fmap's answer: f (the definitions ``ops[0]``) of every digit of the payload ``ops[1]``."""
    f = function_table(ops[0])
    return "".join(str(f[int(d)]) for d in ops[1])
