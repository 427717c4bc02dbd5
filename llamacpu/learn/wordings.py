"""Wordings by construction: a small grammar per task of how people ask, and its splits.

A task's hand-written templates (``Task.train_templates``) are a few ways of asking; people
ask in thousands. A :class:`Grammar` generates them from parts:

- **frames**: the structures of a request, with the operands' placeholders and slots,
  e.g. ``"<verb> {a} and {b}"`` (imperative), ``"<what> {a} <plus> {b}"`` (question),
  ``"{a} <sym> {b}"`` (symbols) or ``"<fn>({a}, {b})"``;
- **words**: what fills each slot (``verb``: add, sum up, total ...);
- **wrappers**, shared by every task and chosen by the frame's kind: a politeness or filler
  prefix ("please ", "can you ") and an ending ("", ".", "!", "?");
- **case**: as written, or with a capital first letter (kept only where the alphabet has
  capitals: ``Grammar.wordings(alphabet)`` drops what the alphabet cannot write).

Every frame, word and wrapper is either *seen* or *new*. A wording is the product of one
choice of each; its parts are named (``frame:3``, ``verb:sum up``, ``prefix:please ``,
``end:.``, ``case:capital``). The splits (:func:`split_of`):

- ``new_words``: the wording has at least one new part — synonyms and structures training
  never contains;
- ``recombined``: every part seen, in a combination training never contains: a stable
  hash of the wording's text puts a fraction of the seen combinations here, and then any
  wording whose part would otherwise be missing from training is moved back
  (:meth:`Grammar.splits` checks that every seen part occurs in training);
- ``train``: the rest.

Case never separates training from evaluation: a capitalised wording is in the split of its
as-written form (the hash and the repair above decide among the as-written wordings), so
the capitalised form of a held-out wording is held out too, and a wording the default
alphabet writes is in the same split whether or not the alphabet has capitals. An
alphabet's other characters can only add wordings (``{a} ^ {b}`` needs ``^``); the
partition is made among the wordings an alphabet writes, so every seen part it can write
is trained (``tests/test_wordings.py`` checks that each task's default-alphabet wordings
keep their splits in the printable alphabet).

A frame names its operands in the order the text has them; ``order`` says which operand
comes first (``"ba"``: ``"subtract {b} from {a}"``), so a program can be chosen that reads
them in its own order.

    >>> g = Grammar(frames=("<verb> {a} and {b}", Frame("{a} <sym> {b}", kind="symbols")),
    ...             words={"verb": ("add", "sum"), "sym": ("+",)},
    ...             new_words={"verb": ("total",)})
    >>> sorted({w.split for w in g.wordings()})
    ['new_words', 'recombined', 'train']
    >>> [w.split for w in g.wordings() if w.text in ("add {a} and {b}", "total {a} and {b}")]
    ['train', 'new_words']
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from llamacpu.core.isa import Alphabet

__all__ = ["Frame", "Grammar", "Wording", "WORDING_SPLITS", "KINDS", "PREFIXES", "ENDINGS",
           "bits_grammar", "binary_op_grammar"]

WORDING_SPLITS = ("train", "recombined", "new_words")
"""The splits of a grammar's wordings (module docstring)."""

KINDS = ("imperative", "question", "symbols", "label")
"""What a frame is: a request ("add {a} and {b}"), a question ("what is {a} plus {b}"),
symbols ("{a} + {b}") or a label before a payload ("sort: {text}"). The kind chooses the
wrappers."""

# (seen, new) per kind. Prefixes and endings hold no digits (the programs read every digit
# run of a prompt), no ':' (a payload starts after the first ':') and no ';' (fmap's).
PREFIXES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "imperative": (("", "please ", "now ", "can you "),
                   ("could you kindly ", "i need you to ", "hey, ", "go ahead and ")),
    "question": (("", "so ", "tell me, ", "quick question, "),
                 ("hey, ", "do you know ", "i wonder, ")),
    "symbols": (("", "compute ", "evaluate "),
                ("work out ", "solve ")),
    "label": (("", "please ", "task, ", "now ", "ok, ", "here is one, "),
              ("hey, ", "next, ", "for me, ", "quickly, ", "one more, ")),
}
ENDINGS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "imperative": (("", ".", "!", " please"), (", thanks", " for me", "...")),
    "question": (("?", "", " ?"), ("??", ", please?", "?!")),
    "symbols": (("", " =", "=", " = ?"), (" equals", " is what?", "=?")),
    "label": (("",), ()),  # the payload ends the prompt: nothing may follow it
}
CASES = ("as written", "capital")
"""As written (lower case), or the first letter capitalised (only with capitals in the
alphabet)."""
_CAPITAL = "case:capital"  # the part a capitalised wording has

