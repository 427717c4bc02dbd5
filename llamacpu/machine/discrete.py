"""The machine's fast exact path (**hard, discrete**): memory is decoded once into integer
fields ``[B, N, 11]`` and every read is a gather by address, O(B·P) per read instead of
O(B·N·D), and the batch's rows step in lockstep. ``Machine.run_batch`` uses it (and
``Machine.step`` / ``Machine.run`` in hard mode when autograd does not need the step); it
also detects the faults of the reference interpreter, per row.

:class:`DiscretePath` holds what the path needs of a machine (alphabet, stack size, OEU,
sequencer, per-op features); the machine builds one on each use, so the path always sees
the machine's current OEU, sequencer and device. ``Machine`` converts between this integer
view and its tensor state (``Machine._encode`` / ``Machine._decode``).

Shape letters::

    B  batch rows                N  slots              F  address fields (4)
    O  opcodes (27 built in)     M  operand modes (4)  S  return-stack entries
    V  alphabet symbols          Pw slots of the weights bank (the longest program of the batch)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F_nn
from torch import Tensor

from llamacpu.core.interp import (
    StepFault,
    TraceStep,
    transition,
)
from llamacpu.core.isa import (
    N_PORTS,
    NUM_FIELDS,
    PORT_IN,
    PORT_OUT,
    SPEC,
    Alphabet,
    Kind,
    Mode,
    Op,
    Program,
    Role,
    Slot,
    Write,
    default_out_size,
    op_specs,
    ops_generation,
)
from llamacpu.core.runtypes import _uses_weights
from llamacpu.machine.interfaces import (
    OEU,
    HardOEU,
    HardSequencer,
    MachineResult,
    Sequencer,
    StepView,
)
from llamacpu.machine.symbolic import ExactALU, _op_table_arrays

__all__ = ["DiscretePath"]

_F, _M = NUM_FIELDS, len(Mode)
_CHECK_EVERY = 8  # discrete steps between two "is any row still running?" checks

# Columns of the discrete path's per-op feature table (see _feature_table).
_FT_AB, _FT_T = slice(0, 2), slice(2, 3)      # fields of the operands a, b; the jump target
_FT_DELTA = 3                                 # INC/DEC step
_FT_CHECK = slice(4, 5)                       # pointer / stack fault check (DiscretePath.step)
_FT_USED = slice(5, 9)                        # operand f exists
_FT_WRITE = slice(9, 12)                      # write kind, column written, EMPTY -> DATA
_FT_WRITE_IMM = slice(12, 15)                 # the same when operand 2 is an immediate
_FT_WIDTH = 15

# Columns of the discrete (integer) view of a slot: kind, op, modes, args, val.
_KIND, _OP, _VAL = 0, 1, 10
_MODES = slice(2, 2 + _F)
_ARGS = slice(2 + _F, 2 + 2 * _F)
_P0 = 2 + _F
_COLS = 3 + 2 * _F
_STATIC = _COLS       # 1 if the slot cannot execute (see _static_bad)
_SCRATCH = _COLS + 1  # written by steps that write no field
_W = _COLS + 2        # stored row width


def _feature_table() -> np.ndarray:
    """The discrete path's packed per-op features (one lookup per step), columns _FT_*,
    from the symbolic per-op tables, for the ops defined now."""
    return _features(ops_generation())


@functools.lru_cache(maxsize=8)
def _features(generation: int) -> np.ndarray:
    t = _op_table_arrays()
    used, wk, delta = t["used"], t["wkind"], t["delta"]
    O = len(wk)
    feat = np.zeros((O, _FT_WIDTH), dtype=np.int64)
    feat[:, 0], feat[:, 1], feat[:, 2] = t["a_field"], t["b_field"], t["t_field"]
    feat[:, _FT_DELTA] = delta
    # fault checks besides the ALU's own (ExactALU) and the static ones: 1 a pointer op
    # moves its pointer out of memory, 2 CALL overflows the stack, 3 RET underflows it
    feat[:, _FT_CHECK.start] = np.where(delta != 0, 1, 0)
    feat[Op.CALL, _FT_CHECK.start], feat[Op.RET, _FT_CHECK.start] = 2, 3
    feat[:, _FT_USED] = used
    # MOV d, #v writes d.val only (write kind VAL instead of SLOT)
    imm_kinds = np.where(wk == Write.SLOT, Write.VAL, wk)
    for cols, kinds in ((_FT_WRITE, wk), (_FT_WRITE_IMM, imm_kinds)):
        column = np.choose(kinds, [_SCRATCH, _VAL, _P0, _SCRATCH, _SCRATCH])
        feat[:, cols] = np.stack([kinds, column, (kinds == 1) | (kinds == 2)], 1)
    return feat


# ====================================================================== the integer view

@dataclass
class _Discrete:
    """The hard path's private, mutable integer view of a MachineState.

    ``store`` is slot-major, ``[N + 2, B, 13]``: rows stepping in lockstep mostly touch the
    same addresses, so their gathers hit neighbouring memory. Slot N is a guard (an EMPTY
    slot: fetching past a row's memory faults like fetching its padding) and slot N + 1 a
    sink that rows which do not write write to. Columns: kind, op, mode0..3, p0..p3, val,
    then a static-fault flag (see _static_bad) and a scratch column.
    """

    store: Tensor   # [N + 2, B, 13] long
    pc: Tensor      # [B]
    carry: Tensor   # [B]
    stack: Tensor   # [B, S]
    sp: Tensor      # [B]
    halted: Tensor  # [B] bool
    steps: Tensor   # [B]
    fault: Tensor   # [B] bool
    size: Tensor    # [B]
    wbank: Tensor | None = None  # [B, Pw, V] long: WEIGHTS tables (None: unused)
    psize: Tensor | None = None  # [B] program slots of each row

    @property
    def mem(self) -> Tensor:
        """``[B, N, 13]`` the rows' memories (a view of ``store``)."""
        return self.store[:-2].permute(1, 0, 2)

    @property
    def active(self) -> Tensor:
        return ~(self.halted | self.fault)


class _Kit(NamedTuple):
    """What every discrete step of a run needs, prepared once per run."""

    feat: Tensor       # [O, 15] per-op features (_FT_*)
    row0: Tensor       # [B] b: row b's offset in the flat slot-major [(N + 2)·B, 13] memory
    rows1: Tensor      # [B, 1] the same, as a column
    false: Tensor      # [B] bool zeros
    zero: Tensor       # [B] long zeros
    size_m1: Tensor    # [B] last slot of each row's memory
    check_addr: bool   # some address field points outside its row's memory
    stack_ops: bool    # CALL or RET occurs in some memory
    oeu_hard: Callable[..., tuple[Tensor, Tensor]]
    seq_hard: Callable[..., tuple[Tensor, Tensor, Tensor]] | None  # None: the generic path
    ids: Tensor        # [B] each row's index in the whole batch (rows are dropped when done)
    weights: bool = False  # the rows have a WEIGHTS bank (APPLY / WSET / WEIGHTS slots)


@dataclass(frozen=True)
class _Layout:
    """Where each row's regions lie (for results and heatmaps)."""

    in_base: tuple[int, ...]
    in_len: tuple[int, ...]
    out_base: tuple[int, ...]
    out_size: tuple[int, ...]


# ====================================================================== helpers

def _store(mem: Tensor) -> Tensor:
    """Slot-major storage ``[N + 2, B, 13]`` of ``mem [B, N, 13]``, guard and sink slots
    appended (EMPTY, static fault set)."""
    B, _, W = mem.shape
    extra = torch.zeros(2, B, W, dtype=mem.dtype, device=mem.device)
    extra[..., _STATIC] = 1
    return torch.cat([mem.permute(1, 0, 2), extra], 0)


@functools.lru_cache(maxsize=16)
def _char_table(alphabet: Alphabet) -> dict[str, int]:
    """Every character of the alphabet -> its symbol (digits in either case for bases > 10)."""
    if alphabet.raw_bytes:
        return {chr(i): i for i in range(256)}
    out = {alphabet.decode_symbol(v): v for v in range(alphabet.end)}
    if alphabet.base > 10:
        out.update({ch.upper(): v for ch, v in list(out.items()) if v < alphabet.base})
    return out


@functools.lru_cache(maxsize=16)
def _symbol_table(alphabet: Alphabet) -> tuple[str, ...]:
    return tuple(alphabet.decode_symbol(v) for v in range(alphabet.size))


def _decode_text(alphabet: Alphabet, symbols: Sequence[int]) -> str:
    """``alphabet.decode(symbols)``, through a table."""
    return "".join(map(_symbol_table(alphabet).__getitem__, symbols))


def _encode_text(alphabet: Alphabet, text: str) -> list[int]:
    """``alphabet.encode(text)``, through a table; errors are the alphabet's own."""
    table = _char_table(alphabet)
    try:
        return [table[ch] for ch in text]
    except KeyError:
        return alphabet.encode(text)  # raises the InputError naming the position


def _take_rows(d: _Discrete, ids: Tensor) -> _Discrete:
    """A copy of the rows ``ids`` of ``d``."""
    return _Discrete(d.store.index_select(1, ids), d.pc[ids], d.carry[ids], d.stack[ids],
                     d.sp[ids], d.halted[ids], d.steps[ids], d.fault[ids], d.size[ids],
                     None if d.wbank is None else d.wbank[ids],
                     None if d.psize is None else d.psize[ids])


def _put_rows(d: _Discrete, ids: Tensor, part: _Discrete) -> None:
    """Write ``part`` (rows ``ids`` of ``d``, stepped on) back into ``d``."""
    d.store.index_copy_(1, ids, part.store)
    for name in ("pc", "carry", "stack", "sp", "halted", "steps", "fault"):
        getattr(d, name)[ids] = getattr(part, name)
    if d.wbank is not None:
        d.wbank[ids] = part.wbank


def _slot_rows(slots: Sequence[Slot]) -> np.ndarray:
    """``[n, 11]`` integer rows of Slots (the discrete view)."""
    return np.array([(s.kind, s.op, *s.modes, *s.args, s.val) for s in slots],
                    dtype=np.int64).reshape(len(slots), _COLS)


def _tables(d: _Discrete, r: int) -> np.ndarray | None:
    """Row r's WEIGHTS tables ``[Pw, V]``, or None."""
    return None if d.wbank is None else d.wbank[r].cpu().numpy()


def _rows_to_slots(rows: np.ndarray, tables: np.ndarray | None = None) -> tuple[Slot, ...]:
    """Slots of ``[n, 11]`` integer rows; equal rows share one Slot, as memory_image does.

    ``tables [Pw, V]``: the WEIGHTS bank; a WEIGHTS slot at n < Pw gets ``tables[n]``."""
    made: dict[tuple[int, ...], Slot] = {}
    out = []
    kinds, ops, modes = list(Kind), [s.op for s in op_specs()], list(Mode)
    for n, row in enumerate(map(tuple, rows[:, :_COLS].tolist())):
        if row[0] == Kind.WEIGHTS and tables is not None and n < len(tables):
            row = row + tuple(tables[n].tolist())
        s = made.get(row)
        if s is None:
            table = Slot.weights(row[_COLS:]).table if len(row) > _COLS else None
            s = Slot(kinds[row[0]], ops[row[1]],
                     tuple(modes[m] for m in row[2:6]),  # type: ignore[arg-type]
                     row[6:10], row[10], table)  # type: ignore[arg-type]
            made[row] = s
        out.append(s)
    return tuple(out)


def _static_bad(mem: Tensor) -> Tensor:
    """``[B, N]`` 1 where a slot cannot execute whatever the state: not an instruction,
    an operand mode its op does not accept. Writes keep it true: a val or p0
    write leaves kind, op and modes alone, and MOV copies the column with the slot."""
    t = _op_table_arrays()
    valid = torch.from_numpy(t["valid"]).to(mem.device)                  # [O, F, M]
    op, modes = mem[..., _OP], mem[..., _MODES]
    ok = valid[op[..., None], torch.arange(_F, device=mem.device), modes].all(-1)
    bad = (mem[..., _KIND] != Kind.INSTR) | ~ok
    return bad.long()


def _traces(rec: list[Tensor], B: int) -> list[tuple[TraceStep, ...]]:
    """TraceSteps per row from the recorded step rows (see :meth:`DiscretePath.step`)."""
    out: list[list[TraceStep]] = [[] for _ in range(B)]
    if not rec:
        return [() for _ in range(B)]
    data = torch.cat(rec, 0).tolist()               # executed steps, in order: [R, 38]
    ops, modes = [s.op for s in op_specs()], list(Mode)
    kinds = list(Kind)
    F = _F
    for row in data:
        b_i = row[0]
        step, pc, op = row[1], row[2], ops[row[3]]
        eff, imm = row[4:4 + F], row[4 + F:4 + 2 * F]
        vals, p0s = row[4 + 2 * F:4 + 3 * F], row[4 + 3 * F:4 + 4 * F]
        k = 4 + 4 * F
        c_in, c_out, result, wrote, dst = row[k:k + 5]
        new, nxt = row[k + 5:k + 5 + _W], row[k + 5 + _W]
        addrs: list[int | None] = []
        values: list[int | None] = []
        for i, role in enumerate(SPEC[op].roles):
            if imm[i]:
                addrs.append(None)
                values.append(vals[i])
                continue
            addrs.append(eff[i])
            if role in (Role.SRC, Role.SLOT):
                values.append(vals[i])
            elif role == Role.PTR:
                values.append(p0s[i])
            elif role in (Role.ADDR, Role.TARGET):
                values.append(eff[i])
            else:
                values.append(None)
        written = None
        if wrote:
            table = None
            if new[_KIND] == Kind.WEIGHTS and len(row) > k + 6 + _W:
                table = Slot.weights(row[k + 6 + _W:]).table
            written = Slot(kinds[new[_KIND]], ops[new[_OP]],
                           tuple(modes[m] for m in new[_MODES]),  # type: ignore[arg-type]
                           tuple(new[_ARGS]), new[_VAL], table)  # type: ignore[arg-type]
        out[b_i].append(TraceStep(step, pc, op, tuple(addrs), tuple(values), c_in, c_out,
                                  None if result < 0 else result,
                                  dst if wrote else None, written, nxt))
    return [tuple(x) for x in out]


# ====================================================================== the path

@dataclass(frozen=True, eq=False)
class DiscretePath:
    """The exact discrete path of a machine, with what its steps need of the machine.

    ``Machine`` builds one on each use (it is cheap), so it always sees the machine's current
    OEU, sequencer and device.
    """

    alphabet: Alphabet              # the machine's value symbols
    stack_size: int                 # S: return-stack entries (CALL past them faults)
    oeu: OEU                        # the machine's OEU (its ``hard`` fast path if it has one)
    sequencer: Sequencer            # the machine's sequencer (``hard``, ``select_rows`` if any)
    feat: Tensor                    # [O, 15] per-op features (_FT_*), on the machine's device
    bits_for: Callable[[int], int]  # Machine._bits_for: L of the keys of N slots (or raise)
    alu: ExactALU                   # the exact ALU: which (op, a, b, carry) fault

    # ------------------------------------------------------------------ loading

    def load(self, programs: Sequence[Program], inputs: Sequence[str],
             out_size: int | None, device: torch.device | str | None
             ) -> tuple[_Discrete, _Layout]:
        """Memory images of every row, padded with EMPTY slots to a common N, as integers."""
        if len(programs) != len(inputs):
            raise ValueError(f"{len(programs)} programs but {len(inputs)} inputs")
        if not programs:
            raise ValueError("load_batch needs at least one program")
        alpha = self.alphabet
        bad = sorted({p.alphabet.describe() for p in programs if p.alphabet != alpha})
        if bad:
            raise ValueError(f"every program in a batch must use the machine's alphabet "
                             f"({alpha.describe()}); got {', '.join(bad)}")
        if out_size is not None and out_size < 1:
            raise ValueError(f"out_size must be at least 1, got {out_size}")
        symbols = [_encode_text(alpha, t) for t in inputs]
        lens = np.array([len(s) for s in symbols], dtype=np.int64)
        outs = [default_out_size(len(s)) if out_size is None else out_size for s in symbols]
        P = np.array([len(p.slots) for p in programs], dtype=np.int64)
        if int(P.min()) < N_PORTS:
            raise ValueError("every program holds the IN and OUT ports (at least 2 slots)")
        sizes = P + lens + 1 + np.array(outs, dtype=np.int64)
        B, N = len(programs), int(sizes.max())
        # memory_image, vectorised: [program | input symbols, END | output region of END],
        # written through a [B, N, 13] view of the slot-major store (see _Discrete)
        store = np.zeros((N + 2, B, _W), dtype=np.int64)    # zeros: EMPTY slots
        store[..., _STATIC] = 1                             # nothing but INSTR slots can run
        mem = store[:N].transpose(1, 0, 2)
        groups: dict[int, list[int]] = {}
        for r, p in enumerate(programs):
            groups.setdefault(id(p), []).append(r)
        for rows_of_p in groups.values():
            p = programs[rows_of_p[0]]
            rows = _slot_rows(p.slots)
            mem[rows_of_p, :len(p.slots), :_COLS] = rows
            static = _static_bad(torch.from_numpy(rows)).numpy()
            mem[rows_of_p, :len(p.slots), _STATIC] = static
        pos = np.arange(N)[None, :]
        in_base, out_base = P, P + lens + 1
        mem[..., _KIND] = np.where((pos >= P[:, None]) & (pos < sizes[:, None]), int(Kind.DATA),
                                   mem[..., _KIND])
        mem[..., _VAL] = np.where((pos >= (P + lens)[:, None]) & (pos < sizes[:, None]),
                                  alpha.end, mem[..., _VAL])
        rows_in = np.repeat(np.arange(B), lens)
        cols_in = np.repeat(P, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens,
                                                                          lens))
        mem[rows_in, cols_in, _VAL] = np.fromiter((v for s in symbols for v in s), np.int64,
                                                  int(lens.sum()))
        ports = mem[:, [PORT_IN, PORT_OUT]]                 # memory_image: with_ptr
        ports[..., _P0] = np.stack([in_base, out_base], 1)
        ports[..., _KIND] = np.where(ports[..., _KIND] == Kind.EMPTY, int(Kind.DATA),
                                     ports[..., _KIND])
        mem[:, [PORT_IN, PORT_OUT]] = ports
        sizes_l, in_base, out_base = sizes.tolist(), in_base.tolist(), out_base.tolist()
        self.bits_for(N)  # fail early if address_bits is too small
        dev = torch.device(device) if device is not None else self.feat.device
        S = self.stack_size

        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> Tensor:
            return torch.zeros(*shape, dtype=dtype, device=dev)

        wbank = None
        if any(_uses_weights(p) for p in programs):   # the WEIGHTS bank, [B, Pw, V]
            bank = np.zeros((B, int(P.max()), alpha.size), dtype=np.int64)
            for r, p in enumerate(programs):
                for n, sl in enumerate(p.slots):
                    if sl.kind == Kind.WEIGHTS and sl.table is None:
                        bank[r, n] = alpha.end                # the empty function
                    elif sl.kind == Kind.WEIGHTS:
                        if len(sl.table) != alpha.size:
                            raise ValueError(f"{p.where(n)}: a WEIGHTS slot needs a table of "
                                             f"{alpha.size} symbols")
                        bank[r, n] = sl.table
            wbank = torch.from_numpy(bank).to(dev)
        disc = _Discrete(
            store=torch.from_numpy(store).to(dev),
            pc=torch.tensor([p.entry for p in programs], device=dev),
            carry=zeros(B), stack=zeros(B, S), sp=zeros(B),
            halted=zeros(B, dtype=torch.bool), steps=zeros(B),
            fault=zeros(B, dtype=torch.bool), size=torch.tensor(sizes_l, device=dev),
            wbank=wbank, psize=torch.from_numpy(P).to(dev))
        return disc, _Layout(tuple(in_base), tuple(len(s) for s in symbols), tuple(out_base),
                             tuple(outs))

    def outputs(self, d: _Discrete) -> list[tuple[int, ...]]:
        vals = d.mem[..., _VAL].cpu().numpy()
        outp = d.mem[:, PORT_OUT, _P0].tolist()
        end = self.alphabet.end
        out = []
        for r, (p, n) in enumerate(zip(outp, d.size.tolist())):
            row = vals[r, p:n]
            stop = np.flatnonzero(row == end)
            out.append(tuple(row[: stop[0] if len(stop) else len(row)].tolist()))
        return out

    # ------------------------------------------------------------------ the discrete step

    def kit(self, d: _Discrete, ids: Tensor | None = None, like: _Kit | None = None) -> _Kit:
        """What every discrete step of one run needs, prepared once.

        Two facts about a memory hold for the whole run, because a step only ever writes a
        range-checked pointer, a symbol, or a copy of a slot already in memory: an address
        field points outside its row's memory only if one did at load, and an opcode occurs
        only if it did at load. The kit skips the checks these make unnecessary. ``ids``: the
        rows' indices in the whole batch (for traces); ``like``: a kit whose facts still hold.
        """
        mem = d.mem
        B, dev = mem.shape[0], mem.device
        oeu_hard = self.oeu.hard if isinstance(self.oeu, HardOEU) else self._oeu_generic
        seq_hard = self.sequencer.hard if isinstance(self.sequencer, HardSequencer) else None
        row0 = torch.arange(B, device=dev)
        if like is None:
            check_addr = bool((mem[..., _ARGS] >= d.size[:, None, None]).any())
            ops = mem[..., _OP]
            stack_ops = bool(((ops == Op.CALL) | (ops == Op.RET)).any())
        else:
            check_addr, stack_ops = like.check_addr, like.stack_ops
        return _Kit(self.feat, row0, row0[:, None], torch.zeros(B, dtype=torch.bool, device=dev),
                    torch.zeros(B, dtype=torch.long, device=dev), d.size - 1, check_addr,
                    stack_ops, oeu_hard, seq_hard, row0 if ids is None else ids,
                    d.wbank is not None)

    def _oeu_generic(self, op: Tensor, a: Tensor, b: Tensor, c: Tensor,
                     ptr_eq: Tensor) -> tuple[Tensor, Tensor]:
        """Any OEU in hard mode: one-hot inputs, argmax outputs."""
        V, C = self.alphabet.size, self.alphabet.base
        dt = torch.get_default_dtype()
        out = self.oeu(F_nn.one_hot(op, len(self.feat)).to(dt), F_nn.one_hot(a, V).to(dt),
                       F_nn.one_hot(b, V).to(dt), F_nn.one_hot(c, C).to(dt), ptr_eq.to(dt))
        return out[0].argmax(-1), out[1].argmax(-1)

    def _seq_generic(self, op: Tensor, vals: Tensor, modes: Tensor, c: Tensor,
                     ptr_eq: Tensor, halted: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Any sequencer in hard mode: a one-hot StepView, decisions thresholded at 0.5."""
        V, C = self.alphabet.size, self.alphabet.base
        dt = torch.get_default_dtype()
        view = StepView(F_nn.one_hot(op, len(self.feat)).to(dt), F_nn.one_hot(modes, _M).to(dt),
                        F_nn.one_hot(vals, V).to(dt), F_nn.one_hot(c, C).to(dt),
                        ptr_eq.to(dt), halted.to(dt))
        dec = self.sequencer(view)
        return dec[0] > 0.5, dec[1] > 0.5, dec[2] > 0.5

    def step(self, d: _Discrete, kit: _Kit, rec: list[Tensor] | None) -> None:
        """One exact step of every active row, in place on the private view ``d``.

        Reads are gathers by address from the flat slot-major memory (slot n of row b is
        flat row n·B + b). A row whose instruction faults (``interp.transition`` would raise)
        is frozen with its fault flag set: nothing of the step happens. ``rec`` collects
        trace rows. Written for few tensor ops: at batch 1024 their dispatch is the cost.
        """
        store = d.store
        N2, B, W = store.shape
        N = N2 - 2
        flat = store.view(N2 * B, W)
        S = d.stack.shape[1]
        act, pc, c, row0, rows1 = d.active, d.pc, d.carry, kit.row0, kit.rows1
        ins = flat.index_select(0, pc * B + row0)                              # [B, 13] fetch
        op, modes, args = ins[:, _OP], ins[:, _MODES], ins[:, _ARGS]
        t = kit.feat.index_select(0, op)                                       # [B, 15] per op
        ind = modes == Mode.INDIRECT                                           # [B, F]
        is_imm = modes == Mode.IMMEDIATE
        if kit.check_addr:                  # the guard slot absorbs reads outside memory
            args = args.clamp(max=N)
        ptrs = flat[:, _P0].take(args * B + rows1)                             # [B, F] p.p0
        eff = torch.where(ind, ptrs, args)                                     # [B, F]
        if kit.check_addr:
            eff = eff.clamp(max=N)
        rows = flat.index_select(0, (eff * B + rows1).view(-1)).view(B, _F, W)  # [B, F, 13]
        vals = torch.where(is_imm, ins[:, _VAL:_VAL + 1], rows[..., _VAL])     # [B, F]
        p0s = rows[..., _P0]                                                   # [B, F]
        ab = vals.gather(1, t[:, _FT_AB])                                      # [B, 2]
        a, b = ab[:, 0], ab[:, 1]
        ptr_eq = p0s[:, 1] == p0s[:, 2]
        res, cout = kit.oeu_hard(op, a, b, c, ptr_eq)
        if kit.weights:  # APPLY reads its table; APPLY and WSET keep the carry
            bank = d.wbank                                                     # [B, Pw, V]
            Pw, V = bank.shape[1], bank.shape[2]
            is_apply, is_wset = op == Op.APPLY, op == Op.WSET
            w_addr = torch.where(is_apply, eff[:, 1], eff[:, 0])               # operand w
            w_kind = torch.where(is_apply, rows[:, 1, _KIND], rows[:, 0, _KIND])
            w_row = row0 * Pw + w_addr.clamp(max=Pw - 1)                       # [B] bank row
            res = torch.where(is_apply, bank.view(-1).take(w_row * V + a.clamp(max=V - 1)), res)
            cout = torch.where(is_apply | is_wset, c, cout)
        if kit.seq_hard is None:
            taken, write, halt = self._seq_generic(op, vals, modes, c, ptr_eq, d.halted)
        else:
            taken, write, halt = kit.seq_hard(op, vals)
        g = torch.where(is_imm[:, 1:2], t[:, _FT_WRITE_IMM], t[:, _FT_WRITE])   # [B, 3]
        wk = g[:, 0]                         # write kind: 0 none, 1 val, 2 p0, 3 whole slot
        ptr_res = torch.where(op == Op.LEA, eff[:, 1], p0s[:, 0] + t[:, _FT_DELTA])

        # faults, as interp.transition raises them (their reason is found afterwards):
        # the static column covers non-instructions, bad modes, APPLY and pc past memory;
        # the exact ALU says where an ALU op faults (non-digits, b = 0, a DIV quotient ...)
        moved = torch.clamp(ptr_res, kit.zero, kit.size_m1) != ptr_res
        over, under = (d.sp >= S, d.sp <= 0) if kit.stack_ops else (kit.false, kit.false)
        check = torch.stack([kit.false,
                             moved,                     # 1 INC DEC leave memory
                             over, under], 1)           # 2 CALL, 3 RET
        alu_bad = self.alu(op, a, b, c)[2]
        bad = check.gather(1, t[:, _FT_CHECK])[:, 0] | alu_bad | (ins[:, _STATIC] != 0)
        if kit.weights:  # w must be a WEIGHTS slot; MOV keeps WEIGHTS in the program region
            bad |= (is_apply | is_wset) & ((w_kind != Kind.WEIGHTS) | (w_addr >= d.psize))
            bad |= ((op == Op.MOV) & ~is_imm[:, 1] & (rows[:, 1, _KIND] == Kind.WEIGHTS)
                    & (eff[:, 0] >= d.psize))
        if kit.check_addr:
            size1 = d.size[:, None]
            out = (args >= size1) | (ind & (ptrs >= size1))
            bad |= (t[:, _FT_USED].bool() & ~is_imm & out).any(1)
        bad &= act
        ok = act & ~bad

        # the write: val or p0 (column g[:, 1]), or the whole slot, at operand 0's address
        old = rows[:, 0]                                                       # [B, 13]
        new = torch.where((wk == 3)[:, None], rows[:, 1], old)                 # MOV d, s
        new = new.scatter(1, g[:, 1:2], torch.where(wk == 2, ptr_res, res)[:, None])
        new[:, _KIND] = torch.maximum(new[:, _KIND], g[:, 2])                  # EMPTY -> DATA
        wrote = ok & write & (wk != 0)
        dst = torch.where(wrote, eff[:, 0], N + 1)                             # else: the sink
        flat.index_copy_(0, dst * B + row0, new)
        if kit.weights:  # the bank: WSET sets f_w(a) ← b; MOV d, s copies s's table
            bank2 = bank.view(B * Pw, V)
            wset = wrote & is_wset
            cells = (w_row * V + a.clamp(max=V - 1))[wset]
            bank.view(-1)[cells] = b[wset]
            movw = wrote & (wk == 3) & (rows[:, 1, _KIND] == Kind.WEIGHTS)
            if bool(movw.any()):
                src = row0 * Pw + eff[:, 1].clamp(max=Pw - 1)
                bank2[(row0 * Pw + eff[:, 0].clamp(max=Pw - 1))[movw]] = bank2[src[movw]]

        # next pc, the return stack
        seq = pc + 1
        tgt = eff.gather(1, t[:, _FT_T])[:, 0]
        if kit.stack_ops and S > 0:
            is_ret = op == Op.RET
            top = d.stack.gather(1, (d.sp - 1).clamp(min=0)[:, None])[:, 0]
            tgt = torch.where(is_ret, top, tgt)
            push = ok & taken & (op == Op.CALL)
            at = d.sp.clamp(max=S - 1)[:, None]
            d.stack.scatter_(1, at, torch.where(push, seq, d.stack.gather(1, at)[:, 0])[:, None])
            d.sp = d.sp + push.long() - (ok & taken & is_ret).long()
        nxt = torch.where(halt, pc, torch.where(taken, tgt, seq))
        if rec is not None:
            result = torch.where(wk == 1, res, torch.where(wk == 2, ptr_res, torch.where(
                wk == 3, rows[:, 1, _VAL], -1)))
            cols = [kit.ids[:, None], d.steps[:, None], pc[:, None], op[:, None], eff, is_imm,
                    vals, p0s, c[:, None], cout[:, None], result[:, None], wrote[:, None],
                    eff[:, :1], new, nxt[:, None]]
            if kit.weights:  # the written slot's table (read only for WEIGHTS slots)
                cols.append(bank.view(B * Pw, V)[row0 * Pw + dst.clamp(max=Pw - 1)])
            rec.append(torch.cat(cols, 1)[ok].cpu())
        d.pc = torch.where(ok, nxt, pc)
        d.carry = torch.where(ok, cout, c)
        d.halted |= ok & halt
        d.fault |= bad
        d.steps += ok

    def run(self, d: _Discrete, max_steps: int, rec: list[Tensor] | None) -> None:
        """Step ``d`` until no row is active or ``max_steps`` steps.

        Every few steps it asks how many rows still run; once at most half do, it goes on
        with those rows only (a compacted copy, written back at the end), so one long row
        does not keep a large batch stepping.
        """
        with torch.inference_mode():  # no autograd bookkeeping: ~15 % of a step at B = 1024
            kit = self.kit(d)
            cur, ids = d, None        # the rows being stepped, and their indices in d
            select = getattr(self.sequencer, "select_rows", None)  # a sequencer with per-row
            if select is not None:                                 # state (a prompt cache)
                select(None)                                       # is told which rows run
            done = 0
            while done < max_steps:
                act = cur.active
                n = int(act.sum())
                if n == 0:
                    break
                if n <= act.shape[0] // 2:
                    if ids is not None:
                        _put_rows(d, ids, cur)
                    ids = act.nonzero()[:, 0] if ids is None else ids[act]
                    cur = _take_rows(d, ids)
                    kit = self.kit(cur, ids, kit)
                    if select is not None:
                        select(ids)
                for _ in range(min(_CHECK_EVERY, max_steps - done)):
                    self.step(cur, kit, rec)
                done += _CHECK_EVERY
            if ids is not None:
                _put_rows(d, ids, cur)
            if select is not None:
                select(None)

    # ------------------------------------------------------------------ results

    def results(self, programs: Sequence[Program], d: _Discrete, max_steps: int,
                on_limit: str, rec: list[Tensor] | None, keep_memory: bool
                ) -> list[MachineResult]:
        outputs = self.outputs(d)
        traces = _traces(rec, len(programs)) if rec is not None else None
        mem = d.mem.cpu().numpy()
        pcs, steps, carries = d.pc.tolist(), d.steps.tolist(), d.carry.tolist()
        halted, faulted, sizes = d.halted.tolist(), d.fault.tolist(), d.size.tolist()
        results = []
        for r, p in enumerate(programs):
            fault = None
            if faulted[r]:
                fault = self._fault_reason(p, mem[r, :sizes[r]], d, r)
            elif not halted[r] and on_limit == "raise":
                fault = f"step limit of {max_steps} reached without HALT"
            tr = traces[r] if traces is not None else None
            if fault is not None:
                results.append(MachineResult("", (), steps[r], False, tr, carries[r], pcs[r],
                                             fault))
                continue
            memory = _rows_to_slots(mem[r, :sizes[r]], _tables(d, r)) if keep_memory else None
            results.append(MachineResult(_decode_text(p.alphabet, outputs[r]), outputs[r], steps[r],
                                         bool(halted[r]), tr, carries[r], pcs[r], None, memory))
        return results

    def _fault_reason(self, program: Program, rows: np.ndarray, d: _Discrete, r: int) -> str:
        """The interpreter's reason for the fault of row r, which is frozen at the faulting
        instruction: ``interp.transition`` on that row's memory names it."""
        sp = int(d.sp[r])
        try:
            transition(_rows_to_slots(rows, _tables(d, r)), int(d.pc[r]), int(d.carry[r]),
                       d.stack[r, :sp].tolist(), self.alphabet, step=int(d.steps[r]),
                       stack_size=self.stack_size, program_size=len(program.slots))
        except StepFault as e:
            return e.reason
        return "fault (the machine stopped here; the reference interpreter sees no fault)"
