"""The disassembler: a :class:`~llamacpu.core.isa.Program` -> ``.lasm`` text.

``disassemble`` prints a Program back as ``.lasm`` text that assembles to an equal Program,
one item per line.
"""

from __future__ import annotations

from collections.abc import Callable

from llamacpu.core.asm import _LABEL_RE, _SPACE
from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    EMPTY_SLOT,
    N_PORTS,
    PORT_IN,
    PORT_OUT,
    RESERVED_LABELS,
    SPEC,
    Alphabet,
    Kind,
    Mode,
    Op,
    Program,
    Slot,
)

__all__ = ["disassemble"]


def _escape(ch: str, quote: str) -> str:
    """One character inside a ``quote``-quoted literal, escaped where the syntax needs it."""
    if ch in ("\\", quote):
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    if (not ch.isprintable() or ch in _SPACE and ch != " ") and ord(ch) < 256:
        return f"\\x{ord(ch):02x}"
    return ch


def _value_text(alpha: Alphabet, v: int) -> str:
    if v == alpha.end:
        return "END"
    if alpha.is_digit(v):
        return str(v)
    return "'" + _escape(alpha.decode_symbol(v), "'") + "'"


def _alphabet_line(alpha: Alphabet) -> str:
    """``Alphabet.directive()``, with unprintable charset characters escaped."""
    if alpha.raw_bytes or all(c.isprintable() for c in alpha.charset):
        return alpha.directive()
    chars = "".join(_escape(c, '"') for c in alpha.charset)
    return f'.alphabet base {alpha.base} charset "{chars}"'


def _addresses(s: Slot) -> list[int]:
    """The addresses a slot refers to: a DATA slot's pointer, an instruction's operands."""
    if s.kind == Kind.DATA:
        return [s.ptr] if s.ptr else []
    if s.kind == Kind.INSTR:
        return [a for m, a in zip(s.modes, s.args) if m in (Mode.DIRECT, Mode.INDIRECT)]
    return []


def disassemble(program: Program) -> str:
    """``.lasm`` text for a Program, one item per line (runs of EMPTY slots as one).

    ``assemble(disassemble(p)) == p`` for every Program whose symbols include the ports
    (everything ``assemble`` makes): labels come from ``program.symbols`` and an address
    without a label is written as the nearest label before it plus an offset. A Program
    without port symbols (built by hand or by a model) gets auto-labels ``L<addr>`` for
    the addresses it refers to (and ``start`` if its entry needs one); it then assembles to
    the same slots and entry, with those labels added to its symbols.

    Raises ValueError, naming the slot address, for what the syntax cannot express:
    WEIGHTS slots with other fields set or f(END) ≠ END, ports that are not plain DATA, instructions with unused fields set,
    modes their roles forbid, values outside the alphabet, addresses outside the program,
    labels the assembler would reject, an entry it would not choose.
    """
    slots, n = program.slots, len(program.slots)
    for a in (PORT_IN, PORT_OUT):
        if a >= n or slots[a] != Slot.data(0, 0):
            raise ValueError(f"slot {a}: the ports IN and OUT must be slots 0 and 1, DATA 0 "
                             f"with pointer 0 (the loader sets them)")
    symbols = dict(program.symbols)
    keep = symbols.get("IN") == PORT_IN and symbols.get("OUT") == PORT_OUT
    for name, addr in symbols.items():
        if name in RESERVED_LABELS:
            if addr != RESERVED_LABELS[name]:
                raise ValueError(f"slot {addr}: label '{name}' is reserved for slot "
                                 f"{RESERVED_LABELS[name]}")
        elif not _LABEL_RE.match(name) or name == "END":
            raise ValueError(f"slot {addr}: {name!r} is not a valid label")
        elif not N_PORTS <= addr < n:
            raise ValueError(f"slot {addr}: label '{name}' must label a slot of the program "
                             f"({N_PORTS}..{n - 1})")
    symbols.update(RESERVED_LABELS)
    by_addr: dict[int, list[str]] = {}
    for name, addr in symbols.items():
        by_addr.setdefault(addr, []).append(name)

    instrs = [a for a in range(n) if slots[a].kind == Kind.INSTR]
    if not instrs:
        raise ValueError("a program needs at least one instruction")
    entry = symbols.get("start", instrs[0])
    if slots[entry].kind != Kind.INSTR:
        raise ValueError(f"slot {entry}: 'start' labels a slot that is not an instruction")
    if program.entry != entry:
        if keep or "start" in symbols or not (0 <= program.entry < n
                                              and slots[program.entry].kind == Kind.INSTR):
            raise ValueError(f"slot {program.entry}: the entry is neither the label 'start' "
                             f"nor the first instruction ({entry})")
        by_addr.setdefault(program.entry, []).append("start")
    if not keep:  # no symbol table to preserve: name every address referred to
        taken = set(symbols)
        for a in sorted({a for s in slots for a in _addresses(s)}):
            if N_PORTS <= a < n and a not in by_addr:
                name = f"L{a}"
                while name in taken:
                    name += "_"
                taken.add(name)
                by_addr[a] = [name]

    def render(at: int, addr: int) -> str:
        """Address ``addr``, referred to by slot ``at``, as a label (plus an offset)."""
        if not 0 <= addr <= n:
            raise ValueError(f"slot {at}: address {addr} is outside the program (0..{n})")
        if addr in by_addr:
            return by_addr[addr][0]
        base = max(b for b in by_addr if b < addr)  # IN labels address 0
        return f"{by_addr[base][0]}+{addr - base}"

    lines = [] if program.alphabet == DEFAULT_ALPHABET else [_alphabet_line(program.alphabet)]
    addr = N_PORTS
    while addr < n:
        run = 1
        if slots[addr] == EMPTY_SLOT:
            while addr + run < n and slots[addr + run] == EMPTY_SLOT \
                    and addr + run not in by_addr:
                run += 1
            text = f".empty {run}"
        else:
            text = _item(program.alphabet, slots[addr], addr, render)
        labels = by_addr.get(addr, [])
        lines.extend(f"{x}:" for x in labels[:-1])
        head = f"{labels[-1]}:" if labels else ""
        if len(head) >= 8:
            lines.append(head)
            head = ""
        lines.append(f"{head:<8}{text}")
        addr += run
    return "\n".join(lines) + "\n"


