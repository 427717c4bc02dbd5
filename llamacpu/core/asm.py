"""The assembler: ``.lasm`` text -> :class:`~llamacpu.core.isa.Program`
(:mod:`llamacpu.core.disasm` prints one back).

``assemble`` reads the language of docs/lasm.md ("Source syntax", "Operands") in two
passes: the first lexes and parses every line, lays the slots out from address 2 (after the
ports ``IN`` and ``OUT``) and checks everything that does not need the symbol table; the
second resolves label references. Every malformed input raises :class:`AssemblyError` with
the file, line and column of the offending token; nothing else escapes for any text.

Addresses. An operand or ``.ptr`` target is a label plus an optional offset and must land
inside the program, or just past its end (address ``len(program)``, where the input region
starts at run time: the assembler's counterpart of C's one-past-the-end pointer).

Linking (:mod:`llamacpu.core.link`): ``assemble(text, base=library)`` lays the text out
after ``base``'s slots; it may use, never define, ``base``'s labels, and runs from its own
entry.

CLI: ``python -m llamacpu.asm FILE [--memory-size N]`` assembles, validates (when
``llamacpu.core.graph`` exists) and prints the disassembly; exit code 2 on any bad input.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field

from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    DEFAULT_MEMORY_SIZE,
    EMPTY_SLOT,
    MNEMONICS,
    N_PORTS,
    RESERVED_LABELS,
    SPEC,
    Alphabet,
    InputError,
    Kind,
    LlamacpuError,
    Mode,
    Op,
    Program,
    Slot,
    SourceLoc,
)

__all__ = ["AssemblyError", "assemble"]

_IDENT_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
_SPACE = frozenset(" \t\r\f\v\ufeff")
_PUNCT = frozenset(":,[]+-#>")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")
_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset(RESERVED_LABELS) | {"END"}
_MAX_NUMBER_DIGITS = 18  # longer numbers are too large for any use; never call int() on them
_TAB = 8


# --------------------------------------------------------------------------- errors


class AssemblyError(LlamacpuError):
    """A malformed ``.lasm`` source, located at ``file:line:col`` (1-based).

    ``str(e)`` is three lines: ``file:line:col: error: message``, the source line without
    its indentation and a caret under the column (both indented 4, tabs expanded the same
    way in both)::

        add.lasm:12:9: error: unknown op 'ADDD'
            addd x, y
            ^
    """

    def __init__(self, message: str, file: str, line: int, col: int, source_line: str):
        super().__init__(message, file, line, col, source_line)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.source_line = source_line

    def short(self) -> str:
        """The first line only: ``file:line:col: error: message``."""
        return f"{self.file}:{self.line}:{self.col}: error: {self.message}"

    def __str__(self) -> str:
        shown, caret = _caret_lines(self.source_line, self.col)
        return f"{self.short()}\n    {shown}\n    {caret}"


def _caret_lines(line: str, col: int) -> tuple[str, str]:
    """The line as a terminal shows it and a caret line under character ``col`` (1-based).

    Leading whitespace is dropped (a caret inside it goes under the first character). Tabs
    go to the next multiple of 8, wide characters take two cells, combining ones none, and
    unprintable characters show as '?', so the caret stays under its character.
    """
    indent = len(line) - len(line.lstrip("".join(_SPACE)))
    line, col = line[indent:], max(col - indent, 1)
    shown, width = [], 0
    caret_at = None
    for i, ch in enumerate(line):
        if i == col - 1:
            caret_at = width
        if ch == "\t":
            pad = _TAB - width % _TAB
            shown.append(" " * pad)
            width += pad
            continue
        if not ch.isprintable():
            ch = "?"
        shown.append(ch)
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    if caret_at is None:
        caret_at = width + max(0, col - 1 - len(line))
    return "".join(shown), " " * caret_at + "^"


# --------------------------------------------------------------------------- lexer


@dataclass(frozen=True)
class _Tok:
    """One token of a line. ``kind``: ident, directive, number, char, string, punct."""

    kind: str
    text: str       # the source text (punct: the character; directive: '.name')
    col: int        # 1-based column of its first character
    num: int = 0    # number: its value (capped, so a huge one is still just "too large")
    chars: str = ""  # char / string: the decoded text

    def is_punct(self, ch: str) -> bool:
        return self.kind == "punct" and self.text == ch


class _Line:
    """One source line and how to raise an error located on it."""

    def __init__(self, file: str, number: int, text: str):
        self.file, self.number, self.text = file, number, text

    def error(self, message: str, col: int) -> AssemblyError:
        col = min(max(col, 1), len(self.text) + 1)
        return AssemblyError(message, self.file, self.number, col, self.text)


def _lex(line: _Line) -> list[_Tok]:
    """Split one line into tokens; ``;`` starts a comment (outside quotes)."""
    s, toks, i, n = line.text, [], 0, len(line.text)

    def word_end(j: int) -> int:
        while j < n and s[j] in _IDENT_CHARS:
            j += 1
        return j

    while i < n:
        ch = s[i]
        if ch in _SPACE:
            i += 1
            continue
        if ch == ";":
            break
        if ch in _IDENT_START:
            j = word_end(i + 1)
            toks.append(_Tok("ident", s[i:j], i + 1))
        elif ch == ".":
            j = word_end(i + 1)
            if j == i + 1:
                raise line.error("expected a directive name after '.'", i + 1)
            toks.append(_Tok("directive", s[i:j], i + 1))
        elif ch in _DIGITS:
            j = i + 1
            while j < n and s[j] in _DIGITS:
                j += 1
            if j < n and s[j] in _IDENT_CHARS:
                raise line.error(f"bad number '{s[i:word_end(j)]}': numbers are decimal "
                                 f"digits", i + 1)
            text = s[i:j]
            num = int(text) if len(text) <= _MAX_NUMBER_DIGITS else 10**_MAX_NUMBER_DIGITS
            toks.append(_Tok("number", text, i + 1, num=num))
        elif ch in "'\"":
            chars, j = _lex_quoted(line, i)
            if ch == "'" and len(chars) != 1:
                raise line.error("a character literal holds exactly one character "
                                 "(use \"...\" for text)", i + 1)
            toks.append(_Tok("char" if ch == "'" else "string", s[i:j], i + 1, chars=chars))
        elif ch in _PUNCT:
            j = i + 1
            toks.append(_Tok("punct", ch, i + 1))
        else:
            raise line.error(f"unexpected character {ch!r}", i + 1)
        i = j
    return toks


def _lex_quoted(line: _Line, start: int) -> tuple[str, int]:
    """Decode the quoted literal opening at ``start``; returns (text, index after it)."""
    s, quote, out, i = line.text, line.text[start], [], start + 1
    while i < len(s):
        ch = s[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = s[i + 1:i + 2]
        if nxt and nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x" and len(s) >= i + 4 and s[i + 2] in _HEX and s[i + 3] in _HEX:
            out.append(chr(int(s[i + 2:i + 4], 16)))
            i += 4
        else:
            raise line.error(
                f"bad escape '{s[i:i + 2]}': use \\\\ \\' \\\" \\n \\t or \\xHH", i + 1)
    raise line.error(f"unterminated {'character literal' if quote == chr(39) else 'string'}",
                     start + 1)


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True)
class _Ref:
    """A label plus offset in the source, resolved to an address in the second pass."""

    label: str
    offset: int
    text: str   # as written, for messages
    col: int


@dataclass(frozen=True)
class _Operand:
    mode: Mode
    col: int
    ref: _Ref | None = None  # DIRECT / INDIRECT
    value: int = 0           # IMMEDIATE


@dataclass(frozen=True)
class _Pending:
    """An instruction whose operand addresses wait for the symbol table."""

    addr: int
    line: _Line
    op: Op
    operands: tuple[_Operand, ...]


@dataclass(frozen=True)
class _PendingPtr:
    """A ``.ptr`` DATA slot whose target waits for the symbol table."""

    addr: int
    line: _Line
    target: _Ref
    value: int


@dataclass
class _State:
    """What the first pass builds."""

    file: str
    memory_size: int
    alphabet: Alphabet = DEFAULT_ALPHABET
    alphabet_set: bool = False
    requested: Alphabet | None = None  # assemble(alphabet=...): wins over an .alphabet line
    #                                    that it extends (the same symbols, more after them)
    slots: list[Slot] = field(default_factory=lambda: [Slot.data(0, 0)] * N_PORTS)
    source_map: dict[int, SourceLoc] = field(default_factory=dict)
    symbols: dict[str, int] = field(default_factory=lambda: dict(RESERVED_LABELS))
    label_defs: dict[str, tuple[_Line, int]] = field(default_factory=dict)
    waiting: list[tuple[str, _Line, int]] = field(default_factory=list)  # labels, no slot yet
    pending: list[_Pending | _PendingPtr] = field(default_factory=list)
    base: Program | None = None  # assemble(base=...): the program the text is laid after


class _Cursor:
    """Tokens of one line with a read position."""

    def __init__(self, line: _Line, toks: list[_Tok]):
        self.line, self.toks, self.i = line, toks, 0

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> _Tok | None:
        t = self.peek()
        if t is not None:
            self.i += 1
        return t

    def at_end(self) -> bool:
        return self.i >= len(self.toks)

    def error(self, message: str, tok: _Tok | None = None) -> AssemblyError:
        """An error at ``tok``, or just after the last token when it is missing."""
        if tok is not None:
            return self.line.error(message, tok.col)
        last = self.toks[-1] if self.toks else None
        return self.line.error(message, last.col + len(last.text) if last else 1)

    def take(self, kind: str, what: str) -> _Tok:
        """The next token, which must be of ``kind``; ``what`` names it in the error."""
        t = self.peek()
        if t is None or t.kind != kind:
            raise self.error(f"expected {what}, found {_describe(t)}", t)
        self.i += 1
        return t

    def skip_punct(self, ch: str) -> bool:
        """Consume the punctuation ``ch`` if it comes next."""
        t = self.peek()
        if t is not None and t.is_punct(ch):
            self.i += 1
            return True
        return False

    def expect_punct(self, ch: str, what: str) -> None:
        if not self.skip_punct(ch):
            t = self.peek()
            raise self.error(f"expected '{ch}' {what}, found {_describe(t)}", t)

    def expect_end(self) -> None:
        t = self.peek()
        if t is not None:
            raise self.error(f"unexpected {_describe(t)}", t)


def _describe(t: _Tok | None) -> str:
    return "end of line" if t is None else repr(t.text)


def assemble(text: str, file: str = "<string>", memory_size: int = DEFAULT_MEMORY_SIZE,
             alphabet: Alphabet | None = None, base: Program | None = None) -> Program:
    """Assemble ``.lasm`` source into a Program; raises AssemblyError on malformed input.

    ``file`` names the source in errors and ``source_map``; ``memory_size`` bounds the
    program's size in slots (ports included). ``alphabet``: the alphabet to assemble in
    (default: the source's ``.alphabet`` line, else :data:`DEFAULT_ALPHABET`); it must
    extend the source's own (:meth:`Alphabet.extends`: the same symbols with the same
    numbers, more after them), so a program written for the default alphabet runs on a
    machine with every printable character (:data:`PRINTABLE_ALPHABET`).

    ``base``: an assembled library whose slots, labels and source map come first; the text
    follows, may refer to its labels, and takes its alphabet (no ``.alphabet`` line).
    """
    if memory_size < N_PORTS + 1:
        raise ValueError(f"memory_size must be at least {N_PORTS + 1}, got {memory_size}")
    st = _State(file=file, memory_size=memory_size, requested=alphabet)
    if alphabet is not None:
        st.alphabet = alphabet
    if base is not None:
        if alphabet is not None and alphabet != base.alphabet:
            raise ValueError(f"alphabet ({alphabet.describe()}) differs from the base "
                             f"program's ({base.alphabet.describe()}): assemble the base in it")
        st.base, st.alphabet, st.alphabet_set = base, base.alphabet, True
        st.slots, st.source_map = list(base.slots), dict(base.source_map)
        st.symbols = {**base.symbols, **RESERVED_LABELS}
    lines = [_Line(file, k + 1, t[:-1] if t.endswith("\r") else t)
             for k, t in enumerate(text.split("\n"))]
    for line in lines:
        _parse_line(st, line)
    if st.waiting:
        name, line, col = st.waiting[0]
        raise line.error(f"label '{name}' labels nothing: no slot follows it", col)
    return _link(st, lines[0])


def _parse_line(st: _State, line: _Line) -> None:
    """Labels, then at most one instruction or directive, then the end of the line."""
    cur = _Cursor(line, _lex(line))
    while (t := cur.peek()) is not None and t.kind == "ident" \
            and (colon := cur.peek(1)) is not None and colon.is_punct(":"):
        _define_label(st, line, t)
        cur.i += 2
    t = cur.next()
    if t is None:
        return
    if t.kind == "directive":
        _directive(st, cur, t)
    elif t.kind == "ident":
        _instruction(st, cur, t)
    else:
        raise cur.error(f"expected a label, an instruction or a directive, found "
                        f"{_describe(t)}", t)
    cur.expect_end()


def _define_label(st: _State, line: _Line, t: _Tok) -> None:
    name = t.text
    if name in _RESERVED:
        raise line.error(f"'{name}' is reserved and cannot be a label", t.col)
    if st.base is not None and name in st.base.symbols:
        loc, addr = st.base.source_map.get(st.base.symbols[name]), st.base.symbols[name]
        where = f"{loc.file}:{loc.line}" if loc is not None else f"{st.base.name} (slot {addr})"
        raise line.error(f"label '{name}' is already defined in {where}, which this program "
                         f"is linked onto", t.col)
    if name in st.label_defs:
        prev, _ = st.label_defs[name]
        raise line.error(f"duplicate label '{name}' (first defined on line {prev.number})",
                         t.col)
    st.label_defs[name] = (line, t.col)
    st.waiting.append((name, line, t.col))


def _emit(st: _State, cur: _Cursor, tok: _Tok, slots: list[Slot],
          cols: list[int] | None = None) -> int:
    """Append slots located at ``tok`` (or at ``cols``, one per slot); waiting labels get
    the first one's address, which is returned. Raises if they do not fit in memory."""
    _room(st, cur, len(slots), tok)
    addr = len(st.slots)
    for name, _, _ in st.waiting:
        st.symbols[name] = addr
    st.waiting.clear()
    for k in range(len(slots)):
        col = cols[k] if cols else tok.col
        st.source_map[addr + k] = SourceLoc(st.file, cur.line.number, col, cur.line.text)
    st.slots.extend(slots)
    return addr


