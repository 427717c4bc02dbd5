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
operation is pushed the word token before it (the head of the first clause), and whether
the token comes before the first number or after the last. The decisions are what a controller learns; the loop, the
stack and the lexer are fixed. Every view is bounded whatever the number of operations, so a policy that
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

import functools
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from llamacpu.core import compose
from llamacpu.core.golden import load_program
from llamacpu.core.isa import DEFAULT_ALPHABET, Alphabet, Program
from llamacpu.core.link import LIBRARY_DIR, link, load_library
from llamacpu.learn.tasks import TASKS, Example, Operands, expert_program

__all__ = ["Kind", "Token", "lex", "View", "Action", "Decision", "expert_actions",
           "compile_main", "CompileError", "STACK_OPS", "policy_of", "COMPOSED",
           "is_composed", "compile_marker", "is_compile", "plan_program", "linked_program",
           "neural_policy", "compile_views", "CompileCertificate", "certify_compile",
           "HELD_OUT_COMBINATIONS", "held_out_combination", "recalled_by",
           "run_program"]


class Kind(Enum):
    NUMBER = "number"
    SYMBOL = "symbol"
    WORDS = "words"
    END = "end"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str

    def shown(self, words: int | None = None) -> str:
        """What a view shows of it: ``#`` for a number, ``<end>`` for the end, and of a run
        of words its last ``words`` words (None: all of it) with the spaces after them:
        at 3, ``", and after that multiply by "`` shows ``"that multiply by "``."""
        if self.kind is Kind.WORDS:
            if words is None:
                return self.text
            return re.search(rf"(?:[^ ]* +){{0,{words - 1}}}[^ ]* *$", self.text).group()
        return {Kind.NUMBER: "#", Kind.END: "<end>"}.get(self.kind, self.text)


WORDS = 3
"""How many of a word run's last words a compile view shows (:meth:`Token.shown`). A
clause names its operation right before its number ("multiply by 6", "take the result
away from 78"): the last words of the run before a number, after whatever connector
joins it to the clause before (", then ", "; next, ", " and after that "), which the view
then mostly drops, and with it the words a new wording adds further back. Three is the
fewest at which no view of the wordings of every split (hand-written and grammar) has two
decisions (``tests/test_compiling.py``: "by " alone is "multiply by" and "increase that
by"; "that by " is "scale that by" and "increase that by")."""


_TOKEN = re.compile(r"[0-9]+|[-+*()]|[^-+*()0-9]+")
_SYMBOLS = "+-*()"

STACK_OPS = ("add", "sub", "mul", "rsub", "(")
"""What the stack holds: the chain's and the expression's operations, and ``(``."""



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
    the stack (``""`` when empty), ``head``: until the first operation is pushed, the
    last word token before the current one (``""`` after that, and at the start), and
    ``opening`` / ``closing``: the token comes before the prompt's first number / after its
    last one (so a request's opening and closing words are told from a connector between
    two clauses by where they stand, not by what they say).

    The head is what the first clause of a chain needs ("add 12 and 345": the operation is
    named before the first number and pushed before the second, where the token is
    " and "); later decisions never see it, so no view pairs the words of two clauses and
    the views of a prompt with many operations are those of prompts with one or two."""

    head: str
    token: str
    top: str
    opening: bool = False
    closing: bool = False

    def __str__(self) -> str:
        return (f"{self.head!r} | {self.token!r} | top {self.top or '-'}"
                + (" | opening" if self.opening else "")
                + (" | closing" if self.closing else ""))


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
                 trace: list[Decision] | None = None, words: int | None = WORDS) -> list[str]:
    """Run the compile loop on ``prompt`` with ``policy``: the library calls it emits,
    ``print`` included (``halt`` follows them in the main program). ``trace`` collects
    every decision; ``words``: how much of a word run the views show (:data:`WORDS`;
    None: all of it). Raises CompileError for a decision the loop cannot take."""
    tokens = lex(prompt)
    last = max((i for i, t in enumerate(tokens) if t.kind is Kind.NUMBER), default=-1)
    stack: list[str] = []
    calls: list[str] = []
    head, pushed, opening = "", False, True
    for i, t in enumerate(tokens):  # every action but POP moves on, and POPs are bounded
        while True:                 # by the pushes: at most 2 · len(tokens) + 1 decisions
            view = View("" if pushed else head, t.shown(words), stack[-1] if stack else "",
                        opening and t.kind is not Kind.NUMBER, i > last)
            action = policy(view)
            if trace is not None:
                trace.append(Decision(view, action))
            name = action.name
            if name == "POP":
                if not stack or stack[-1] == "(":
                    raise CompileError(f"POP at {view}: no operation on top")
                calls += compose.step_calls(stack.pop())  # rsub: swap, sub
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
            head = t.shown(words)
        opening = opening and t.kind is not Kind.NUMBER
    raise CompileError("the prompt ended before FINISH")  # unreachable: END is a token


# ------------------------------------------------------------------------ the expert


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
        if top in compose.OPERATORS.values() and compose.precedence(top) >= \
                compose.precedence(op):
            return POP
        return PUSH(op)
    if tok == "<end>":
        return POP if top else FINISH
    return SKIP


def expert_actions(example: Example, words: int | None = WORDS) -> list[Decision]:
    """The expert's decisions for a composed example (a task of :data:`COMPOSED` operands:
    ``expr``, ``chain``), in the order the loop takes them; :func:`compile_main` with them
    emits the calls of the example's expert main program."""
    trace: list[Decision] = []
    kind = TASKS[example.task].operands
    if kind is Operands.EXPRESSION:
        compile_main(example.prompt, _expr_policy, trace, words)
        return trace
    if kind is not Operands.CHAIN:
        raise ValueError(f"task {example.task} has no compile phase (expr and chain do)")
    return _chain_actions(example.prompt, list(example.operands[1::2]), words)