def _item(alpha: Alphabet, s: Slot, addr: int, render: Callable[[int, int], str]) -> str:
    """One non-EMPTY slot as one ``.lasm`` item; ValueError if the syntax cannot say it."""

    def value(v: int) -> str:
        if not 0 <= v < alpha.size:
            raise ValueError(f"slot {addr}: value {v} is outside the alphabet "
                             f"(0..{alpha.size - 1})")
        return _value_text(alpha, v)

    if s.kind == Kind.EMPTY:
        raise ValueError(f"slot {addr}: an EMPTY slot with fields set: {s}")
    if s.kind == Kind.DATA:
        if s.op != Op.NOP or any(m != Mode.NONE for m in s.modes) or any(s.args[1:]):
            raise ValueError(f"slot {addr}: a DATA slot with instruction fields set: {s}")
        if s.ptr == 0:
            return f".data {value(s.val)}"
        text = f".ptr  {render(addr, s.ptr)}"
        return f"{text}, {value(s.val)}" if s.val else text
    if s.kind == Kind.WEIGHTS:
        return _weights_item(alpha, s, addr)
    if s.kind != Kind.INSTR:
        raise ValueError(f"slot {addr}: {Kind(s.kind).name} slots have no .lasm syntax")
    if s.op not in SPEC:
        raise ValueError(f"slot {addr}: unknown opcode {s.op!r}")
    spec = SPEC[s.op]
    if any(m != Mode.NONE for m in s.modes[spec.arity:]) or any(s.args[spec.arity:]):
        raise ValueError(f"slot {addr}: {spec.mnemonic} uses {spec.arity} fields but unused "
                         f"fields are set: {s}")
    operands: list[str] = []
    immediates = 0
    for k, role in enumerate(spec.roles):
        m, a = s.modes[k], s.args[k]
        if m not in role.modes:
            raise ValueError(f"slot {addr}: operand {k + 1} of {spec.mnemonic} ({role.value}) "
                             f"cannot have mode {getattr(m, 'name', m)}")
        if m == Mode.IMMEDIATE:
            immediates += 1
            if a or immediates > 1:
                raise ValueError(f"slot {addr}: an immediate's field must be 0 and an "
                                 f"instruction has at most one immediate: {s}")
            operands.append("#" + value(s.val))
        else:
            ref = render(addr, a)
            operands.append(f"[{ref}]" if m == Mode.INDIRECT else ref)
    if not immediates and s.val:
        raise ValueError(f"slot {addr}: {spec.mnemonic} has no immediate but val={s.val}")
    mnemonic = spec.mnemonic.lower()
    return f"{mnemonic:<5} " + ", ".join(operands) if operands else mnemonic


def _weights_item(alpha: Alphabet, s: Slot, addr: int) -> str:
    """A WEIGHTS slot as ``.weights "keys" -> "values"`` (entries that are not END)."""
    t = s.table
    if (s.op != Op.NOP or any(m != Mode.NONE for m in s.modes) or any(s.args) or s.val
            or t is not None and (len(t) != alpha.size
                                  or not all(0 <= y < alpha.size for y in t))):
        raise ValueError(f"slot {addr}: a WEIGHTS slot needs a table of {alpha.size} symbols "
                         f"and no other field set: {s}")
    pairs = [(x, y) for x, y in enumerate(t or ()) if y != alpha.end]
    if any(x == alpha.end for x, _ in pairs):
        raise ValueError(f"slot {addr}: .weights cannot say f(END) = {t[alpha.end]}")  # type: ignore[index]
    keys = "".join(_escape(alpha.decode_symbol(x), '"') for x, _ in pairs)
    vals = "".join(_escape(alpha.decode_symbol(y), '"') for _, y in pairs)
    return f'.weights "{keys}" -> "{vals}"'