def _room(st: _State, cur: _Cursor, n: int, tok: _Tok) -> None:
    """Raise unless ``n`` more slots fit in ``memory_size``."""
    if len(st.slots) + n > st.memory_size:
        raise cur.error(f"the program does not fit in memory: {len(st.slots)} + {n} slots > "
                        f"memory size {st.memory_size}", tok)


# ---------------------------------------------------------------- values and operands


def _value(st: _State, cur: _Cursor) -> tuple[int, _Tok]:
    """The next token as a symbol: a digit, a 'c' character or END."""
    tok = cur.next()
    if tok is not None and tok.kind == "number":
        limit = st.alphabet.base
        if tok.num >= limit:
            raise cur.error(f"value {tok.text} is not a digit of base {limit} "
                            f"(0..{limit - 1}); write characters as 'c'", tok)
        return tok.num, tok
    if tok is not None and tok.kind == "char":
        return _encode(st, cur, tok, tok.chars), tok
    if tok is not None and tok.kind == "ident" and tok.text == "END":
        return st.alphabet.end, tok
    hint = " (END is upper case)" if tok is not None and tok.text.upper() == "END" else ""
    raise cur.error(f"expected a value (a digit, 'c' or END), found {_describe(tok)}{hint}",
                    tok)


def _encode(st: _State, cur: _Cursor, tok: _Tok, ch: str) -> int:
    try:
        return st.alphabet.encode_char(ch)
    except InputError:
        raise cur.error(f"character {ch!r} is not in the alphabet "
                        f"({st.alphabet.describe()})", tok) from None


