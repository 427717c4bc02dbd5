"""The differentiable machine (layer 6 of docs/architecture.md): fetch, decode, read, OEU, write,
next PC, halt — every step a tensor operation over the slot memory of ``llamacpu.machine.memory``.

One step::

    fetch     ins = read(M, pc)                       the instruction slot at the PC
    decode    op, modes, field keys p0..p3, imm       one-hot fields of that slot
    operands  direct = read(M, p_f); indirect = read(M, direct.p0)   (``[p]`` → p.p0)
              row_f = m_dir·direct + m_ind·indirect;  val_f = row_f.val + m_imm·imm
    OEU       (result, carry) = oeu(op, a, b, carry, ptr_eq)          (pluggable)
    decide    (p_taken, write_gate, p_halt) = sequencer(StepView)     (pluggable)
    write     M ← M ∘ (1 − g w eᵀ) + g w uᵀ at the destination w = address of operand 0;
              e, u: the value field (value ops), the pointer field p0 (LEA INC DEC) or the
              whole slot (MOV d, s); writing a field of an EMPTY slot makes it DATA
    next pc   p_halt·pc + (1 − p_halt)·(p_taken·target + (1 − p_taken)·(pc + 1));
              CALL pushes pc + 1, RET pops; halted ← halted + (1 − halted)·p_halt

Three ways to run the same step, one semantics (docs/lasm.md, ``interp.transition``):

- **soft** (``hard=False``): reads are attention (``softmax(β q·Kᵀ) M`` through the fused
  pointer-read kernel), every decoded field a distribution, the OEU mixes its op tables by
  the input distributions. Differentiable end to end.
- **hard, differentiable**: the same code with every distribution snapped to a one-hot
  (straight-through: exact forward, the soft gradient backward). Used by :meth:`Machine.step`
  in hard mode whenever autograd needs it (state or machine parameters require grad).
- **hard, discrete**: the fast exact path (``llamacpu.machine.discrete``): integer fields,
  every read a gather by address, the batch's rows in lockstep. :meth:`Machine.run_batch`
  uses it; it also detects the faults of the reference interpreter, per row.

The OEU and the control decisions are pluggable (:class:`OEU`, :class:`Sequencer`, in
``llamacpu.machine.interfaces``; the exact ones are in ``llamacpu.machine.symbolic``), so a
neural OEU or an LLM controller replaces the symbolic ones without touching the machine.
Jump targets always come from the instruction's target field, never from the sequencer.

Shape letters::

    B  batch rows                N  slots              D  slot width (SlotLayout.width)
    A  address-key width (2 L)   F  address fields (4) O  opcodes (27 built in)
    M  operand modes (4)         V  alphabet symbols   C  carry digits (= base)
    S  return-stack entries      T  steps              K  slot kinds (4)
    Pw slots of the weights bank (the longest program of the batch)

WEIGHTS slots (the weight-token channel, ``isa`` module docstring). Their functions live in
a side bank aligned with the program's slots: ``MachineState.weights [B, Pw, V, V]`` holds
each slot's delta Δ (zero-base linear layer, ``Δ[v, x]`` = logit of result v for input x);
the discrete path keeps the tables ``[B, Pw, V]`` (``table[x] = argmax_v Δ[v, x]``). APPLY
reads the bank with the same address weights as its memory read of operand w::

    APPLY d, w, a   result = softmax(s · Δ_w a),  Δ_w = Σ_n w_n Δ_n       (s: APPLY_SCALE)
    WSET  w, a, b   Δ_n ← Δ_n ∘ (1 − g w_n 1 aᵀ) + g w_n b aᵀ              (column a ← b)
    MOV   d, s      Δ_n ← Δ_n (1 − g d_n) + g d_n Δ_s                      (with the slot)

so soft mode is differentiable in the bank, in which slot is read, and in the operands;
the hard paths are exact against the interpreter's tables.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F_nn
from torch import Tensor, nn

from llamacpu.core.interp import (
    DEFAULT_MAX_STEPS,
    DEFAULT_STACK_SIZE,
    Result,
)
from llamacpu.core.isa import (
    DEFAULT_ALPHABET,
    NUM_FIELDS,
    Alphabet,
    Kind,
    Mode,
    Op,
    Program,
    Slot,
    memory_image,
    n_ops,
)
from llamacpu.machine.addressing import DEFAULT_SHARPNESS, AddressCodec, straight_through
from llamacpu.machine.discrete import (
    _ARGS,
    _KIND,
    _MODES,
    _OP,
    _VAL,
    DiscretePath,
    _Discrete,
    _feature_table,
    _Layout,
    _rows_to_slots,
    _static_bad,
    _store,
    _tables,
    _traces,
)
from llamacpu.machine.draw import AttentionMaps
from llamacpu.machine.interfaces import (
    OEU,
    MachineResult,
    Sequencer,
    StepView,
    apply_result,
)
from llamacpu.machine.memory import HybridSWM, SlotLayout
from llamacpu.machine.symbolic import (
    _TINY,
    ExactALU,
    SymbolicOEU,
    SymbolicSequencer,
    _op_table_arrays,
)

__all__ = [
    "MachineConfig", "MachineState", "Machine", "default_machine", "load_batch", "run_batch",
    "run_program", "with_weights",
]

_F, _M, _K = NUM_FIELDS, len(Mode), len(Kind)


# ====================================================================== state and config

@dataclass(frozen=True)
class MachineConfig:
    """How the machine is built."""

    alphabet: Alphabet = DEFAULT_ALPHABET  # value symbols; every loaded program must use it
    stack_size: int = DEFAULT_STACK_SIZE   # S: return-stack entries (CALL past them faults)
    sharpness: float = DEFAULT_SHARPNESS   # β of soft addressing, softmax(β q·Kᵀ)
    address_bits: int | None = None        # L of the address keys; None: fewest for N + 1 slots

    def __post_init__(self) -> None:
        if self.stack_size < 0:
            raise ValueError(f"stack_size must be >= 0, got {self.stack_size}")
        if not self.sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {self.sharpness}")
        if self.address_bits is not None and not 1 <= self.address_bits <= 30:
            raise ValueError(f"address_bits must be in 1..30, got {self.address_bits}")


class MachineState(NamedTuple):
    """The whole machine between two steps (a batch of independent rows).

    ``step`` returns a new state; nothing here is modified in place.
    """

    memory: Tensor  # [B, N, D] slot vectors (SlotLayout: kind | op | modes | p0..p3 | val)
    pc: Tensor      # [B, A] address key of the instruction to execute next
    carry: Tensor   # [B, C] distribution over the carry digit
    stack: Tensor   # [B, S, A] return addresses (keys); entry d is filled at depth d
    sp: Tensor      # [B, S+1] distribution over the stack depth 0..S
    halted: Tensor  # [B] in [0, 1]; rows with 1 no longer change
    steps: Tensor   # [B] instructions executed (expected count in soft mode)
    fault: Tensor   # [B] 1 where hard mode detected a fault; the row is frozen
    size: Tensor    # [B] long: slots of the row's own memory (the rest is EMPTY padding)
    weights: Tensor | None = None  # [B, Pw, V, V] the WEIGHTS bank (Pw = 0: no program uses it)
    psize: Tensor | None = None    # [B] long: program slots of each row (where WEIGHTS live)


# ====================================================================== helpers

def _snap(x: Tensor) -> Tensor:
    """One-hot of the argmax along the last axis, straight-through to ``x``."""
    hard = F_nn.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
    return straight_through(hard, x)


def _snap_bool(x: Tensor) -> Tensor:
    """``x > 0.5`` as 0/1, straight-through to ``x``."""
    return straight_through((x > 0.5).to(x.dtype), x)


# ====================================================================== the machine

class Machine(nn.Module):
    """The differentiable computer: a slot memory stepped by a pluggable OEU and sequencer.

    >>> from llamacpu.core.golden import load_program
    >>> m = Machine(MachineConfig())
    >>> [r.output for r in m.run_batch([load_program("add")] * 2, ["2+3", "99+1"])]
    ['5', '100']
    """

    def __init__(self, config: MachineConfig = MachineConfig(),  # noqa: B008 (frozen)
                 oeu: OEU | None = None, sequencer: Sequencer | None = None) -> None:
        super().__init__()
        self.config = config
        self.oeu = oeu if oeu is not None else SymbolicOEU(config.alphabet)
        self.sequencer = sequencer if sequencer is not None else SymbolicSequencer()
        self.n_ops = n_ops()  # O: the ops defined now (isa.define_op may have added some)
        self.exact_alu = ExactALU(config.alphabet)  # which ALU inputs fault (discrete path)
        t = _op_table_arrays()
        self.register_buffer("_t_feat", torch.from_numpy(_feature_table()), persistent=False)
        for name in ("asel", "bsel", "tsel", "value_nomov", "jumps"):
            self.register_buffer(f"_t_{name}", torch.from_numpy(t[name]).float(),
                                 persistent=False)
        self._memories: dict[int, HybridSWM] = {}

    @property
    def alphabet(self) -> Alphabet:
        return self.config.alphabet

    # ------------------------------------------------------------------ layout

    def memory_for(self, width_or_bits: int, *, bits: bool = False) -> HybridSWM:
        """The HybridSWM (layout, codec, sharpness) of slot width D, or of L address bits."""
        V = self.alphabet.size
        fixed = _K + self.n_ops + _F * _M + V
        if bits:
            L = width_or_bits
        else:
            L, rest = divmod(width_or_bits - fixed, 2 * _F)
            if rest or L < 1:
                raise ValueError(f"slot width {width_or_bits} is not a SlotLayout width for "
                                 f"{self.alphabet.describe()} (expected {fixed} + 8 L)")
        if L not in self._memories:
            layout = SlotLayout(self.alphabet, AddressCodec(L), self.n_ops)
            self._memories[L] = HybridSWM(layout, self.config.sharpness)
        return self._memories[L]

    def _bits_for(self, n: int) -> int:
        need = AddressCodec.for_size(n + 1).bits  # pc + 1 of the last slot stays a key
        L = self.config.address_bits
        if L is None:
            return need
        if L < need:
            raise ValueError(f"address_bits = {L} cannot address {n} slots (need {need})")
        return L

    # ------------------------------------------------------------------ loading

    def load_batch(self, programs: Sequence[Program], inputs: Sequence[str],
                   out_size: int | None = None, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> MachineState:
        """The machine at load time, one row per (program, input): ``isa.memory_image`` of
        each, padded with EMPTY slots to a common N; pc at each program's entry.

        Raises ValueError if the programs' alphabets differ from the machine's.
        """
        disc, _ = self._load_discrete(programs, inputs, out_size, device)
        return self._encode(disc, dtype)

    # ------------------------------------------------------------------ the discrete path

    def _discrete(self) -> DiscretePath:
        """The exact discrete path with this machine's current OEU, sequencer and device."""
        return DiscretePath(self.alphabet, self.config.stack_size, self.oeu, self.sequencer,
                            self._t_feat, self._bits_for, self.exact_alu)

    def _load_discrete(self, programs: Sequence[Program], inputs: Sequence[str],
                       out_size: int | None, device: torch.device | str | None
                       ) -> tuple[_Discrete, _Layout]:
        """:meth:`DiscretePath.load`: memory images of every row, padded with EMPTY slots to
        a common N, as integers."""
        return self._discrete().load(programs, inputs, out_size, device)

    def _run_discrete(self, d: _Discrete, max_steps: int, rec: list[Tensor] | None) -> None:
        """:meth:`DiscretePath.run`: step ``d`` until no row is active or ``max_steps`` steps."""
        self._discrete().run(d, max_steps, rec)

    # ------------------------------------------------------------------ int view <-> tensors

    def _encode(self, d: _Discrete, dtype: torch.dtype) -> MachineState:
        """The MachineState of an integer view: one-hots and exact address keys."""
        B, N, _ = d.mem.shape
        top = max(N, int(d.mem[..., _ARGS].max()) if d.mem.numel() else 0)   # keys hold every field
        codec = self.memory_for(self._bits_for(top), bits=True).codec
        V, C, S = self.alphabet.size, self.alphabet.base, d.stack.shape[1]
        m = d.mem

        def hot(x: Tensor, n: int) -> Tensor:
            return F_nn.one_hot(x, n).to(dtype)

        memory = torch.cat([hot(m[..., _KIND], _K), hot(m[..., _OP], self.n_ops),
                            hot(m[..., _MODES], _M).flatten(-2),
                            codec.address_to_key(m[..., _ARGS], dtype=dtype).flatten(-2),
                            hot(m[..., _VAL], V)], -1)                      # [B, N, D]
        f = d.fault.to(dtype)
        if d.wbank is None:                                                 # [B, Pw, V, V]
            weights = torch.zeros(B, 0, V, V, dtype=dtype, device=d.pc.device)
        else:
            weights = hot(d.wbank, V).transpose(-1, -2)
        return MachineState(
            memory=memory, pc=codec.address_to_key(d.pc, dtype=dtype),
            carry=hot(d.carry, C), stack=codec.address_to_key(d.stack, dtype=dtype),
            sp=hot(d.sp, S + 1), halted=d.halted.to(dtype), steps=d.steps.to(dtype),
            fault=f, size=d.size.clone(), weights=weights,
            psize=None if d.psize is None else d.psize.clone())

    def _decode(self, s: MachineState) -> _Discrete:
        """The integer view of a state: argmax of each one-hot, nearest address of each key
        (exact for hard states; a rounding of soft ones)."""
        M = s.memory
        swm = self.memory_for(M.shape[-1])
        lay, codec = swm.layout, swm.codec
        x = M.detach()
        mem = torch.cat([lay.get(x, "kind").argmax(-1, keepdim=True),
                         lay.get(x, "op").argmax(-1, keepdim=True),
                         lay.modes(x).argmax(-1),
                         codec.key_to_address(lay.args(x)),
                         lay.get(x, "val").argmax(-1, keepdim=True)], -1)   # [B, N, 11]
        mem = torch.cat([mem, _static_bad(mem)[..., None],
                         torch.zeros_like(mem[..., :1])], -1)                 # [B, N, 13]
        return _Discrete(
            store=_store(mem), pc=codec.key_to_address(s.pc), carry=s.carry.detach().argmax(-1),
            stack=codec.key_to_address(s.stack), sp=s.sp.detach().argmax(-1),
            halted=s.halted.detach() > 0.5, steps=s.steps.detach().round().long(),
            fault=s.fault.detach() > 0.5, size=s.size.clone(),
            wbank=(None if s.weights is None or not s.weights.shape[1]
                   else s.weights.detach().argmax(-2)),                     # [B, Pw, V]
            psize=s.psize.clone() if s.psize is not None else s.size.clone())

    def harden(self, state: MachineState) -> MachineState:
        """The nearest exact state: every field snapped to its argmax / nearest address."""
        return self._encode(self._decode(state), state.memory.dtype)

    def decode_memory(self, state: MachineState) -> list[tuple[Slot, ...]]:
        """Each row's memory as Slots (its own ``size`` slots, padding dropped)."""
        d = self._decode(state)
        mem = d.mem.cpu().numpy()
        return [_rows_to_slots(mem[r, :n], _tables(d, r)) for r, n in enumerate(d.size.tolist())]

    def read_outputs(self, state: MachineState) -> list[str]:
        """Each row's answer: symbols from OUT.p0 up to END (of the hardened state)."""
        d = self._decode(state)
        return [self.alphabet.decode(s) for s in self._discrete().outputs(d)]

    # ------------------------------------------------------------------ stepping

    def _wants_grad(self, state: MachineState) -> bool:
        if not torch.is_grad_enabled():
            return False
        return (any(t is not None and t.requires_grad for t in state)
                or any(p.requires_grad for p in self.parameters()))

    def step(self, state: MachineState, hard: bool = True) -> MachineState:
        """One instruction on every row that has not halted; returns the new state.

        Hard mode runs the discrete path (decode, exact step, encode: O(B·N·D) for the copy)
        unless autograd needs the step, then the straight-through dense path.
        """
        if not hard or self._wants_grad(state):
            return self._dense_step(state, hard)[0]
        d = self._decode(state)
        path = self._discrete()
        path.step(d, path.kit(d), None)
        return self._encode(d, state.memory.dtype)

    def run(self, state: MachineState, max_steps: int, hard: bool = True) -> MachineState:
        """Step until every row has halted (or faulted), at most ``max_steps`` times."""
        if not hard or self._wants_grad(state):
            for _ in range(max_steps):
                if bool(((state.halted > 0.5) | (state.fault > 0.5)).all()):
                    break
                state = self._dense_step(state, hard)[0]
            return state
        d = self._decode(state)
        self._run_discrete(d, max_steps, None)
        return self._encode(d, state.memory.dtype)

    # ------------------------------------------------------------------ the dense step

    def _dense_step(self, s: MachineState, hard: bool, record: bool = False
                    ) -> tuple[MachineState, Tensor | None]:
        """One step by attention (soft) or snapped attention (hard, straight-through).

        Returns the new state and, if ``record``, the read weights [B, 1 + F, N]
        (fetch, then each operand's effective address).
        """
        M = s.memory
        B, N, D = M.shape
        swm = self.memory_for(D)
        lay, codec = swm.layout, swm.codec
        L, dt = codec.bits, M.dtype
        keys = swm.keys(N, dtype=dt, device=M.device)                          # [N, A]
        snap = _snap if hard else (lambda x: x)
        cast = {n: getattr(self, f"_t_{n}").to(dt)
                for n in ("asel", "bsel", "tsel", "value_nomov", "jumps")}
        live = (1 - s.halted) * (1 - s.fault)                                  # [B] rows that run

        # fetch and decode: ins = read(M, pc)
        fetch = swm.read(M, s.pc[:, None], hard=hard, keys=keys, need_weights=record)
        ins = fetch.values[:, 0]                                               # [B, D]
        op = snap(lay.get(ins, "op"))                                          # [B, O]
        modes = snap(lay.modes(ins))                                           # [B, F, M]
        args = lay.args(ins)                                                   # [B, F, A]
        imm = snap(lay.get(ins, "val"))                                        # [B, V]

        # operands: [p] reads the slot that p.p0 points to
        direct = swm.read(M, args, hard=hard, keys=keys)                       # [B, F, D]
        pk = lay.args(direct.values)[:, :, 0]                                  # [B, F, A]
        indirect = swm.read(M, pk, hard=hard, keys=keys, need_weights=True)
        m_dir, m_ind = modes[..., Mode.DIRECT], modes[..., Mode.INDIRECT]      # [B, F]
        m_imm = modes[..., Mode.IMMEDIATE]
        rows = m_dir[..., None] * direct.values + m_ind[..., None] * indirect.values
        ek = m_dir[..., None] * args + m_ind[..., None] * pk                   # [B, F, A]
        vals = lay.get(rows, "val") + m_imm[..., None] * imm[:, None]          # [B, F, V]
        pv = lay.args(rows)[:, :, 0]                                           # [B, F, A] p0s
        assert direct.weights is not None and indirect.weights is not None
        w_eff = m_dir[..., None] * direct.weights + m_ind[..., None] * indirect.weights

        # the OEU
        a = torch.einsum("bo,of,bfv->bv", op, cast["asel"], vals)              # [B, V]
        b = torch.einsum("bo,of,bfv->bv", op, cast["bsel"], vals)
        # ptr_eq = exp(β (p·q − L)): 1 for equal keys, ≤ e^(−2β) for different ones
        ptr_eq = torch.exp(self.config.sharpness * ((pv[:, 1] * pv[:, 2]).sum(-1) - L))
        if hard:
            ptr_eq = _snap_bool(ptr_eq)
        result, carry_out = self.oeu(op, a, b, s.carry, ptr_eq)
        result, carry_out = snap(result), snap(carry_out)
        Wb = s.weights                                                         # [B, Pw, V, V]
        if Wb is not None and not Wb.shape[1]:
            Wb = None                                                          # no bank: skip
        if Wb is not None:
            Pw = Wb.shape[1]
            # APPLY: result = softmax(s · Δ_w a), Δ_w = Σ_n w_n Δ_n read with operand w's weights
            delta = torch.einsum("bn,bnvx->bvx", w_eff[:, 1, :Pw], Wb)           # [B, V, V]
            applied = snap(apply_result(delta, a))                             # [B, V]
            p_apply = op[:, Op.APPLY, None]
            result = result + p_apply * (applied - result)
            keep = (op[:, Op.APPLY] + op[:, Op.WSET])[:, None]                 # carry unchanged
            carry_out = carry_out + keep * (s.carry - carry_out)

        # the decisions
        dec = self.sequencer(StepView(op, modes, vals, s.carry, ptr_eq, s.halted))
        taken, gate, p_halt = (_snap_bool(x) if hard else x for x in dec)

        # the write: M ← M ∘ (1 − g w eᵀ) + g w uᵀ, e and u mixed over the write kinds
        mov_imm = op[:, Op.MOV] * m_imm[:, 1]
        g_val = op @ cast["value_nomov"] + mov_imm                             # [B] val field
        g_slot = op[:, Op.MOV] - mov_imm                                       # [B] whole slot
        g_ptr = op[:, Op.LEA] + op[:, Op.INC] + op[:, Op.DEC]                  # [B] p0 field
        p0_new = (op[:, Op.LEA, None] * ek[:, 1]
                  + op[:, Op.INC, None] * codec.inc(pv[:, 0], hard)
                  + op[:, Op.DEC, None] * codec.dec(pv[:, 0], hard))           # [B, A]
        m_val = lay.mask("val", dtype=dt, device=M.device)                     # [D]
        m_p0 = lay.mask("p0", dtype=dt, device=M.device)
        erase = g_val[:, None] * m_val + g_ptr[:, None] * m_p0 + g_slot[:, None]   # [B, D]
        add = (g_val[:, None] * lay.place("val", result) + lay.place("p0", p0_new)
               + g_slot[:, None] * rows[:, 1])                                 # [B, D]
        norm = 1 / (g_val + g_slot + g_ptr).clamp_min(_TINY)                   # [B]
        gw = (gate * live * norm)[:, None] * w_eff[:, 0]                       # [B, N]
        new = M * (1 - gw[:, :, None] * erase[:, None, :]) + gw[:, :, None] * add[:, None, :]
        # writing a field of an EMPTY slot makes it DATA: move that slot's EMPTY mass
        kind = lay.field("kind")
        promote = torch.zeros(D, dtype=dt, device=M.device)
        promote[kind.start + Kind.DATA] = 1
        promote[kind.start + Kind.EMPTY] = -1
        moved = gw * (g_val + g_ptr)[:, None] * M[..., kind.start + Kind.EMPTY]  # [B, N]
        new = new + moved[..., None] * promote
        if Wb is not None:
            # WSET: Δ_n ← Δ_n ∘ (1 − g w_n 1 aᵀ) + g w_n b aᵀ, w_n operand 0's address weights
            gws = (gate * live * op[:, Op.WSET])[:, None] * w_eff[:, 0, :Pw]   # [B, Pw]
            col = gws[:, :, None, None] * a[:, None, None, :]                  # [B, Pw, 1, V]
            Wb = Wb * (1 - col) + col * b[:, None, :, None]
            # MOV d, s: Δ_d ← Δ_d (1 − g d) + g d Δ_s
            gm = (gate * live * g_slot)[:, None] * w_eff[:, 0, :Pw]            # [B, Pw]
            src = torch.einsum("bn,bnvx->bvx", w_eff[:, 1, :Pw], Wb)           # [B, V, V]
            Wb = Wb * (1 - gm[..., None, None]) + gm[..., None, None] * src[:, None]

        # next pc: p_halt·pc + (1 − p_halt)·(taken·target + (1 − taken)·(pc + 1))
        seq = codec.inc(s.pc, hard)                                            # [B, A]
        S = s.stack.shape[1]
        top = torch.einsum("bs,bsa->ba", s.sp[:, 1:], s.stack)                 # [B, A]
        jump = torch.einsum("bo,of,bfa->ba", op, cast["tsel"], ek) + op[:, Op.RET, None] * top
        target = jump / (op @ cast["jumps"]).clamp_min(_TINY)[:, None]
        p_h, p_t = p_halt[:, None], taken[:, None]
        nxt = p_h * s.pc + (1 - p_h) * (p_t * target + (1 - p_t) * seq)
        # CALL pushes pc + 1 at depth sp; RET pops
        push, pop = op[:, Op.CALL] * taken * live, op[:, Op.RET] * taken * live  # [B]
        w_push = push[:, None] * s.sp[:, :S]                                   # [B, S]
        stack = s.stack * (1 - w_push[..., None]) + w_push[..., None] * seq[:, None]
        up = F_nn.pad(s.sp[:, :-1], (1, 0))                                    # depth + 1
        down = F_nn.pad(s.sp[:, 1:], (0, 1))                                   # depth − 1
        sp = s.sp * (1 - push - pop)[:, None] + push[:, None] * up + pop[:, None] * down

        lv = live[:, None]
        state = MachineState(
            memory=new,
            pc=(1 - lv) * s.pc + lv * nxt,
            carry=(1 - lv) * s.carry + lv * carry_out,
            stack=stack, sp=sp,
            halted=s.halted + live * p_halt,
            steps=s.steps + live,
            fault=s.fault, size=s.size, weights=s.weights if Wb is None else Wb, psize=s.psize)
        weights = None
        if record:
            assert fetch.weights is not None
            weights = torch.cat([fetch.weights, w_eff], 1).detach()            # [B, 1 + F, N]
        return state, weights

    # ------------------------------------------------------------------ batched runs

    def run_batch(self, programs: Sequence[Program], inputs: Sequence[str],
                  max_steps: int = DEFAULT_MAX_STEPS, hard: bool = True, trace: bool = False,
                  *, out_size: int | None = None, on_limit: str = "raise",
                  keep_memory: bool = False, device: torch.device | str | None = None
                  ) -> list[MachineResult]:
        """Run each program on its input, all rows in lockstep; one result per row.

        Hard mode is the exact discrete path; ``trace`` (hard only) records the interpreter's
        TraceSteps. Soft mode runs the attention machine without gradients and reads the answer
        from the hardened final memory. A row that faults (or, with ``on_limit="raise"``, does
        not halt within ``max_steps``) gets ``fault`` = the interpreter's reason.
        """
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        if on_limit not in ("raise", "stop"):
            raise ValueError(f"on_limit must be 'raise' or 'stop', got {on_limit!r}")
        if trace and not hard:
            raise ValueError("trace=True needs hard mode (a soft step has no single trace)")
        d, layout = self._load_discrete(programs, inputs, out_size, device)
        rec: list[Tensor] | None = [] if trace else None
        if hard:
            self._run_discrete(d, max_steps, rec)
        else:
            with torch.no_grad():
                state = self.run(self._encode(d, torch.float32), max_steps, hard=False)
            d = self._decode(state)
        return self._discrete().results(programs, d, max_steps, on_limit, rec, keep_memory)

    # ------------------------------------------------------------------ attention maps

    def attention(self, program: Program, input_text: str, max_steps: int = DEFAULT_MAX_STEPS,
                  hard: bool = True, *, out_size: int | None = None, max_rows: int = 1024,
                  max_cols: int = 1024) -> AttentionMaps:
        """Where fetch and each operand read looked at every step of one run, binned to at
        most ``max_rows`` × ``max_cols`` (max over a bin)."""
        d, lay = self._load_discrete([program], [input_text], out_size, None)
        N, n = d.mem.shape[1], int(d.size[0])
        slot_bin = -(-N // max_cols)
        cols = -(-N // slot_bin)
        chunks: list[Tensor] = []                                              # [1 + F, N']
        if hard:
            rec: list[Tensor] = []
            self._run_discrete(d, max_steps, rec)
            for t in _traces(rec, 1)[0]:
                img = torch.zeros(1 + _F, cols)
                img[0, t.pc // slot_bin] = 1
                for i, a in enumerate(t.addrs):
                    if a is not None:
                        img[1 + i, a // slot_bin] = 1
                chunks.append(img)
        else:
            state = self._encode(d, torch.float32)
            with torch.no_grad():
                for _ in range(max_steps):
                    if bool(((state.halted > 0.5) | (state.fault > 0.5)).all()):
                        break
                    state, w = self._dense_step(state, False, record=True)
                    assert w is not None
                    w = F_nn.pad(w[0], (0, cols * slot_bin - N))               # [1 + F, N'·bin]
                    chunks.append(w.reshape(1 + _F, cols, slot_bin).amax(-1))
        T = len(chunks)
        step_bin = max(1, -(-T // max_rows))
        image = torch.stack(chunks, 1) if chunks else torch.zeros(1 + _F, 0, cols)
        pad = (-T) % step_bin
        image = F_nn.pad(image, (0, 0, 0, pad))
        image = image.reshape(1 + _F, -1, step_bin, cols).amax(2)
        regions = (("program", 0), ("input", lay.in_base[0]), ("output", lay.out_base[0]),
                   ("end", n))
        labels = ("fetch",) + tuple(f"operand {i + 1}" for i in range(_F))
        return AttentionMaps(image, labels, T, N, step_bin, slot_bin, regions, hard)


# ====================================================================== module-level helpers

@functools.lru_cache(maxsize=16)
def default_machine(alphabet: Alphabet = DEFAULT_ALPHABET,
                    stack_size: int = DEFAULT_STACK_SIZE) -> Machine:
    """The symbolic machine of an alphabet and stack size, built once (cached): its tables
    take a moment. Shared: do not modify it; build a Machine to change anything."""
    return Machine(MachineConfig(alphabet=alphabet, stack_size=stack_size))


def _machine_for(programs: Sequence[Program], stack_size: int) -> Machine:
    if not programs:
        raise ValueError("need at least one program")
    return default_machine(programs[0].alphabet, stack_size)


def load_batch(programs: Sequence[Program], inputs: Sequence[str],
               out_size: int | None = None) -> MachineState:
    """:meth:`Machine.load_batch` on the symbolic machine of the programs' alphabet."""
    return _machine_for(programs, DEFAULT_STACK_SIZE).load_batch(programs, inputs, out_size)


def run_batch(programs: Sequence[Program], inputs: Sequence[str],
              max_steps: int = DEFAULT_MAX_STEPS, hard: bool = True, trace: bool = False, *,
              out_size: int | None = None, stack_size: int = DEFAULT_STACK_SIZE,
              on_limit: str = "raise", keep_memory: bool = False) -> list[MachineResult]:
    """:meth:`Machine.run_batch` on the symbolic machine of the programs' alphabet."""
    return _machine_for(programs, stack_size).run_batch(
        programs, inputs, max_steps, hard, trace, out_size=out_size, on_limit=on_limit,
        keep_memory=keep_memory)


def run_program(program: Program, input_text: str, max_steps: int = DEFAULT_MAX_STEPS, *,
                hard: bool = True, trace: bool = False, out_size: int | None = None,
                stack_size: int = DEFAULT_STACK_SIZE) -> Result:
    """One run as ``interp.run`` does it (same Result, same MachineFault), on the machine."""
    image = memory_image(program, input_text, out_size)
    machine = default_machine(program.alphabet, stack_size)
    res = machine.run_batch([program], [input_text], max_steps, hard, trace,
                            out_size=out_size, keep_memory=True)[0]
    res.raise_fault(program)
    return res.to_result(image)


def with_weights(state: MachineState, addr: int, delta: Tensor) -> MachineState:
    """The state with WEIGHTS slot ``addr``'s delta replaced by ``delta [B, V, V]`` in every row
    (how a controller's weight head writes a slot; differentiable in ``delta``).

    The slot must be a WEIGHTS slot of every row's program (loaded from the Program).
    """
    if state.weights is None or not 0 <= addr < state.weights.shape[1]:
        raise ValueError(f"slot {addr} is not in the WEIGHTS bank of this state (load a program "
                         f"with a WEIGHTS slot at {addr})")
    W = state.weights
    onehot = torch.zeros(W.shape[1], dtype=W.dtype, device=W.device)
    onehot[addr] = 1
    m = onehot[None, :, None, None]
    return state._replace(weights=W * (1 - m) + m * delta[:, None].to(W.dtype))
