"""The controller's bounded view of a prompt (part of layer 8 of docs/architecture.md).

The expert programs read their data (numbers, lists, text payloads) from the machine's input
region, which always holds the whole prompt. What the controller's LM needs from a prompt is
its shape: the wording, where the operands stand and what kind they are. A
:class:`PromptView` keeps the shape and bounds every payload, so a prompt of any length has a
view that training covered; the plan and execute phases never meet a position or a run
longer than training showed them. One lexer, three kinds of payload, task-agnostic:

=======  ===============================================  ===================  ======
payload  what it is                                       bounded to           field
=======  ===============================================  ===================  ======
number   a maximal run of digits                          its first N digits   digits
list     numbers joined by ``", "``, ``","`` or ``" "``   its first N items    items
text     everything after the first ``':'`` (the spaces   its first N          chars
         right after it are wording)                      characters
=======  ===============================================  ===================  ======

A prompt of many operands (an expression, a chain of instructions: ``operands`` or more
number and list payloads) reads only up to the end of its ``operands``-th, each of them a
single ``'0'`` (with ``abstract``), its brackets dropped: ``"calculate (12 + 345) * 6 - 78"``
and ``"calculate 1 + 2 * 3"`` read alike, as ``"calculate 0 + 0 * 0"``. The plan and
execute phases of such a prompt do the same thing at every number of operations (emit the
compile marker, run the linked program), and the compile phase, which reads the structure,
has its own bounded views (:mod:`llamacpu.learn.compiling`); so a prompt of eight
operations shows them a view of two, one that training at two operations can show. Lengths
and brackets are dropped because a longer expression's prefix can have a shape no shorter
expression has ("9 - (10 - 5) * 100": "9 - 10 - 5" has a negative intermediate); its
operators alone are shapes any two operations can take. Prompts of fewer payloads (every
task's but the composed ones': they have at most two) read as below, unchanged.

With ``abstract`` the payload's content is dropped as well as cut: each kept digit becomes
``'0'`` and each kept text character ``'_'``. The view then depends on the wording and on
each payload's length up to its bound only, so a wording has a handful of views (a
two-number wording at ``digits=3``: nine), and a certificate can check every one of them
(:func:`llamacpu.learn.certify.all_views`): a proof for every prompt of those wordings at every
length, where a content-keeping view has ~10^6 per wording and a certificate can only sample.

Definitions ``x>y`` (a digit function's table, written by the plan into a WEIGHTS slot:
code, not data) are kept verbatim, and a prompt whose text after its first ``':'`` opens
with a table of them (two or more, space-separated) has no text payload (``"f: 0>3 1>5 ... ;
apply f to 40917"``: the ``':'`` names the function). Any other ``':'`` starts a text
payload, whatever the wording before it.

    >>> v = PromptView(digits=3, items=4, chars=4, abstract=True, operands=3)
    >>> v("add 1234567 and 89"), v("sort 3 1 4 1 5 9 2"), v("reverse:  hello world")
    ('add 000 and 00', 'sort 0 0 0 0', 'reverse:  ____')
    >>> PromptView(digits=3, items=0, chars=0, abstract=False)("add 1234567 and 89")
    'add 123 and 89'
    >>> v("calculate (12 + 345) * 6 - 78?"), v("calculate 12 + 345?")
    ('calculate 0 + 0 * 0', 'calculate 00 + 000?')

The last one is the digit window alone (``digit_window`` of checkpoints written before the
other fields existed), which :meth:`PromptView.digit_window` builds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PromptView", "AS_TYPED", "controller_view"]

_DEFN = r"(?P<defn>(?<!\d)\d>\d(?!\d))"
_LIST = r"(?P<list>\d+(?:(?:, ?| )\d+)+)"
_NUM = r"(?P<num>\d+)"
_TABLE = re.compile(r" *\d>\d(?: \d>\d)+(?!\d)")
_SEP = re.compile(r"(, ?| )")
_LEXERS = {with_lists: re.compile("|".join((_DEFN, _LIST, _NUM) if with_lists else (_DEFN, _NUM)))
           for with_lists in (False, True)}


@dataclass(frozen=True)
class PromptView:
    """How much of each payload the controller's LM reads (0: all of it)."""

    digits: int = 3         # digits of each number
    items: int = 4          # items of each list of numbers
    chars: int = 4          # characters of the text payload after the first ':' (0: no text
    #                         payload: a ':' is wording)
    abstract: bool = True   # drop payload content: kept digits read '0', text characters '_'
    operands: int = 3       # a prompt with this many number/list payloads or more reads up
    #                         to the end of its operands-th, brackets dropped, each payload
    #                         one '0' (abstract); 0: no operand window

    def __post_init__(self) -> None:
        for name in ("digits", "items", "chars", "operands"):
            if getattr(self, name) < 0:
                raise ValueError(f"the view's {name} window must be >= 0 (0: unbounded), got "
                                 f"{getattr(self, name)}")

    @classmethod
    def digit_window(cls, digits: int) -> PromptView:
        """Digit runs cut to ``digits``, everything else read as typed (0: the whole
        prompt)."""
        return cls(digits=digits, items=0, chars=0, abstract=False, operands=0)

    @property
    def bounded(self) -> bool:
        """Whether every payload is bounded, so views of any length come from a finite set."""
        return bool(self.digits and self.items and self.chars)

    def describe(self) -> str:
        def w(n: int) -> str:
            return str(n) if n else "all"
        return (f"digits {w(self.digits)}, items {w(self.items)}, chars {w(self.chars)}"
                f"{f', operands {self.operands}' if self.operands else ''}"
                f"{', content abstracted' if self.abstract else ''}")

    def __call__(self, prompt: str) -> str:
        """The prompt as the LM reads it."""
        head, colon, rest = prompt.partition(":") if self.chars else (prompt, "", "")
        if colon and _TABLE.match(rest):                     # code after the ':', not data
            head, colon, rest = prompt, "", ""
        lexer = _LEXERS[bool(self.items)]
        if self.operands:
            payloads = [m for m in lexer.finditer(head) if m.lastgroup != "defn"]
            if len(payloads) >= self.operands:
                return self._operand_window(prompt[: payloads[self.operands - 1].end()],
                                            lexer)
        view = lexer.sub(self._token, head)
        if not colon:
            return view
        body = rest.lstrip(" ")
        lead = rest[: len(rest) - len(body)]
        body = body[: self.chars]
        return view + colon + lead + ("_" * len(body) if self.abstract else body)

    def _operand_window(self, text: str, lexer: re.Pattern) -> str:
        def payload(m: re.Match) -> str:
            return m.group() if m.lastgroup == "defn" else "0" if self.abstract else \
                self._token(m)
        return lexer.sub(payload, text).replace("(", "").replace(")", "")

    def _number(self, digits: str) -> str:
        kept = digits[: self.digits] if self.digits else digits
        return "0" * len(kept) if self.abstract else kept

    def _token(self, m: re.Match) -> str:
        if m.lastgroup == "defn":
            return m.group()
        if m.lastgroup == "num":
            return self._number(m.group())
        parts = _SEP.split(m.group())                   # item, sep, item, sep, ..., item
        parts = parts[: 2 * self.items - 1]
        return "".join(self._number(p) if i % 2 == 0 else p for i, p in enumerate(parts))


AS_TYPED = PromptView.digit_window(0)
"""The view that reads the whole prompt as typed (no window)."""


def controller_view(prompt: str, view: PromptView | int) -> str:
    """``prompt`` as the controller's LM reads it; an int is a digit window
    (:meth:`PromptView.digit_window`)."""
    if isinstance(view, int):
        view = PromptView.digit_window(view)
    return view(prompt)