_SLOT = re.compile(r"<([a-z_]+)>")
_FIELD = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Frame:
    """One structure of a request: text with ``{placeholders}`` and ``<slots>``."""

    text: str
    kind: str = "imperative"   # one of KINDS: chooses the prefixes and endings
    new: bool = False          # only in the new-words split

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"frame {self.text!r}: kind must be one of {', '.join(KINDS)}, "
                             f"got {self.kind!r}")

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(_SLOT.findall(self.text))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(_FIELD.findall(self.text))

    @property
    def order(self) -> str:
        """The order the operands a and b appear in the text: "ab", "ba" or "" (neither)."""
        ab = [f for f in self.fields if f in ("a", "b")]
        return "".join(ab) if len(ab) == 2 else ""


@dataclass(frozen=True)
class Wording:
    """One wording a grammar generates: a template as ``Task.make`` takes it."""

    text: str                    # the template: placeholders kept, slots filled
    parts: frozenset[str]        # the choices that made it (module docstring)
    new: bool                    # any part is new
    order: str                   # Frame.order
    split: str = ""              # one of WORDING_SPLITS (set by Grammar.wordings)
    new_frame: bool = False      # its frame is new (a structure training never contains)


@dataclass(frozen=True)
class Grammar:
    """How people ask for one task (module docstring)."""

    frames: tuple[Frame | str, ...]
    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    new_words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    recombined: float = 0.3     # the fraction of seen combinations held out (before repair)

    def __post_init__(self) -> None:
        frames = tuple(f if isinstance(f, Frame) else Frame(f) for f in self.frames)
        object.__setattr__(self, "frames", frames)
        if not any(not f.new for f in frames):
            raise ValueError("a grammar needs at least one seen frame")
        for f in frames:
            for s in f.slots:
                if not self.words.get(s):
                    raise ValueError(f"frame {f.text!r}: slot <{s}> has no seen words")
        for s, ws in self.new_words.items():
            clash = set(ws) & set(self.words.get(s, ()))
            if clash:
                raise ValueError(f"slot <{s}>: {sorted(clash)} are both seen and new")
        if not 0 <= self.recombined < 1:
            raise ValueError(f"recombined must be in [0, 1), got {self.recombined}")

    # --------------------------------------------------------------- generation

    def _expand(self) -> Iterator[Wording]:
        for i, frame in enumerate(self.frames):
            slots = list(dict.fromkeys(frame.slots))
            choices = [[(w, False) for w in self.words[s]]
                       + [(w, True) for w in self.new_words.get(s, ())] for s in slots]
            seen_pre, new_pre = PREFIXES[frame.kind]
            seen_end, new_end = ENDINGS[frame.kind]
            prefixes = [(p, False) for p in seen_pre] + [(p, True) for p in new_pre]
            endings = [(e, False) for e in seen_end] + [(e, True) for e in new_end]
            for fill in itertools.product(*choices):
                body = frame.text
                parts = {f"frame:{i}"}
                new = frame.new
                for s, (w, is_new) in zip(slots, fill):
                    body = body.replace(f"<{s}>", w)
                    parts.add(f"{s}:{w}")
                    new |= is_new
                for (p, p_new), (e, e_new) in itertools.product(prefixes, endings):
                    for case in CASES:
                        text = _cased(p + body + e, case)
                        yield Wording(text, frozenset(parts | {f"prefix:{p}", f"end:{e}",
                                                               f"case:{case}"}),
                                      new or p_new or e_new, frame.order, "", frame.new)

    @cached_property
    def _all(self) -> tuple[Wording, ...]:
        out: dict[str, Wording] = {}
        for w in self._expand():
            if w.text not in out or (out[w.text].new and not w.new):
                out[w.text] = w  # the same text by two routes: seen if either route is
        return tuple(out.values())

    def wordings(self, alphabet: Alphabet | None = None, *, pinned: Collection[str] = (),
                 kept_out: Collection[str] = ()) -> tuple[Wording, ...]:
        """Every wording with its split; with ``alphabet``, only those it can write (the
        splits are made among those, so every seen part the alphabet can write is trained;
        a capitalised wording is in the split of its as-written form). A seen wording in
        ``pinned`` is always in train, one in ``kept_out`` never (a task's hand-written
        training and held-out templates), and so are their capitalised forms."""
        every = self._all if alphabet is None else tuple(
            w for w in self._all if _writable(_FIELD.sub("", w.text), alphabet))
        splits = _partition(every, self.recombined, frozenset(pinned), frozenset(kept_out))
        return tuple(replace(w, split=splits[w.text]) for w in every)