def _ref(cur: _Cursor) -> _Ref:
    """``label``, ``label+N`` or ``label-N``."""
    t = cur.peek()
    if t is not None and t.kind == "number":
        raise cur.error(f"expected a label, found the number {t.text} "
                        f"(an immediate value needs '#': #{t.text})", t)
    t = cur.take("ident", "a label")
    sign = cur.peek()
    if sign is None or not (sign.is_punct("+") or sign.is_punct("-")):
        return _Ref(t.text, 0, t.text, t.col)
    cur.next()
    n = cur.take("number", f"a number after '{sign.text}'")
    offset = n.num if sign.text == "+" else -n.num
    return _Ref(t.text, offset, f"{t.text}{sign.text}{n.text}", t.col)


def _operand(st: _State, cur: _Cursor) -> _Operand:
    """``x``, ``x+1``, ``[p]``, ``[p+1]`` or ``#v``."""
    t = cur.peek()
    if t is None:
        raise cur.error("expected an operand (x, x+1, [p], #v), found end of line")
    if t.is_punct("#"):
        cur.next()
        return _Operand(Mode.IMMEDIATE, t.col, value=_value(st, cur)[0])
    if t.is_punct("["):
        cur.next()
        ref = _ref(cur)
        cur.expect_punct("]", f"to close the '[' at column {t.col}")
        return _Operand(Mode.INDIRECT, t.col, ref=ref)
    if t.kind in ("char", "string") or t.kind == "ident" and t.text == "END":
        raise cur.error(f"expected an operand, found {_describe(t)} "
                        f"(an immediate value needs '#': #{t.text})", t)
    if t.kind not in ("ident", "number"):
        raise cur.error(f"expected an operand (x, x+1, [p], #v), found {_describe(t)}", t)
    return _Operand(Mode.DIRECT, t.col, ref=_ref(cur))


