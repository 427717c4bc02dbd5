"""The instruction set: opcodes, operand modes, the slot layout and the value alphabet.

Everything in llamacpu imports this module; it is the one definition of what a program is.
The op table itself (``Op``, ``OpSpec``, ``OPS``, ``SPEC``, ``define_op`` ...) lives in
:mod:`llamacpu.core.ops` and is re-exported here.

Memory is a flat array of *slots*. A slot is one row of memory and has the same fields
whatever it holds::

    kind   EMPTY | DATA | INSTR | WEIGHTS
    op     opcode (INSTR slots; NOP elsewhere)
    table  a WEIGHTS slot's function: table[x] = f(x) for every symbol x (None elsewhere)
    modes  one operand mode per address field           (NONE, DIRECT, INDIRECT, IMMEDIATE)
    args   four address fields p0..p3                    (operand addresses; p0 of a DATA slot
                                                           is the pointer it holds)
    val    one symbol of the alphabet                    (a DATA slot's value; an instruction's
                                                           immediate)

Values are *symbols*: integers ``0 .. V-1`` of an :class:`Alphabet`. Digits of the
alphabet's base come first (symbol ``d`` is digit ``d``), then the alphabet's text
characters, then the ``END`` marker, always the last symbol. Arithmetic works on digits and
keeps a carry register ``C`` (itself a digit), so multi-digit arithmetic is a loop of
digit operations, as on paper.

Pointers are addresses held in a slot's ``p0`` field; ``INC``/``DEC`` move them by one,
``LEA`` loads them, and an ``INDIRECT`` operand ``[p]`` names the slot that ``p`` points to.

Memory-mapped I/O. Slot 0 is the input port ``IN`` and slot 1 the output port ``OUT``:
two DATA slots whose pointers the loader sets. At load time memory is laid out as::

    [ program slots 0..P-1 | input region: the prompt's symbols, then END | output region ]

``IN`` points at the first input symbol and ``OUT`` at the first slot of the output region,
whose slots all start as ``DATA END``. When the machine halts, the answer is read from the
slot ``OUT`` points to *at that moment*, up to the first ``END``: a program may stream its
answer through a copy of ``OUT`` (``LEA o, [OUT]``) or move ``OUT`` itself to where the
answer starts. The program's size therefore does not grow with its input.

Writes. Value-producing ops (arithmetic, compares, GETC, ``MOV d, #v``) replace ``d.val``
only; pointer ops (LEA, INC, DEC) replace ``p.p0`` only; ``MOV d, s`` copies every field of
``s`` (so programs can copy instructions: self-modifying code). Writing a field of an EMPTY
slot makes it DATA. Arithmetic (ADD SUB MUL DIV MOD SETC) faults on a symbol that is not a
digit; compares work on every symbol.

WEIGHTS slots (the weight-token channel, docs/weights.md). A WEIGHTS slot holds a unary
function f of symbols, the operation that ``APPLY d, w, a`` runs: ``d.val ← f_w(a)``. The
tensor machine holds it as the delta ``Δ = U Vᵀ`` [V, V] of a linear layer with zero base
weight, ``APPLY``'s logits being ``Δ · onehot(a)``; a Slot holds the function table derived
from it, ``table[x] = argmax_v Δ[v, x]`` (ties to the lowest symbol), which is all the
reference interpreter needs to be exact. ``WSET w, a, b`` sets ``f_w(a) ← b`` (a
rank-one replacement of column a of Δ): programs can write operations (self-modification).
``MOV d, s`` copies a WEIGHTS slot whole. WEIGHTS slots live in the program region: a MOV
that would copy one to an address ``≥ len(program)`` faults, so the machine's weights bank
covers only the program's slots.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from llamacpu.core.ops import (
    MNEMONICS,
    OPS,
    SPEC,
    AluFn,
    ExtOp,
    Group,
    Jump,
    Mode,
    Op,
    OpSpec,
    Role,
    Write,
    define_op,
    defined_op,
    isa_table_markdown,
    n_ops,
    op_specs,
    opcode,
    ops_generation,
    remove_op,
)

__all__ = [
    "Kind", "Mode", "Role", "Op", "OpSpec", "OPS", "SPEC", "MNEMONICS", "NUM_FIELDS",
    "Alphabet", "DEFAULT_ALPHABET", "PRINTABLE_ALPHABET", "Slot", "EMPTY_SLOT", "Program", "SourceLoc",
    "Linkage",
    "MemoryImage", "memory_image", "PORT_IN", "PORT_OUT", "N_PORTS", "RESERVED_LABELS",
    "LlamacpuError", "InputError", "DEFAULT_MEMORY_SIZE", "Group", "default_out_size",
    "isa_table_markdown", "Write", "Jump", "AluFn", "ExtOp", "op_specs", "n_ops", "opcode",
    "ops_generation", "define_op", "remove_op", "defined_op",
]

NUM_FIELDS = 4
"""Address fields per slot (p0..p3): up to four operands (JEQ, APPLY and WSET use three)."""

DEFAULT_MEMORY_SIZE = 1 << 16
"""Slots a program may occupy unless the assembler is told otherwise."""

PORT_IN = 0
"""Address of the input port: a DATA slot whose pointer is the first input symbol."""
PORT_OUT = 1
"""Address of the output port: a DATA slot whose pointer is where the answer starts."""
N_PORTS = 2
RESERVED_LABELS = {"IN": PORT_IN, "OUT": PORT_OUT}
"""Labels every program has; code and data start right after them (address 2)."""


class LlamacpuError(Exception):
    """Base class of every error llamacpu raises on purpose."""


class InputError(LlamacpuError, ValueError):
    """An input text that cannot be placed in memory (a character outside the alphabet)."""


class Kind(enum.IntEnum):
    """What a slot holds."""

    EMPTY = 0
    DATA = 1
    INSTR = 2
    WEIGHTS = 3  # an operation for APPLY: a function table / low-rank factors (see above)

_DIGIT_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
_DEFAULT_CHARSET = " +-*/%=<>,;:.()?!_abcdefghijklmnopqrstuvwxyz"
_PRINTABLE_EXTRA = "ABCDEFGHIJKLMNOPQRSTUVWXYZ\"#$&'@[\\]^`{|}~"
"""The printable ASCII characters the default charset lacks, in the order they are added
after it: every symbol of the default alphabet keeps its number (only END moves)."""


@dataclass(frozen=True)
class Alphabet:
    """The symbols a slot's ``val`` can hold.

    Symbols ``0 .. base-1`` are digits, written ``0-9a-z``; then one symbol per character of
    ``charset``; then ``END``. With ``raw_bytes=True`` the alphabet is the 256 byte values
    (base 256: every byte is a digit, characters are their Latin-1 code) plus ``END``.
    """

    base: int = 10          # radix of the digit symbols; arithmetic works modulo it
    charset: str = ""       # text characters after the digits (default: see ``numeric``)
    raw_bytes: bool = False  # the 256 byte values instead of digits + charset

    def __post_init__(self) -> None:
        if self.raw_bytes:
            if self.base != 256 or self.charset:
                raise ValueError("a bytes alphabet has base 256 and no charset")
            return
        if not 2 <= self.base <= len(_DIGIT_CHARS):
            raise ValueError(f"base must be in 2..{len(_DIGIT_CHARS)}, got {self.base}")
        digits = _DIGIT_CHARS[: self.base]
        if len(set(self.charset)) != len(self.charset):
            raise ValueError(f"charset has repeated characters: {self.charset!r}")
        clash = sorted(set(self.charset) & set(digits))
        if clash:
            raise ValueError(f"charset characters {clash} are digits in base {self.base}")

    @classmethod
    def numeric(cls, base: int = 10, charset: str | None = None) -> Alphabet:
        """Digits of ``base`` plus punctuation and the lowercase letters not used as digits."""
        if charset is None:
            digits = _DIGIT_CHARS[:base]
            charset = "".join(c for c in _DEFAULT_CHARSET if c not in digits)
        return cls(base=base, charset=charset)

    @classmethod
    def printable(cls, base: int = 10) -> Alphabet:
        """Digits of ``base`` and every other printable ASCII character (space to ``~``):
        :meth:`numeric`'s symbols first, in their order, then capitals and the remaining
        punctuation. With ``base`` > 10 the letters that are digits are digits in either
        case (``encode_char`` reads ``A`` as ``a``), so their capitals are left out."""
        digits = _DIGIT_CHARS[:base]
        extra = "".join(c for c in _PRINTABLE_EXTRA if c.lower() not in digits)
        return cls.numeric(base, cls.numeric(base).charset + extra)

    @classmethod
    def byte_alphabet(cls) -> Alphabet:
        return cls(base=256, raw_bytes=True)

    def extends(self, other: Alphabet) -> bool:
        """Whether this alphabet holds every symbol of ``other`` under the same number (END
        aside, which is always the last): same digits, ``other``'s charset first."""
        if self.raw_bytes or other.raw_bytes:
            return self == other
        return self.base == other.base and self.charset.startswith(other.charset)

    @property
    def size(self) -> int:
        """V, the number of symbols, END included."""
        return self.base + len(self.charset) + 1

    @property
    def end(self) -> int:
        """The END marker: the last symbol."""
        return self.size - 1

    def is_digit(self, v: int) -> bool:
        return 0 <= v < self.base

    def encode_char(self, ch: str) -> int:
        """The symbol of one character; raises InputError for a character outside it."""
        if self.raw_bytes:
            code = ord(ch)
            if code < 256:
                return code
        else:
            low = ch.lower() if self.base > 10 else ch
            i = _DIGIT_CHARS.find(low)
            if 0 <= i < self.base and len(ch) == 1:
                return i
            j = self.charset.find(ch)
            if j >= 0 and len(ch) == 1:
                return self.base + j
        raise InputError(f"character {ch!r} is not in the alphabet ({self.describe()})")

    def encode(self, text: str) -> list[int]:
        out = []
        for pos, ch in enumerate(text):
            try:
                out.append(self.encode_char(ch))
            except InputError as e:
                raise InputError(f"input position {pos}: {e}") from None
        return out

    def decode_symbol(self, v: int) -> str:
        if not 0 <= v < self.size:
            raise ValueError(f"symbol {v} outside the alphabet 0..{self.size - 1}")
        if v == self.end:
            return "⊣"
        if self.raw_bytes:
            return chr(v)
        if v < self.base:
            return _DIGIT_CHARS[v]
        return self.charset[v - self.base]

    def decode(self, symbols: list[int] | tuple[int, ...]) -> str:
        return "".join(self.decode_symbol(v) for v in symbols)

    def describe(self) -> str:
        if self.raw_bytes:
            return "bytes"
        return f"base {self.base} digits and {self.charset!r}"

    def directive(self) -> str:
        """The ``.alphabet`` line that declares this alphabet in a .lasm file."""
        if self.raw_bytes:
            return ".alphabet bytes"
        if self == Alphabet.numeric(self.base):
            return f".alphabet base {self.base}"
        return f".alphabet base {self.base} charset {_quote(self.charset)}"


