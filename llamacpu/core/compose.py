"""From arithmetic expressions and instruction chains to main programs for the library.

A main program (:mod:`llamacpu.core.link`) is one ``call`` of a library routine per
operation of the prompt, then ``halt``; its size grows with the number of operations and
never with the digits. This module is the symbolic compiler a learned controller is
measured against:

- expressions over non-negative integers with ``+ - *`` and parentheses, the usual
  precedence and left associativity: :func:`parse_expr` (text → :data:`Expr` tree),
  :func:`to_postfix` (shunting-yard), :func:`main_program` (postfix → ``.lasm`` text),
  :func:`evaluate` (Python's answer), :func:`intermediates` and :func:`is_valid` (every
  intermediate result non-negative, every product with a small factor), :func:`render`
  (tree → text with exactly the parentheses it needs) and :func:`draw_expression` (a
  seeded generator of valid expressions);
- left-to-right chains ("add 12 and 345, then multiply by 6, then subtract 78"): a list of
  operation names over the numbers in textual order, :func:`chain_program`,
  :func:`evaluate_chain` and :func:`draw_chain`; ``"rsub"`` ("subtract the result from
  78") names the operand order reversed, compiled with ``swap``.

Numbers reach the machine through the input, not the program: ``num`` reads the next
number of the prompt, and a postfix form lists the numbers in the same left-to-right order
as the text, so the main program needs no operands at all.

    >>> to_postfix("(12 + 345) * 6 - 78")
    ('12', '345', '+', '6', '*', '78', '-')
    >>> print(main_program(to_postfix("(12 + 345) * 6 - 78")), end="")
            call  num
            call  num
            call  add
            call  num
            call  mul
            call  num
            call  sub
            call  print
            halt
    >>> evaluate("(12 + 345) * 6 - 78"), chain_calls(["add", "rsub"])
    (2064, ['num', 'num', 'add', 'num', 'swap', 'sub', 'print'])
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from llamacpu.core.isa import default_out_size

__all__ = [
    "Num", "BinOp", "Expr", "Postfix", "OPERATORS", "CHAIN_OPS", "STACK_ENTRIES", "tokens",
    "step_calls", "precedence",
    "to_postfix", "parse_expr", "render", "evaluate", "intermediates", "is_valid",
    "postfix_calls", "main_program", "program_text", "stack_depth", "chain_calls",
    "chain_program", "evaluate_chain", "scratch_size", "out_size", "draw_expression",
    "draw_chain",
]

OPERATORS = {"+": "add", "-": "sub", "*": "mul"}
"""Each operator of an expression and the library routine that computes it."""
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}
_SYMBOL = {name: symbol for symbol, name in OPERATORS.items()}
_APPLY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "max": max, "min": min}
CHAIN_OPS = tuple(_APPLY)
"""The operations a chain step may name; ``"r" + op`` takes the operands the other way round
(``rsub``: the number minus the result so far)."""
_COMMUTATIVE = frozenset({"add", "mul", "max", "min"})
_STACK_EFFECT = {"num": (0, 1), "dup": (1, 1), "swap": (2, 0), "print": (1, -1),
                 **{op: (2, -1) for op in _APPLY}}
"""Each routine's (values it needs on the stack, change in their number)."""
STACK_ENTRIES = 16
"""The library's value stack (``_stack`` in ``programs/lib/lib.lasm``): a main program holds
at most this many values at once."""


# ---------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Num:
    """A number as written (``"007"`` keeps its zeros; its value is 7)."""

    text: str

    @property
    def value(self) -> int:
        return int(self.text)


@dataclass(frozen=True)
class BinOp:
    """``left op right``, ``op`` one of ``+ - *``."""

    op: str
    left: Expr
    right: Expr


Expr = Num | BinOp
Postfix = tuple[str, ...]
"""Numbers (digit strings) and operators (``+ - *``), in evaluation order."""


