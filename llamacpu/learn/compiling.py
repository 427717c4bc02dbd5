"""The compile phase: a main program built from a prompt's structure, one bounded view at a
time.

A composed task's expert program is a main program of library calls
(:mod:`llamacpu.core.compose`, :mod:`llamacpu.core.link`) whose length grows with the
number of operations in the prompt. A controller that emits it slot after slot while
attending to the whole prompt meets, at 8 operations, prompts and programs longer than any
it trained on. The compile phase is the plan phase's counterpart of the execute phase,
which depends only on the current step: a loop walks over the prompt's tokens with an
operator stack (shunting-yard), and at every step one decision is taken from a bounded
:class:`View` of the prompt: the current token, the top of the stack, and until the first
operation is pushed the word token before it (the head of the first clause). The decisions are what a controller learns; the loop, the stack and the
lexer are fixed. Every view is bounded whatever the number of operations, so a policy that
is right on every view compiles prompts of any length (and the views a policy must get
right can be enumerated and certified, as the execute phase's are).

Tokens (:func:`lex`): maximal digit runs (``NUMBER``, the view shows ``#``: the library's
``num`` reads the digits from the input), the expression symbols ``+ - * ( )`` (one per
token) and maximal runs of anything else (``WORDS``: the wording, spaces included); the
end of the prompt is one more token, ``END``.

Decisions (:class:`Action`), each taken at the current token with the stack as it is:

=========  ==========================================================  ===========
action     what it does                                                 moves on
=========  ==========================================================  ===========
NUM        emit ``call num``                                            yes
SKIP       nothing (wording, spaces)                                    yes
PUSH op    push an operation (add, sub, mul, rsub) or ``(``              yes
POP        emit the calls of the operation on top and pop it            no
CLOSE      pop the ``(`` on top                                         yes
FINISH     emit ``call print`` and ``halt`` (at END, the stack empty)   stops
=========  ==========================================================  ===========

:func:`expert_actions` gives an example's decisions: shunting-yard for ``expr`` (an
operator pops what binds at least as tightly, ``)`` pops down to its ``(``), and for
``chain`` each step's operation pushed at the token just before its second number,
popping the step before it (clauses apply left to right). :func:`compile_main` runs the loop
with any policy (a function of the view) and returns the calls it emitted: with the
expert's decisions they are ``compose``'s calls for the example.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from llamacpu.core import compose
from llamacpu.learn.tasks import Example

__all__ = ["Kind", "Token", "lex", "View", "Action", "Decision", "expert_actions",
           "compile_main", "CompileError", "STACK_OPS", "policy_of"]


class Kind(Enum):
    NUMBER = "number"
    SYMBOL = "symbol"
    WORDS = "words"
    END = "end"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str

    @property
    def shown(self) -> str:
        """What a view shows of it: ``#`` for a number, ``<end>`` for the end."""
        return {Kind.NUMBER: "#", Kind.END: "<end>"}.get(self.kind, self.text)


_TOKEN = re.compile(r"[0-9]+|[-+*()]|[^-+*()0-9]+")
_SYMBOLS = "+-*()"

STACK_OPS = ("add", "sub", "mul", "rsub", "(")
"""What the stack holds: the chain's and the expression's operations, and ``(``."""

_CALLS = {"add": ("add",), "sub": ("sub",), "mul": ("mul",), "rsub": ("swap", "sub")}
"""The library calls that apply an operation on the stack (rsub: b − a as swap, sub)."""


def lex(prompt: str) -> list[Token]:
    """The prompt's tokens, then END: digit runs, expression symbols, and maximal runs of
    everything else."""
    out = []
    for m in _TOKEN.finditer(prompt):
        t = m.group()
        kind = Kind.NUMBER if t[0].isdigit() else Kind.SYMBOL if t in _SYMBOLS else Kind.WORDS
        out.append(Token(kind, t))
    return out + [Token(Kind.END, "")]


@dataclass(frozen=True)
class View:
    """What one decision is taken from: the current token as a view shows it, the top of
    the stack (``""`` when empty), and ``head``: until the first operation is pushed, the
    last word token before the current one (``""`` after that, and at the start).

    The head is what the first clause of a chain needs ("add 12 and 345": the operation is
    named before the first number and pushed before the second, where the token is
    " and "); later decisions never see it, so no view pairs the words of two clauses and
    the views of a prompt with many operations are those of prompts with one or two."""

    head: str
    token: str
    top: str

    def __str__(self) -> str:
        return f"{self.head!r} | {self.token!r} | top {self.top or '-'}"


@dataclass(frozen=True)
class Action:
    name: str              # NUM SKIP PUSH POP CLOSE FINISH
    op: str = ""           # PUSH's operation

    def __str__(self) -> str:
        return f"{self.name} {self.op}" if self.op else self.name


NUM, SKIP, POP, CLOSE, FINISH = (Action(n) for n in ("NUM", "SKIP", "POP", "CLOSE", "FINISH"))