def _quote(s: str) -> str:
    """A .lasm string literal for ``s`` (escapes quotes, backslashes and unprintables)."""
    out = []
    for ch in s:
        if ch in "\\\"":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable() and ord(ch) < 256:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


DEFAULT_ALPHABET = Alphabet.numeric(10)
PRINTABLE_ALPHABET = Alphabet.printable(10)
"""Every printable ASCII character: the default alphabet's symbols, then the capitals and
the rest of the punctuation (95 characters and END)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One row of memory. Immutable: a write makes a new Slot."""

    kind: Kind = Kind.EMPTY
    op: Op = Op.NOP
    modes: tuple[Mode, Mode, Mode, Mode] = (Mode.NONE,) * NUM_FIELDS
    args: tuple[int, int, int, int] = (0,) * NUM_FIELDS
    val: int = 0
    table: tuple[int, ...] | None = None  # WEIGHTS slots: f(x) for every symbol x (length V);
    #                                       None: the empty function (every x ↦ END)

    @property
    def ptr(self) -> int:
        """The pointer a DATA slot holds (field p0)."""
        return self.args[0]

    @staticmethod
    def data(val: int = 0, ptr: int = 0) -> Slot:
        return Slot(Kind.DATA, Op.NOP, (Mode.NONE,) * NUM_FIELDS, (ptr, 0, 0, 0), val)

    @staticmethod
    def instr(op: Op, operands: tuple[tuple[Mode, int], ...] = (), imm: int = 0) -> Slot:
        """An instruction from (mode, address) pairs; an IMMEDIATE operand's value is ``imm``."""
        modes = [Mode.NONE] * NUM_FIELDS
        args = [0] * NUM_FIELDS
        for i, (m, a) in enumerate(operands):
            modes[i] = m
            args[i] = 0 if m == Mode.IMMEDIATE else a
        return Slot(Kind.INSTR, op, tuple(modes), tuple(args), imm)  # type: ignore[arg-type]

    @staticmethod
    def weights(table: tuple[int, ...] | list[int]) -> Slot:
        """A WEIGHTS slot holding the function ``x ↦ table[x]`` (one entry per symbol).

        The empty function (every entry END, the last symbol) is stored as ``table=None``,
        its one canonical form: a WEIGHTS slot without a table maps everything to END."""
        t = tuple(int(v) for v in table)
        return Slot(Kind.WEIGHTS, table=None if all(v == len(t) - 1 for v in t) else t)

    def with_val(self, val: int) -> Slot:
        """This slot with ``val`` replaced; writing a field of an EMPTY slot makes it DATA."""
        kind = Kind.DATA if self.kind == Kind.EMPTY else self.kind
        return Slot(kind, self.op, self.modes, self.args, val, self.table)

    def with_ptr(self, ptr: int) -> Slot:
        """This slot with its pointer (p0) replaced; an EMPTY slot becomes DATA."""
        a = self.args
        kind = Kind.DATA if self.kind == Kind.EMPTY else self.kind
        return Slot(kind, self.op, self.modes, (ptr, a[1], a[2], a[3]), self.val, self.table)

    def with_entry(self, x: int, y: int, size: int) -> Slot:
        """This WEIGHTS slot with ``f(x) ← y`` (WSET), for an alphabet of ``size`` symbols."""
        t = list(self.table) if self.table is not None else [size - 1] * size
        t[x] = y
        w = Slot.weights(t)
        return Slot(self.kind, self.op, self.modes, self.args, self.val, w.table)