def tokens(text: str) -> list[tuple[str, int]]:
    """``(token, position)`` pairs: numbers (runs of digits), ``+ - * ( )``; spaces are
    skipped. ValueError for any other character."""
    out = []
    for m in re.finditer(r"[0-9]+|\S", text):  # [0-9]: ASCII digits only
        tok = m.group()
        if not "0" <= tok[0] <= "9" and tok not in "+-*()":
            raise ValueError(f"unexpected character {tok!r} at position {m.start()} of "
                             f"{text!r} (an expression has numbers, + - * and parentheses)")
        out.append((tok, m.start()))
    return out


def to_postfix(expr: str | Expr) -> Postfix:
    """The postfix form of an expression text (shunting-yard) or tree (post-order).

    ValueError, naming the position, for a malformed text: a missing number or operator,
    an unmatched parenthesis, a sign (numbers are non-negative), an empty expression.
    """
    if not isinstance(expr, str):
        return tuple(_postorder(expr))
    text = expr
    out: list[str] = []
    ops: list[tuple[str, int]] = []  # operators and '(' waiting, with their positions
    want_number = True               # a number or '(' comes next (else an operator or ')')
    for tok, pos in tokens(text):
        if "0" <= tok[0] <= "9" or tok == "(":
            if not want_number:
                raise ValueError(f"expected an operator or ')' at position {pos} of {text!r}, "
                                 f"found {tok!r}")
            if tok == "(":
                ops.append((tok, pos))
            else:
                out.append(tok)
                want_number = False
        elif want_number:
            sign = " (numbers have no sign)" if tok in "+-" else ""
            raise ValueError(f"expected a number or '(' at position {pos} of {text!r}, "
                             f"found {tok!r}{sign}")
        elif tok == ")":
            while ops and ops[-1][0] != "(":
                out.append(ops.pop()[0])
            if not ops:
                raise ValueError(f"unmatched ')' at position {pos} of {text!r}")
            ops.pop()
        else:  # an operator: pop those that bind at least as tightly (left associativity)
            while ops and ops[-1][0] != "(" and _PRECEDENCE[ops[-1][0]] >= _PRECEDENCE[tok]:
                out.append(ops.pop()[0])
            ops.append((tok, pos))
            want_number = True
    if want_number:
        what = "empty expression" if not out and not ops else "the expression ends early"
        raise ValueError(f"{what}: expected a number at position {len(text)} of {text!r}")
    while ops:
        tok, pos = ops.pop()
        if tok == "(":
            raise ValueError(f"unclosed '(' at position {pos} of {text!r}")
        out.append(tok)
    return tuple(out)


def _postorder(e: Expr) -> Iterator[str]:
    if isinstance(e, Num):
        yield e.text
        return
    yield from _postorder(e.left)
    yield from _postorder(e.right)
    yield e.op


def _tree(postfix: Sequence[str]) -> Expr:
    """The tree of a well-formed postfix sequence."""
    stack: list[Expr] = []
    for tok in postfix:
        if tok in _PRECEDENCE:
            if len(stack) < 2:
                raise ValueError(f"postfix {list(postfix)}: {tok!r} has fewer than two operands")
            right = stack.pop()
            stack.append(BinOp(tok, stack.pop(), right))
        elif tok.isdigit() and tok.isascii():
            stack.append(Num(tok))
        else:
            raise ValueError(f"postfix {list(postfix)}: {tok!r} is neither a number nor + - *")
    if len(stack) != 1:
        raise ValueError(f"postfix {list(postfix)} leaves {len(stack)} values, not one")
    return stack[0]


def parse_expr(text: str) -> Expr:
    """The tree of an expression text (ValueError if malformed: see :func:`to_postfix`)."""
    return _tree(to_postfix(text))


def _expr(expr: str | Expr) -> Expr:
    return parse_expr(expr) if isinstance(expr, str) else expr