_MODE_WORDS = {Mode.DIRECT: "a slot", Mode.INDIRECT: "an indirect [p]",
               Mode.IMMEDIATE: "an immediate"}


def _instruction(st: _State, cur: _Cursor, mnem: _Tok) -> None:
    op = MNEMONICS.get(mnem.text.upper())
    if op is None:
        raise cur.error(f"unknown op '{mnem.text.upper()}'", mnem)
    spec = SPEC[op]
    operands: list[_Operand] = []
    if not cur.at_end():
        operands.append(_operand(st, cur))
        while cur.skip_punct(","):
            operands.append(_operand(st, cur))
    count = (f"{op.name} takes {spec.arity} operand(s) "
             f"({', '.join(r.value for r in spec.roles) or 'none'}), got {len(operands)}")
    if len(operands) > spec.arity:
        raise cur.line.error(count, operands[spec.arity].col)
    if len(operands) < spec.arity:
        if not cur.at_end():
            cur.expect_punct(",", "between operands")
        raise cur.error(count, mnem)
    cur.expect_end()
    immediates = 0
    for k, (o, role) in enumerate(zip(operands, spec.roles)):
        if o.mode not in role.modes:
            raise cur.line.error(f"operand {k + 1} of {op.name} ({role.value}) cannot be "
                                 f"{_MODE_WORDS[o.mode]}", o.col)
        immediates += o.mode == Mode.IMMEDIATE
        if immediates > 1:
            raise cur.line.error("at most one immediate per instruction", o.col)
    addr = _emit(st, cur, mnem, [EMPTY_SLOT])  # a placeholder until _link
    st.pending.append(_Pending(addr, cur.line, op, tuple(operands)))