def _chain_actions(prompt: str, steps: Sequence[str], words: int | None = WORDS
                   ) -> list[Decision]:
    """The expert's decisions for a chain prompt whose steps are ``steps``."""
    trace: list[Decision] = []
    tokens = lex(prompt)
    numbers = [i for i, t in enumerate(tokens) if t.kind is Kind.NUMBER]
    if len(numbers) != len(steps) + 1:
        raise ValueError(f"chain prompt {prompt!r}: {len(numbers)} numbers for "
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

    compile_main(prompt, policy, trace, words)
    return trace


def policy_of(decisions: Sequence[Decision]) -> dict[View, Action]:
    """The policy the decisions define, view → action; ValueError if one view has two
    actions (the view does not determine the decision)."""
    out: dict[View, Action] = {}
    for d in decisions:
        if out.setdefault(d.view, d.action) != d.action:
            raise ValueError(f"view {d.view} has two actions: {out[d.view]} and {d.action}")
    return out


# ------------------------------------------------------- the plan and the linked program

COMPOSED = (Operands.EXPRESSION, Operands.CHAIN)
"""The operand kinds whose tasks compile: their plan is :func:`compile_marker`, their
program the main program the compile phase builds, linked to the library."""

COMPILE_PROGRAM = "compile"
"""``programs/lib/compile.lasm``: what the plan phase emits for a composed prompt."""


def is_composed(task: str) -> bool:
    """Whether ``task``'s prompts compile (its operands are of a :data:`COMPOSED` kind)."""
    return TASKS[task].operands in COMPOSED


def compile_marker(alphabet: Alphabet = DEFAULT_ALPHABET) -> Program:
    """The plan of a composed prompt: ``compile.lasm`` in ``alphabet`` ("run the compile
    phase", never run itself)."""
    return load_program(COMPILE_PROGRAM, LIBRARY_DIR, alphabet)


def is_compile(program: Program) -> bool:
    """Whether an emitted plan is :func:`compile_marker` (its instructions after the two
    ports; the alphabet does not change them)."""
    return program.slots[2:] == compile_marker().slots[2:]


def plan_program(example: Example) -> Program:
    """What the plan phase must emit for ``example``: the compile marker for a composed
    task (but the program of the task that recalls its prompt, :func:`recalled_by`), its
    expert program for every other."""
    if is_composed(example.task) and recalled_by(example) is None:
        return compile_marker(example.alphabet)
    return run_program(example)


def run_program(example: Example) -> Program:
    """The program that runs for ``example``: its expert program, or for a composed prompt
    another task recalls (:func:`recalled_by`) that task's program."""
    task = recalled_by(example)
    if task is None:
        return expert_program(example)
    t = TASKS[task]
    return load_program(t.program, t.directory, example.alphabet)


def linked_program(calls: Sequence[str], alphabet: Alphabet = DEFAULT_ALPHABET) -> Program:
    """The program a compile run gives: the main program of ``calls`` (``print``
    included, :func:`compile_main`'s result) linked to the library in ``alphabet``.
    ValueError when it would hold more values than the library's stack."""
    return link(compose.program_text(calls), load_library(alphabet=alphabet))


def neural_policy(controller, memo: dict | None = None) -> Callable[[View], Action]:
    """A policy for :func:`compile_main`: the controller's compile head's most likely
    action on the view (``llamacpu.llm.compile_head``), memoised in ``memo`` by view (a
    prompt's views repeat, and so do a batch's; pass one memo per set of weights)."""
    import torch

    from llamacpu.llm.compile_head import ACTIONS, compile_logits

    memo = {} if memo is None else memo

    def policy(view: View) -> Action:
        got = memo.get(view)
        if got is None:
            with torch.no_grad():
                name = ACTIONS[int(compile_logits(controller, [view]).argmax(-1)[0])]
            got = PUSH(name[len("PUSH "):]) if name.startswith("PUSH ") else Action(name)
            memo[view] = got
        return got

    return policy


# ------------------------------------------------------------- every view, certified

_MOST_OPS = 4
"""Expressions of up to this many operators give every view an expression can show: a
view is a token, the top of the stack and (before the first push) a word run, and every
(token, top) pair occurs in some expression of at most 4 operators, nested parentheses
included (``((1 + 1) * 1 - 1) * 1`` is the smallest with a ``(`` on a ``(``)."""


def _trees(ops: int) -> Iterator[compose.Expr]:
    """Every expression tree of ``ops`` operators over the number 1."""
    if ops == 0:
        yield compose.Num("1")
        return
    for k in range(ops):
        for left, right in itertools.product(_trees(k), _trees(ops - 1 - k)):
            for op in compose.OPERATORS:
                yield compose.BinOp(op, left, right)


def _held_out_expr(trace: Sequence[Decision]) -> bool:
    """Whether an expression's decisions hold expr's held-out combination ('-' read with
    'mul' on the stack: :data:`HELD_OUT_COMBINATIONS`)."""
    return any(d.view.token == "-" and d.view.top == "mul" for d in trace)


def _held_out_chain(steps: Sequence[str]) -> bool:
    """Whether a chain's steps hold chain's held-out combination (mul, then rsub)."""
    return any(a == "mul" and b == "rsub" for a, b in zip(steps, steps[1:]))


@functools.cache
def _expression_views(trained_only: bool) -> tuple[tuple[View, Action], ...]:
    """The expert's decision on every view of every expression of 1-4 operators, as
    rendered (``compose.render``: the parentheses the shape needs, spaced operators);
    ``trained_only``: of those without the held-out combination."""
    out: dict[View, Action] = {}
    for ops in range(1, _MOST_OPS + 1):
        for tree in _trees(ops):
            trace: list[Decision] = []
            compile_main(compose.render(tree), _expr_policy, trace)
            if not (trained_only and _held_out_expr(trace)):
                out.update((d.view, d.action) for d in trace)
    return tuple(out.items())


def compile_views(task: str, templates: Iterable[str],
                  combinations: str = "any") -> dict[View, Action]:
    """Every view a prompt of ``task`` in one of ``templates`` can show, with the expert's
    decision: the views any prompt of any number of operations (and, for ``expr``, any
    nesting) shows in those wordings, so a policy right on all of them compiles every such
    prompt to its expert main program.

    ``expr``: the views of every expression of 1-4 operators (:data:`_MOST_OPS`), and those
    each wording adds (its words before and after, with each first token and each last
    operation: every expression of 1-2 operators in it). ``chain``: every chain of 1-3
    steps in each wording (the token between two numbers holds the end of one clause, the
    connector and the start of the next, with the first one's step on the stack; the
    first clause is phrased apart from later ones, so three steps pair two later clauses
    every way, and a fourth adds no view).

    ``combinations="trained"``: only the views of prompts without the task's held-out
    combination (:data:`HELD_OUT_COMBINATIONS`), which training can show; "any": all."""
    if combinations not in ("any", "trained"):
        raise ValueError(f"combinations must be 'any' or 'trained', got {combinations!r}")
    trained_only = combinations == "trained"
    kind = TASKS[task].operands
    if kind not in COMPOSED:
        raise ValueError(f"task {task} has no compile phase (expr and chain do)")
    from llamacpu.learn.tasks import render

    out: dict[View, Action] = {}
    if kind is Operands.EXPRESSION:
        out.update(_expression_views(trained_only))
        short = [compose.render(t) for n in (1, 2) for t in _trees(n)]
        for template in templates:
            for expr in short:
                trace: list[Decision] = []
                compile_main(render(template, kind, (expr,)), _expr_policy, trace)
                if not (trained_only and _held_out_expr(trace)):
                    out.update((d.view, d.action) for d in trace)
        return out
    from llamacpu.learn.composed import CHAIN_STEPS

    chains = [c for n in (1, 2, 3) for c in itertools.product(CHAIN_STEPS, repeat=n)
              if not (trained_only and _held_out_chain(c))]
    for template in templates:
        for steps in chains:
            operands = ("1", *itertools.chain.from_iterable((op, "1") for op in steps))
            prompt = render(template, kind, operands)
            out.update((d.view, d.action) for d in _chain_actions(prompt, steps))
    return out


@dataclass
class CompileCertificate:
    """The compile head checked on every view of some wordings (:func:`compile_views`)."""

    views: int                                       # views checked
    wrong: list[tuple[View, str, Action]] = field(default_factory=list)  # view, head, expert

    @property
    def certified(self) -> bool:
        return not self.wrong

    def describe(self) -> str:
        if self.certified:
            return f"compile head CERTIFIED on {self.views} views"
        v, got, want = self.wrong[0]
        return (f"compile head: {len(self.wrong)} of {self.views} views wrong, e.g. {v}: "
                f"{got} (the expert: {want})")


def certify_compile(controller, task: str, templates: Iterable[str],
                    batch: int = 512, combinations: str = "any") -> CompileCertificate:
    """Check the controller's compile head on every view of ``task`` in ``templates``
    (:func:`compile_views`, with ``combinations``): certified, every prompt of any length
    in those wordings (without the held-out combination, for "trained") compiles to the
    expert's main program (the loop, the lexer and the library are fixed code)."""
    import torch

    from llamacpu.llm.compile_head import ACTIONS, compile_logits

    table = compile_views(task, templates, combinations)
    views = list(table)
    cert = CompileCertificate(len(views))
    was = controller.training
    controller.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(views), batch):
                part = views[start:start + batch]
                got = compile_logits(controller, part).argmax(-1).tolist()
                for v, g in zip(part, got):
                    if ACTIONS[g] != str(table[v]):
                        cert.wrong.append((v, ACTIONS[g], table[v]))
    finally:
        controller.train(was)
    return cert