def render(expr: Expr) -> str:
    """The text of a tree with exactly the parentheses its shape needs: around a child that
    binds more loosely than its parent, and around a right child of the same precedence
    (``a - (b - c)``, ``a + (b + c)``), so ``parse_expr(render(e)) == e``."""
    if isinstance(expr, Num):
        return expr.text
    left, right = render(expr.left), render(expr.right)
    p = _PRECEDENCE[expr.op]
    if isinstance(expr.left, BinOp) and _PRECEDENCE[expr.left.op] < p:
        left = f"({left})"
    if isinstance(expr.right, BinOp) and _PRECEDENCE[expr.right.op] <= p:
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def intermediates(expr: str | Expr) -> list[int]:
    """The result of every operation, in evaluation (postfix) order; the last is the
    value (none for a lone number)."""
    out: list[int] = []

    def value(e: Expr) -> int:
        if isinstance(e, Num):
            return e.value
        a, b = value(e.left), value(e.right)
        out.append(_APPLY[OPERATORS[e.op]](a, b))
        return out[-1]

    value(_expr(expr))
    return out


def evaluate(expr: str | Expr) -> int:
    """Python's answer: the exact value of an expression text or tree."""
    e = _expr(expr)
    return e.value if isinstance(e, Num) else intermediates(e)[-1]


def is_valid(expr: str | Expr, small_factor_digits: int | None = None) -> bool:
    """Whether the library computes ``expr`` within its contract: every intermediate
    result is non-negative (``sub``'s a ≥ b); with ``small_factor_digits``, also every
    product has a factor of at most that many digits (which keeps ``mul`` linear in the
    other factor)."""
    e = _expr(expr)
    if any(v < 0 for v in intermediates(e)):
        return False
    if small_factor_digits is None:
        return True
    limit = 10 ** small_factor_digits

    def products_ok(e: Expr) -> bool:
        if isinstance(e, Num):
            return True
        if e.op == "*" and min(evaluate(e.left), evaluate(e.right)) >= limit:
            return False
        return products_ok(e.left) and products_ok(e.right)

    return products_ok(e)


# ---------------------------------------------------------------------- main programs


def postfix_calls(postfix: Sequence[str] | str) -> list[str]:
    """The routines a postfix form calls: ``num`` per number, one per operator, ``print``.
    A string is an expression text, turned into postfix first."""
    if isinstance(postfix, str):
        postfix = to_postfix(postfix)
    _tree(postfix)  # well-formed, or ValueError
    return [OPERATORS.get(tok, "num") for tok in postfix] + ["print"]


def stack_depth(calls: Sequence[str]) -> int:
    """The most values a call sequence holds on the library's stack at once (ValueError if
    it pops an empty stack or names no routine)."""
    depth = high = 0
    for c in calls:
        if c not in _STACK_EFFECT:
            raise ValueError(f"no library routine {c!r} (known: {', '.join(_STACK_EFFECT)})")
        needs, effect = _STACK_EFFECT[c]
        if depth < needs:
            raise ValueError(f"{c} needs {needs} value(s) on the stack, has {depth}, in "
                             f"{list(calls)}")
        depth += effect
        high = max(high, depth)
    return high


def program_text(calls: Sequence[str]) -> str:
    """The ``.lasm`` text of a main program: one ``call`` per routine, then ``halt``.
    ValueError if it would need more than :data:`STACK_ENTRIES` stack entries."""
    depth = stack_depth(calls)
    if depth > STACK_ENTRIES:
        raise ValueError(f"the program holds {depth} values at once; the library's stack has "
                         f"{STACK_ENTRIES} entries")
    return "".join(f"        call  {c}\n" for c in calls) + "        halt\n"


def main_program(postfix: Sequence[str] | str) -> str:
    """The main program of a postfix form (or of an expression text): numbers are read in
    order by ``num``, so it has 2·ops + 3 slots whatever the digits."""
    return program_text(postfix_calls(postfix))


# ---------------------------------------------------------------------- chains


def _chain_op(op: str) -> tuple[str, bool]:
    """(routine, reversed) of a chain step name: ``"sub"``, ``"rsub"``."""
    rev = op.startswith("r") and op[1:] in _APPLY
    name = op[1:] if rev else op
    if name not in _APPLY:
        raise ValueError(f"unknown chain operation {op!r} (known: "
                         f"{', '.join(CHAIN_OPS)}, and each with 'r' for the reversed order)")
    return name, rev


def step_calls(op: str) -> list[str]:
    """The routines that apply one operation (a chain step's name, ``"rsub"`` included) to
    the two values on top of the stack: the routine, ``swap`` first when the operation is
    reversed and not commutative."""
    name, rev = _chain_op(op)
    return ["swap", name] if rev and name not in _COMMUTATIVE else [name]