EMPTY_SLOT = Slot()


@dataclass(frozen=True)
class SourceLoc:
    """Where a slot came from in the .lasm source (1-based line and column)."""

    file: str
    line: int
    col: int
    text: str  # the whole source line, for error messages

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Linkage:
    """How a linked program is laid out (``llamacpu.core.link``):
    ``[IN, OUT | library slots 2..main-1 | main program slots main..]``."""

    library: str                 # the library's name (its source file)
    main: int                    # address of the main program's first slot
    routines: Mapping[str, int]  # the library's routines, label -> address: code that is
    #                              entered only by CALL (a main program may call any of them)


@dataclass(frozen=True)
class Program:
    """An assembled program: the slots it occupies from address 0, and how to read them.

    ``slots[0]`` and ``slots[1]`` are the IN and OUT ports; ``entry`` is where execution
    starts (the label ``start`` if defined, else the first instruction). Equality compares
    what runs (slots, entry, alphabet, labels), not where it came from. ``linkage`` is set
    on a program linked onto a library (``llamacpu.core.link``).
    """

    slots: tuple[Slot, ...]
    entry: int
    alphabet: Alphabet = DEFAULT_ALPHABET
    symbols: Mapping[str, int] = field(default_factory=dict)  # label -> address
    source_map: Mapping[int, SourceLoc] = field(default_factory=dict, compare=False)
    name: str = field(default="<program>", compare=False)
    linkage: Linkage | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.slots)

    def where(self, addr: int) -> str:
        """`file:line:col: source line` for a slot address, or a plain description."""
        loc = self.source_map.get(addr)
        if loc is None:
            return f"{self.name}: slot {addr}"
        return f"{loc}: {loc.text.strip()}"

    def labels_at(self, addr: int) -> list[str]:
        return sorted(k for k, v in self.symbols.items() if v == addr)


