"""The composed tasks' operands in text: a chain template's phrasings
(:func:`chain_phrasings`) and rendering, and the expression a free text holds
(:func:`expression_in`). ``llamacpu.learn.tasks`` renders and checks the composed tasks'
examples with them and re-exports the public ones.
"""

from __future__ import annotations

import re

from llamacpu.core import compose

__all__ = ["CHAIN_STEPS", "chain_phrasings", "check_chain_template", "render_chain",
           "expression_in", "is_expression", "EXPRESSION_SYMBOLS"]

CHAIN_STEPS = ("add", "sub", "mul", "rsub")
"""The steps a chain's operands name (``compose.chain_calls``): the result so far plus,
minus or times the step's number, or ``rsub``, the number minus the result ("subtract the
result from 78"). In the first clause the "result so far" is the first number."""

_CHAIN_MARKS = (*(f"first_{op}" for op in CHAIN_STEPS), *CHAIN_STEPS, "conn", "end")
_CHAIN_MARK = re.compile(r"\{(" + "|".join(_CHAIN_MARKS) + r")\}")
EXPRESSION_SYMBOLS = "+-*()"
"""The symbols of an expression, which an expr wording never has."""


def chain_phrasings(template: str) -> tuple[str, dict[str, str], str]:
    """``(head, phrasings, tail)`` of a chain template.

    A chain wording fixes the phrasing of every clause kind, so a chain of any number of
    steps renders in it: the template is ``head``, then each of the marks
    ``{first_add} {first_sub} {first_mul} {first_rsub}`` (the first clause, which combines
    the first two numbers ``{a}`` and ``{b}``, named in that order), ``{add} {sub} {mul}
    {rsub}`` (a later clause, one new number ``{n}``) and ``{conn}`` (what joins two
    clauses) followed by its phrasing, in any order and each once, then ``{end}`` and
    ``tail``::

        {first_add}add {a} and {b}{first_sub}take {a} minus {b}...{conn}, then {add}add {n}
        ...{rsub}subtract the result from {n}{end}.

    renders n0 add n1 mul n2 as "add 12 and 345, then multiply by 6." Raises ValueError
    when a mark is missing, repeated or ``{end}`` is not the last.
    """
    pieces = _CHAIN_MARK.split(template)
    marks, texts = pieces[1::2], pieces[2::2]
    if sorted(marks) != sorted(_CHAIN_MARKS) or marks[-1:] != ["end"]:
        raise ValueError(f"chain template {template!r}: needs each of "
                         f"{' '.join('{' + m + '}' for m in _CHAIN_MARKS)} once, {{end}} "
                         "last (chain_phrasings)")
    phrasings = dict(zip(marks, texts))
    return pieces[0], phrasings, phrasings.pop("end")


def render_chain(template: str, operands: tuple[str, ...]) -> str:
    head, phrasings, tail = chain_phrasings(template)
    numbers, steps = operands[0::2], operands[1::2]
    clauses = [phrasings[f"first_{steps[0]}"].replace("{a}", numbers[0])
               .replace("{b}", numbers[1])]
    clauses += [phrasings[op].replace("{n}", n) for op, n in zip(steps[1:], numbers[2:])]
    text = head + phrasings["conn"].join(clauses) + tail
    # a capitalised wording (wordings.py: its first letter) starts the prompt with a capital
    # whichever clause comes first
    free = re.sub(r"\{[^}]*\}", "", template)
    first = next((c for c in free if c.isalpha()), "")
    at = next((i for i, c in enumerate(text) if c.isalpha()), None)
    if first.isupper() and at is not None:
        text = text[:at] + text[at].upper() + text[at + 1:]
    return text


def expression_in(text: str) -> str:
    """The arithmetic expression of a free text (expr's operand): from its first digit or
    ``(`` to its last digit or ``)``, which must parse (``compose.to_postfix``: ValueError
    naming the position otherwise). An expr wording has no ``+ - * ( )`` and no digit of
    its own, so this is the expression it was rendered with."""
    at = [i for i, c in enumerate(text) if c in "0123456789()"]
    if not at:
        raise ValueError(f"no arithmetic expression in {text!r}")
    expr = text[at[0]:at[-1] + 1]
    compose.to_postfix(expr)
    return expr


def is_expression(text: str) -> bool:
    if text != text.strip() or not set(text) <= set("0123456789 " + EXPRESSION_SYMBOLS):
        return False
    try:
        compose.to_postfix(text)
    except ValueError:
        return False
    return True


def check_chain_template(t: str, where: str) -> None:
    """A chain template's rules (:func:`chain_phrasings`): a first clause names ``{a}`` then
    ``{b}`` with a non-digit between, a later one ``{n}``, once each; the head, the tail and
    the connector (not empty: it parts two numbers) have no placeholders. ValueError
    naming ``where`` otherwise."""
    head, phrasings, tail = chain_phrasings(t)
    for mark, text in (("head", head), ("tail", tail), *phrasings.items()):
        fields = re.findall(r"\{[^}]*\}", text)
        want = (["{a}", "{b}"] if mark.startswith("first_") else [] if mark == "conn"
                else ["{n}"] if mark in CHAIN_STEPS else [])
        if fields != want or (mark == "conn" and not text) or (
                want == ["{a}", "{b}"] and not re.search(r"\{a\}\D+\{b\}", text)):
            raise ValueError(f"{where}: the {mark} phrasing {text!r} needs "
                             f"{' then '.join(want) or 'no placeholder'}"
                             + (" and a non-digit between them" if len(want) == 2 else "")
                             + (", and is not empty" if mark == "conn" else ""))