def precedence(op: str) -> int:
    """How tightly an expression's operation binds (``"add"``, ``"sub"``: 1; ``"mul"``:
    2), by its routine's name."""
    return _PRECEDENCE[_SYMBOL[op]]


def chain_calls(ops: Sequence[str]) -> list[str]:
    """The routines of a left-to-right chain over ``len(ops) + 1`` numbers: the first
    number, then per step the next number and the operation (``swap`` first when the step
    is reversed and the operation is not commutative), then ``print``."""
    calls = ["num"]
    for op in ops:
        calls += ["num", *step_calls(op)]
    return calls + ["print"]


def chain_program(ops: Sequence[str]) -> str:
    """The main program of a chain (:func:`chain_calls`)."""
    return program_text(chain_calls(ops))


def evaluate_chain(ops: Sequence[str], numbers: Sequence[int]) -> int:
    """Python's answer for a chain: ``op_k(result, n_k)``, or ``op_k(n_k, result)`` for a
    reversed step. ValueError if a difference goes negative (outside the library's
    contract) or the counts do not match."""
    if len(numbers) != len(ops) + 1:
        raise ValueError(f"a chain of {len(ops)} operations takes {len(ops) + 1} numbers, "
                         f"got {len(numbers)}")
    acc = numbers[0]
    for op, n in zip(ops, numbers[1:]):
        name, rev = _chain_op(op)
        a, b = (n, acc) if rev else (acc, n)
        acc = _APPLY[name](a, b)
        if acc < 0:
            raise ValueError(f"{op} of {a} and {b} is negative")
    return acc


# ---------------------------------------------------------------------- memory


def scratch_size(calls: Sequence[str], text: str) -> int:
    """The scratch slots a main program's ``calls`` touch on the prompt ``text`` (its numbers
    are the maximal digit runs, read in order): each routine's use is replayed on Python
    integers (``num`` L+1 slots, ``add`` max(la, lb)+2, ``sub`` la+1, ``mul`` 2·la+lb+3
    with its row buffer, ``print`` L+1), and the most slots the regions reach is the
    answer: the composed tasks' ``out_size`` (``programs/expr.py``, ``programs/chain.py``)."""
    numbers = iter(int(m) for m in re.findall(r"[0-9]+", text))
    stack: list[int] = []
    top = need = 0  # the heap top, and the most slots touched
    for c in calls:
        if c == "num":
            try:
                stack.append(next(numbers))
            except StopIteration:
                raise ValueError(f"more num calls than numbers in {text!r}") from None
            size = len(str(stack[-1])) + 1
            need, top = max(need, top + size), top + size
        elif c in _APPLY:
            b, a = stack.pop(), stack.pop()
            la, lb = len(str(a)), len(str(b))
            r = _APPLY[c](a, b)
            if r < 0:
                raise ValueError(f"sub of {a} and {b} is negative")
            stack.append(r)
            if c in ("add", "sub", "mul"):
                touched = {"add": max(la, lb) + 2, "sub": la + 1, "mul": 2 * la + lb + 3}[c]
                need, top = max(need, top + touched), top + len(str(r)) + 1
        elif c == "swap":
            stack[-2:] = stack[:-3:-1]
        elif c == "dup":
            stack.append(stack[-1])
        elif c == "print":
            need = max(need, top + len(str(stack.pop())) + 1)
        else:
            raise ValueError(f"no library routine {c!r}")
    return need


def out_size(calls: Sequence[str], text: str) -> int:
    """Scratch slots enough for a main program's ``calls`` on the prompt ``text``: the
    loader's default, or more when the library's regions need it (:func:`scratch_size`)."""
    return max(default_out_size(len(text)), scratch_size(calls, text))


# ---------------------------------------------------------------------- drawing


def _number(rng: random.Random, digits: int) -> Num:
    """A number of 1..digits digits, no leading zeros (uniform length, then digits)."""
    n = rng.randint(1, digits)
    if n == 1:
        return Num(str(rng.randrange(10)))
    return Num(str(rng.randint(1, 9)) + "".join(str(rng.randrange(10)) for _ in range(n - 1)))