# ------------------------------------------------------------------------- directives


def _directive(st: _State, cur: _Cursor, d: _Tok) -> None:
    name = d.text.lower()
    if name == ".alphabet":
        _alphabet(st, cur, d)
    elif name == ".data":  # items: digits, 'c', END, "text" (one slot per character)
        vals: list[int] = []
        cols: list[int] = []
        while True:
            t = cur.peek()
            if t is not None and t.kind == "string":
                cur.next()
                if not t.chars:
                    raise cur.error("empty string in .data", t)
                vals.extend(_encode(st, cur, t, ch) for ch in t.chars)
                cols.extend([t.col] * len(t.chars))
            else:
                v, t = _value(st, cur)
                vals.append(v)
                cols.append(t.col)
            if not cur.skip_punct(","):
                break
        _emit(st, cur, d, [Slot.data(v) for v in vals], cols)
    elif name == ".string":  # the characters, then END
        t = cur.take("string", "a \"string\" after .string")
        vals = [_encode(st, cur, t, ch) for ch in t.chars] + [st.alphabet.end]
        _emit(st, cur, t, [Slot.data(v) for v in vals])
    elif name in (".space", ".empty"):
        t = cur.take("number", f"a slot count after {name}")
        if t.num < 1:
            raise cur.error(f"{name} needs a count of at least 1", t)
        _room(st, cur, t.num, t)  # before building a list of that size
        fill = EMPTY_SLOT
        if name == ".space":
            fill = Slot.data(_value(st, cur)[0] if cur.skip_punct(",") else 0)
        _emit(st, cur, d, [fill] * t.num)
    elif name == ".weights":  # a WEIGHTS slot: "keys" -> "values", one entry per character
        _emit(st, cur, d, [_weights(st, cur)])
    elif name == ".ptr":  # a DATA slot holding the address of target (and a value)
        target = _ref(cur)
        value = _value(st, cur)[0] if cur.skip_punct(",") else 0
        addr = _emit(st, cur, d, [Slot.data(value)])
        st.pending.append(_PendingPtr(addr, cur.line, target, value))
    else:
        raise cur.error(f"unknown directive '{d.text}' (known: .alphabet .data .string "
                        f".space .empty .ptr .weights)", d)