@dataclass(frozen=True)
class MemoryImage:
    """Memory at load time: the program, the input region and the output region."""

    slots: tuple[Slot, ...]
    in_base: int   # first input symbol
    in_len: int    # input symbols, END excluded
    out_base: int  # first slot of the output region
    out_size: int

    @property
    def size(self) -> int:
        return len(self.slots)


def default_out_size(input_len: int) -> int:
    """Output-region slots the loader gives an input of this length unless told otherwise."""
    return 4 * (input_len + 1) + 256


def memory_image(program: Program, input_text: str, out_size: int | None = None) -> MemoryImage:
    """Lay out memory: program, then input symbols + END, then ``out_size`` slots of END.

    Sets the IN port's pointer to the first input symbol and OUT's to the output region.
    """
    alpha = program.alphabet
    symbols = alpha.encode(input_text)
    if out_size is None:
        out_size = default_out_size(len(symbols))
    if out_size < 1:
        raise ValueError(f"out_size must be at least 1, got {out_size}")
    n_prog = len(program.slots)
    in_base = n_prog
    out_base = in_base + len(symbols) + 1
    end = alpha.end
    slots = list(program.slots)
    slots[PORT_IN] = slots[PORT_IN].with_ptr(in_base)
    slots[PORT_OUT] = slots[PORT_OUT].with_ptr(out_base)
    # Slots are immutable, so one object per distinct symbol serves every cell holding it.
    data_slot = [Slot.data(v) for v in range(alpha.size)]
    slots.extend([data_slot[v] for v in symbols])
    slots.append(data_slot[end])
    slots.extend([data_slot[end]] * out_size)
    return MemoryImage(tuple(slots), in_base, len(symbols), out_base, out_size)