def PUSH(op: str) -> Action:  # noqa: N802  (an action constructor, named like the others)
    if op not in STACK_OPS:
        raise ValueError(f"PUSH takes one of {', '.join(STACK_OPS)}, got {op!r}")
    return Action("PUSH", op)


@dataclass(frozen=True)
class Decision:
    view: View
    action: Action


class CompileError(ValueError):
    """A policy's decision the loop cannot take (POP of an empty stack, FINISH before the
    end, ...)."""


def compile_main(prompt: str, policy: Callable[[View], Action],
                 trace: list[Decision] | None = None) -> list[str]:
    """Run the compile loop on ``prompt`` with ``policy``: the library calls it emits,
    ``print`` included (``halt`` follows them in the main program). ``trace`` collects
    every decision. Raises CompileError for a decision the loop cannot take."""
    tokens = lex(prompt)
    stack: list[str] = []
    calls: list[str] = []
    head, pushed = "", False
    for t in tokens:  # every action but POP moves on, and POPs are bounded by the pushes:
        while True:   # at most 2 · len(tokens) + 1 decisions in all
            view = View("" if pushed else head, t.shown, stack[-1] if stack else "")
            action = policy(view)
            if trace is not None:
                trace.append(Decision(view, action))
            name = action.name
            if name == "POP":
                if not stack or stack[-1] == "(":
                    raise CompileError(f"POP at {view}: no operation on top")
                calls += _CALLS[stack.pop()]
                continue
            if name == "FINISH":
                if t.kind is not Kind.END or stack:
                    raise CompileError(f"FINISH at {view}: not at the end with the stack "
                                       "empty")
                return calls + ["print"]
            if t.kind is Kind.END:
                raise CompileError(f"{action} at {view}: only POP or FINISH at the end")
            if name == "NUM":
                calls.append("num")
            elif name == "PUSH":
                stack.append(action.op)
                pushed = True
            elif name == "CLOSE":
                if not stack or stack[-1] != "(":
                    raise CompileError(f"CLOSE at {view}: no '(' on top")
                stack.pop()
            elif name != "SKIP":
                raise CompileError(f"unknown action {action}")
            break
        if t.kind is Kind.WORDS:
            head = t.text
    raise CompileError("the prompt ended before FINISH")  # unreachable: END is a token


# ------------------------------------------------------------------------ the expert

_PRECEDENCE = {"add": 1, "sub": 1, "mul": 2}


def _expr_policy(view: View) -> Action:
    """Shunting-yard, one decision at a time."""
    tok, top = view.token, view.top
    if tok == "#":
        return NUM
    if tok == "(":
        return PUSH("(")
    if tok == ")":
        return CLOSE if top == "(" else POP
    if tok in compose.OPERATORS:
        op = compose.OPERATORS[tok]
        if top in _PRECEDENCE and _PRECEDENCE[top] >= _PRECEDENCE[op]:
            return POP
        return PUSH(op)
    if tok == "<end>":
        return POP if top else FINISH
    return SKIP


def expert_actions(example: Example) -> list[Decision]:
    """The expert's decisions for a composed example (``expr`` or ``chain``), in the order
    the loop takes them; :func:`compile_main` with them emits the calls of the example's
    expert main program."""
    trace: list[Decision] = []
    if example.task == "expr":
        compile_main(example.prompt, _expr_policy, trace)
        return trace
    if example.task != "chain":
        raise ValueError(f"task {example.task} has no compile phase (expr and chain do)")
    steps = list(example.operands[1::2])
    tokens = lex(example.prompt)
    numbers = [i for i, t in enumerate(tokens) if t.kind is Kind.NUMBER]
    if len(numbers) != len(steps) + 1:
        raise ValueError(f"chain prompt {example.prompt!r}: {len(numbers)} numbers for "
                         f"{len(steps)} steps")
    # step k (0-based) is pushed at the token just before number k + 1, which first pops
    # step k - 1: clauses apply left to right
    push_at = {numbers[k + 1] - 1: steps[k] for k in range(len(steps))}
    position = iter(range(len(tokens)))
    current = next(position)

    def policy(view: View) -> Action:
        nonlocal current
        t = tokens[current]
        if t.kind is Kind.END:
            return POP if view.top else FINISH
        if current in push_at and view.top:
            return POP
        action = NUM if t.kind is Kind.NUMBER else (
            PUSH(push_at[current]) if current in push_at else SKIP)
        current = next(position, current)
        return action

    compile_main(example.prompt, policy, trace)
    return trace


def policy_of(decisions: Sequence[Decision]) -> dict[View, Action]:
    """The policy the decisions define, view → action; ValueError if one view has two
    actions (the view does not determine the decision)."""
    out: dict[View, Action] = {}
    for d in decisions:
        if out.setdefault(d.view, d.action) != d.action:
            raise ValueError(f"view {d.view} has two actions: {out[d.view]} and {d.action}")
    return out