def _weights(st: _State, cur: _Cursor) -> Slot:
    """``"keys" -> "values"``: f(keys[i]) = values[i]; symbols not listed map to END."""
    keys = cur.take("string", 'a "string" of inputs after .weights ("0123" -> "3210")')
    arrow = cur.peek()
    if not (arrow is not None and arrow.is_punct("-") and cur.peek(1) is not None
            and cur.peek(1).is_punct(">") and cur.peek(1).col == arrow.col + 1):
        raise cur.error(f"expected '->' after the inputs of .weights, found {_describe(arrow)}",
                        arrow)
    cur.next()
    cur.next()
    vals = cur.take("string", 'a "string" of outputs after \'->\'')
    if len(keys.chars) != len(vals.chars):
        raise cur.error(f".weights maps {len(keys.chars)} input(s) to {len(vals.chars)} "
                        f"output(s): the two strings must have the same length", vals)
    table = [st.alphabet.end] * st.alphabet.size
    seen: set[str] = set()
    for k, v in zip(keys.chars, vals.chars):
        if k in seen:
            raise cur.error(f"input {k!r} is listed twice in .weights", keys)
        seen.add(k)
        table[_encode(st, cur, keys, k)] = _encode(st, cur, vals, v)
    cur.expect_end()
    return Slot.weights(table)