# ------------------------------------------------------------- held-out combinations

HELD_OUT_COMBINATIONS = {
    "expr": "a product followed by a subtraction ('2 * 3 - 4', '(1 + 2) * 3 - 4'): the "
            "decision at '-' with 'mul' on the stack",
    "chain": "a step that subtracts the result from a number right after a step that "
             "multiplies ('multiply by 6, then subtract the result from 3000')",
}
"""What training never contains, per composed task (``curriculum`` rejects a training
example that holds one; ``eval --combinations held_out`` draws only such problems). Each
needs a decision on a (token, stack top) pair training never showed: the compile head must
compose what it learned of the token and of the top apart."""


def held_out_combination(example: Example) -> bool:
    """Whether a composed example holds its task's held-out combination
    (:data:`HELD_OUT_COMBINATIONS`); False for every other task."""
    kind = TASKS[example.task].operands
    if kind is Operands.EXPRESSION:
        trace: list[Decision] = []
        compile_main(example.prompt, _expr_policy, trace)
        return _held_out_expr(trace)
    if kind is Operands.CHAIN:
        return _held_out_chain(example.operands[1::2])
    return False


# ------------------------------------------------------ prompts another task recalls

_NUMBER_RUN = re.compile(r"[0-9]+")


@functools.cache
def _skeletons(alphabet: Alphabet) -> dict[str, str]:
    """{a wording with its numbers cut out: the task} over every wording (all splits) of
    the tasks that read two numbers and have a program of their own."""
    out: dict[str, str] = {}
    for name, task in TASKS.items():
        if task.operands is not Operands.NUMBERS:
            continue
        splits = ["train", "heldout", *(("grammar_train", "recombined", "new_words")
                                         if task.grammar else ())]
        for split in splits:
            for template in task.templates(split, alphabet):
                out.setdefault(template.replace("{a}", "\0").replace("{b}", "\0"), name)
    return out


def recalled_by(example: Example) -> str | None:
    """The task whose own program a composed example's prompt is a prompt of ("calculate
    12 + 35" is add's as well as expr's; "add 12 and 35" chain's and add's), else None.
    Such a prompt belongs to that task: recalling its certified program beats compiling
    one, and one prompt must not be supervised with two plans. So its plan and its run are
    that task's program (:func:`plan_program`, :func:`run_program`), in training too: a
    composed stage then supervises the line between recalling and compiling ("calculate
    12 + 35" against "calculate 12 + 35 * 4") with both sides."""
    if not is_composed(example.task):
        return None
    return _skeletons(example.alphabet).get(_NUMBER_RUN.sub("\\0", example.prompt))