def _partition(every: tuple[Wording, ...], fraction: float, pinned: frozenset[str],
               kept_out: frozenset[str]) -> dict[str, str]:
    """{text: split}: new parts → new_words; a stable hash holds out ``fraction`` of the
    rest as recombined (``kept_out`` always, ``pinned`` never); then any held-out wording
    with a part training would lack goes back to training, so every seen part is trained
    (``kept_out`` stays out: training has its parts from other wordings, or lacks them).
    A capitalised wording whose as-written form is among ``every`` takes that form's split
    (its other parts are the same, and ``case:capital`` is trained with any trained
    as-written wording that has a letter)."""
    texts = {w.text for w in every}
    source = {w.text: _uncased(w.text) for w in every if _CAPITAL in w.parts}
    source = {t: s for t, s in source.items() if s in texts and s != t}
    def either_case(ts: frozenset[str]) -> frozenset[str]:
        return ts | {_cased(t, "capital") for t in ts} | {_uncased(t) for t in ts}
    out = _partition_written(tuple(w for w in every if w.text not in source), fraction,
                             either_case(pinned), either_case(kept_out))
    for text, written in source.items():
        out[text] = out[written]
    return out


def _partition_written(every: tuple[Wording, ...], fraction: float, pinned: frozenset[str],
                       kept_out: frozenset[str]) -> dict[str, str]:
    """:func:`_partition` of wordings none of which is another's capitalised form."""
    seen = [w for w in every if not w.new]
    out = {w.text: "new_words" for w in every if w.new}
    held = {w.text for w in seen if w.text not in pinned
            and (w.text in kept_out or _unit(w.text) < fraction)}
    covered: set[str] = set()
    for w in seen:
        if w.text not in held:
            covered |= w.parts
    for w in sorted(seen, key=lambda w: _unit(w.text)):  # a stable repair order
        if w.text in held and w.text not in kept_out and not w.parts <= covered:
            held.discard(w.text)
            covered |= w.parts
    for w in seen:
        out[w.text] = "recombined" if w.text in held else "train"
    return out


def _cased(text: str, case: str) -> str:
    if case != "capital":
        return text
    free = _FIELD.sub(lambda m: "\0" * len(m.group()), text)  # placeholders are not words
    i = next((k for k, ch in enumerate(free) if ch.isalpha()), None)
    if i is None:
        return text  # nothing to capitalise: the wording is the same as written
    return text[:i] + text[i].upper() + text[i + 1:]


def _uncased(text: str) -> str:
    """The as-written form of a capitalised wording: the letter :func:`_cased` raised,
    lowered."""
    free = _FIELD.sub(lambda m: "\0" * len(m.group()), text)
    i = next((k for k, ch in enumerate(free) if ch.isalpha()), None)
    return text if i is None else text[:i] + text[i].lower() + text[i + 1:]


def _unit(text: str) -> float:
    """A stable hash of ``text`` in [0, 1)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def _writable(text: str, alphabet: Alphabet) -> bool:
    try:
        alphabet.encode(text)
    except ValueError:
        return False
    return True


BITS = (("binary string", "bit string", "bits"), ("binary word", "sequence of bits"))
"""(seen, new) names of a bit string, shared by the benchmark's bit-string tasks."""


def bits_grammar(verbs: tuple[str, ...], new_verbs: tuple[str, ...], also: str,
                 also_new: str) -> Grammar:
    """The grammar of a task on a bit string (reverse_string, duplicate_string,
    odds_first): ``<verb> the bits: …``, ``<verb> the <bits>: …``, ``<verb> these <bits>:
    …`` and one more seen frame (``also``) and one new (``also_new``), all labels."""
    return Grammar(
        frames=(Frame("<verb> the bits: {text}", kind="label"),
                Frame("<verb> the <bits>: {text}", kind="label"),
                Frame("<verb> these <bits>: {text}", kind="label"),
                Frame(also, kind="label"), Frame(also_new, kind="label", new=True)),
        words={"verb": verbs, "bits": BITS[0]},
        new_words={"verb": new_verbs, "bits": BITS[1]})


def binary_op_grammar(verbs: tuple[str, ...], new_verbs: tuple[str, ...],
                      nouns: tuple[str, ...], new_nouns: tuple[str, ...]) -> Grammar:
    """The grammar of an operation on two little-endian binary numbers (binary_addition,
    binary_multiplication): ``<verb> in binary: …``, ``<verb> these binary numbers: …``,
    ``binary <noun>: …``, ``<noun> of the bits, lowest first: …``, and two new frames."""
    return Grammar(
        frames=(Frame("<verb> in binary: {text}", kind="label"),
                Frame("<verb> these binary numbers: {text}", kind="label"),
                Frame("binary <noun>: {text}", kind="label"),
                Frame("<noun> of the bits, lowest first: {text}", kind="label"),
                Frame("what is this <noun> in binary: {text}", kind="label", new=True),
                Frame("little endian binary <noun>, please: {text}", kind="label", new=True)),
        words={"verb": verbs, "noun": nouns},
        new_words={"verb": new_verbs, "noun": new_nouns})