def _flat(rng: random.Random, ops: int, digits: int, small: int) -> Expr:
    """An expression that needs no parentheses: terms (products) joined by + and -."""
    sizes, size = [], 1               # factors per term
    for _ in range(ops):
        if rng.random() < 1 / 3:
            size += 1
        else:
            sizes.append(size)
            size = 1
    sizes.append(size)
    expr: Expr | None = None
    for size in sizes:
        big = rng.randrange(min(size, 2))  # the one large factor: the first or the second,
        factors = [_number(rng, digits if i == big else min(digits, small))  # so every
                   for i in range(size)]                                       # product
        term: Expr = factors[0]                                        # has a small factor
        for f in factors[1:]:
            term = BinOp("*", term, f)
        if expr is None:
            expr = term
        else:
            op = rng.choice("+-")
            expr = BinOp("+" if op == "-" and evaluate(expr) < evaluate(term) else op,
                         expr, term)
    assert expr is not None
    return expr


def _nested(rng: random.Random, ops: int, digits: int, small: int) -> Expr:
    """A random tree of ``ops`` operators: the small side of a product is a subtree of at
    most two operators whose value has at most ``small`` digits; a difference's larger
    operand goes left."""
    if ops == 0:
        return _number(rng, digits)
    op = rng.choice("+-*")
    if op == "*":
        m = rng.randint(0, min(ops - 1, small - 1, 2))
        while True:
            side = _nested(rng, m, max(1, min(digits, small) // (m + 1)), small)
            if evaluate(side) < 10 ** small:
                break
        rest = _nested(rng, ops - 1 - m, digits, small)
        return BinOp("*", side, rest) if rng.random() < 0.5 else BinOp("*", rest, side)
    k = rng.randrange(ops)
    left, right = _nested(rng, k, digits, small), _nested(rng, ops - 1 - k, digits, small)
    if op == "-" and evaluate(left) < evaluate(right):
        left, right = right, left
    return BinOp(op, left, right)


def _full(rng: random.Random, digits: int) -> int:
    """A number of exactly ``digits`` digits (0..9 for one digit, else no leading zero)."""
    return rng.randrange(10) if digits == 1 else rng.randrange(10 ** (digits - 1), 10 ** digits)


def _replaced(e: Expr, path: Sequence[int], leaf: Num) -> Expr:
    """``e`` with the number at ``path`` (0 left, 1 right, from the root) replaced."""
    if not path:
        return leaf
    assert isinstance(e, BinOp)
    if path[0] == 0:
        return BinOp(e.op, _replaced(e.left, path[1:], leaf), e.right)
    return BinOp(e.op, e.left, _replaced(e.right, path[1:], leaf))


def _widened(rng: random.Random, expr: Expr, digits: int, small: int) -> Expr | None:
    """``expr`` with one number redrawn with exactly ``digits`` digits, at a place where a
    larger number cannot make a difference negative (never on the right of a ``-``) and
    every product keeps a small factor; None when no number can be."""
    paths: list[tuple[int, ...]] = []

    def walk(e: Expr, path: tuple[int, ...]) -> None:
        if isinstance(e, Num):
            paths.append(path)
            return
        walk(e.left, (*path, 0))
        if e.op != "-":
            walk(e.right, (*path, 1))

    walk(expr, ())
    rng.shuffle(paths)
    for path in paths:
        wide = _replaced(expr, path, Num(str(_full(rng, digits))))
        if is_valid(wide, small):
            return wide
    return None


def draw_expression(rng: random.Random, ops: int, digits: int, parens: bool,
                    small_factor_digits: int = 4, *, full_width: bool = False) -> str:
    """A random expression text with exactly ``ops`` operators and numbers of 1..``digits``
    digits, that :func:`is_valid` accepts with ``small_factor_digits`` (every intermediate
    non-negative, one factor of every product at most that many digits) and that fits the
    library's stack. Without ``parens`` it has none; with them (and at least two
    operators) it has at least one pair, each changing the order of evaluation. With
    ``full_width``, at least one number has exactly ``digits`` digits (a drawn expression
    without one has a number redrawn that wide where that keeps it valid: the task
    ``expr``'s length, like add's, is its longest number)."""
    if ops < 0 or digits < 1 or small_factor_digits < 1:
        raise ValueError(f"need ops >= 0, digits >= 1, small_factor_digits >= 1; got {ops}, "
                         f"{digits}, {small_factor_digits}")
    for _ in range(1000):
        if parens and ops >= 2:
            expr = _nested(rng, ops, digits, small_factor_digits)
        else:
            expr = _flat(rng, ops, digits, small_factor_digits)
        text = render(expr)
        if parens and ops >= 2 and "(" not in text:
            continue
        if is_valid(expr, small_factor_digits) \
                and stack_depth(postfix_calls(to_postfix(expr))) <= STACK_ENTRIES:
            if full_width and max(map(len, re.findall(r"[0-9]+", text))) < digits:
                wide = _widened(rng, expr, digits, small_factor_digits)
                if wide is None:
                    continue
                text = render(wide)
            return text
    raise RuntimeError(f"no valid expression of {ops} operators drawn in 1000 tries")


def _chain_operand(rng: random.Random, op: str, acc: int, digits: int, full: bool,
                   small: int) -> int | None:
    """The number a chain step ``op`` applies to the result so far ``acc``: 1..``digits``
    digits (exactly ``digits`` when ``full``), within the library's contract (a difference
    never negative, a product with a factor below 10^small); None when there is none."""
    top = 10 ** digits - 1
    if op in ("add", "mul"):
        cap = digits if op == "add" or digits <= small or acc < 10 ** small else small
        if full and cap < digits:
            return None
        return _full(rng, digits if full else rng.randint(1, cap))
    if op == "sub":  # n ≤ acc
        hi = min(acc, top)
        if full and len(str(hi)) < digits:
            return None
        width = digits if full else rng.randint(1, len(str(hi)))
        return rng.randint(0 if width == 1 else 10 ** (width - 1), min(hi, 10 ** width - 1))
    if op == "rsub":  # n ≥ acc
        if acc > top:
            return None
        width = digits if full else rng.randint(len(str(acc)), digits)
        return rng.randint(max(acc, 0 if width == 1 else 10 ** (width - 1)), 10 ** width - 1)
    raise ValueError(f"draw_chain draws add, sub, mul and rsub; got {op!r}")


def draw_chain(rng: random.Random, ops: int, digits: int, small_factor_digits: int = 4,
               operations: Sequence[str] = ("add", "sub", "mul", "rsub"),
               ) -> tuple[list[str], list[str]]:
    """A random chain of ``ops`` steps: (operation names from ``operations``, ``ops + 1``
    numbers as text in textual order), which :func:`evaluate_chain` takes. Every number has
    1..``digits`` digits and one exactly ``digits``; every intermediate result is
    non-negative (a ``sub`` step's number is at most the result so far, an ``rsub`` step's
    at least), and every product has a factor of at most ``small_factor_digits`` digits.
    Each step's operation is uniform among those of ``operations`` that can follow."""
    if ops < 1 or digits < 1 or small_factor_digits < 1:
        raise ValueError(f"need ops >= 1, digits >= 1, small_factor_digits >= 1; got {ops}, "
                         f"{digits}, {small_factor_digits}")
    for _ in range(1000):
        wide = rng.randrange(ops + 1)  # the number drawn exactly `digits` wide
        acc = _full(rng, digits if wide == 0 else rng.randint(1, digits))
        names: list[str] = []
        numbers = [acc]
        for i in range(1, ops + 1):
            order = list(operations)
            rng.shuffle(order)
            for op in order:
                n = _chain_operand(rng, op, acc, digits, i == wide, small_factor_digits)
                if n is not None:
                    break
            else:
                break  # no operation can follow: draw again
            names.append(op)
            numbers.append(n)
            acc = evaluate_chain([op], [acc, n])
        else:
            return names, [str(n) for n in numbers]
    raise RuntimeError(f"no chain of {ops} steps over {list(operations)} drawn in 1000 tries")