def _alphabet(st: _State, cur: _Cursor, d: _Tok) -> None:
    """``.alphabet base N [charset "..."]`` or ``.alphabet bytes``, before anything else."""
    if st.base is not None:
        raise cur.error(f"no .alphabet in a program linked onto {st.base.name}: it takes "
                        f"that program's alphabet", d)
    if len(st.slots) > N_PORTS or st.waiting or st.alphabet_set:
        what = "a second .alphabet" if st.alphabet_set else ".alphabet"
        raise cur.error(f"{what} is not allowed here: declare the alphabet once, before any "
                        f"label or slot", d)
    kw = cur.peek()
    word = kw.text.lower() if kw is not None and kw.kind == "ident" else ""
    if word == "bytes":
        cur.next()
        st.alphabet = Alphabet.byte_alphabet()
    elif word == "base":
        cur.next()
        n = cur.take("number", "the base (a number) after 'base'")
        if not 2 <= n.num <= 36:
            raise cur.error(f"bad base {n.text}: must be 2..36 (or use '.alphabet bytes')", n)
        kw2 = cur.peek()
        if kw2 is not None and kw2.kind == "ident" and kw2.text.lower() == "charset":
            cur.next()
            s = cur.take("string", "a \"string\" after 'charset'")
            try:
                st.alphabet = Alphabet(base=n.num, charset=s.chars)
            except ValueError as e:
                raise cur.error(f"bad charset: {e}", s) from None
        else:
            st.alphabet = Alphabet.numeric(n.num)
    else:
        raise cur.error(f"expected 'base N [charset \"...\"]' or 'bytes' after .alphabet, "
                        f"found {_describe(kw)}", kw)
    if st.requested is not None:  # assembling for a machine with a larger alphabet
        if not st.requested.extends(st.alphabet):
            raise cur.error(f"the program's alphabet ({st.alphabet.describe()}) is not part "
                            f"of the one asked for ({st.requested.describe()})", d)
        st.alphabet = st.requested
    st.alphabet_set = True


# ---------------------------------------------------------------------------- linking


def _resolve(st: _State, line: _Line, ref: _Ref) -> int:
    base = st.symbols.get(ref.label)
    if base is None:
        if ref.label == "END":
            hint = " (END is the end marker, not a label)"
        else:
            close = difflib.get_close_matches(ref.label, list(st.symbols), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise line.error(f"undefined label '{ref.label}'{hint}", ref.col)
    addr = base + ref.offset
    n = len(st.slots)
    if not 0 <= addr <= n:
        raise line.error(f"'{ref.text}' is address {addr}, outside the program (0..{n - 1}, "
                         f"or {n} just past its end)", ref.col)
    return addr


def _link(st: _State, first: _Line) -> Program:
    """Second pass: resolve label references, pick the entry point, build the Program."""
    for p in st.pending:
        if isinstance(p, _PendingPtr):
            st.slots[p.addr] = Slot.data(p.value, _resolve(st, p.line, p.target))
            continue
        imm = 0
        operands: list[tuple[Mode, int]] = []
        for o in p.operands:
            if o.ref is None:  # IMMEDIATE
                imm = o.value
                operands.append((o.mode, 0))
            else:
                operands.append((o.mode, _resolve(st, p.line, o.ref)))
        st.slots[p.addr] = Slot.instr(p.op, tuple(operands), imm)
    own = len(st.base.slots) if st.base is not None else 0  # the text's first slot
    instrs = [a for a in range(own, len(st.slots)) if st.slots[a].kind == Kind.INSTR]
    if not instrs:
        raise first.error("no instructions: a program needs at least one (e.g. halt)", 1)
    entry = st.symbols["start"] if "start" in st.label_defs else instrs[0]
    if st.slots[entry].kind != Kind.INSTR:
        line, col = st.label_defs["start"]
        raise line.error("'start' must label an instruction: execution starts there", col)
    return Program(slots=tuple(st.slots), entry=entry, alphabet=st.alphabet,
                   symbols=dict(st.symbols), source_map=dict(st.source_map), name=st.file)
