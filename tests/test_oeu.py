"""The neural OEU: low-rank deltas behave as W + UVᵀ, and it learns exact op tables."""

import random

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacpu.core.isa import DEFAULT_ALPHABET, Op
from llamacpu.learn.tasks import TASKS, expert
from llamacpu.machine.oeu import (
    LowRankDelta,
    LowRankLinear,
    NeuralOEU,
    OEUConfig,
    examples_from_traces,
    oeu_loss,
)


def _inputs(B, cfg, gen):
    V, C = cfg.alphabet.size, cfg.n_carry
    op = torch.rand(B, len(Op), generator=gen).softmax(-1)
    a = torch.rand(B, V, generator=gen).softmax(-1)
    b = torch.rand(B, V, generator=gen).softmax(-1)
    c = torch.rand(B, C, generator=gen).softmax(-1)
    return op, a, b, c, torch.rand(B, generator=gen)


def test_zero_delta_is_bit_identical_to_no_delta():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    oeu = NeuralOEU(OEUConfig(hidden=32))
    x = _inputs(5, oeu.cfg, gen)
    zeros = [LowRankDelta(torch.zeros(5, layer.out_features, 2), torch.zeros(5, layer.in_features, 2))
             for layer in (*oeu.layers, oeu.head)]
    base, with_zero = oeu.logits(*x), oeu.logits(*x, deltas=zeros)
    for u, v in zip(base, with_zero):
        assert torch.equal(u, v)


def test_low_rank_delta_equals_dense_weight_update_per_sample():
    torch.manual_seed(1)
    lin = LowRankLinear(7, 5).double()
    x = torch.randn(3, 7, dtype=torch.float64)
    d = LowRankDelta(torch.randn(3, 5, 2, dtype=torch.float64), torch.randn(3, 7, 2, dtype=torch.float64))
    got = lin(x, d)
    for i in range(3):
        w = lin.weight + d.u[i] @ d.v[i].T  # W + U Vᵀ for sample i
        torch.testing.assert_close(got[i], x[i] @ w.T + lin.bias)


def test_oeu_learns_the_addition_table_exactly_from_traces():
    """Trained only on expert traces of additions, the OEU reproduces the whole ADD table.

    An MLP over one-hot symbols learns a table, not arithmetic: it is exact on the entries
    the traces show it. Two-digit sums "a0+b0" and "a9+b1" put every (a, b, carry-in)
    column into the traces.
    """
    torch.manual_seed(0)
    add_task = TASKS["add"]
    prompts = [add_task.make((f"{a}{u}", f"{b}{v}")) for a in range(10) for b in range(10)
               for u, v in (("0", "0"), ("9", "1"))]
    rng = random.Random(0)
    prompts += [add_task.sample(rng, 1) for _ in range(40)]  # 0 as a top digit, 1-digit sums
    traces = [expert(ex).result.trace for ex in prompts]
    ex = examples_from_traces(traces)
    add = ex.op == int(Op.ADD)
    assert len(set(zip(ex.a[add].tolist(), ex.b[add].tolist(), ex.carry[add].tolist()))) == 200
    oeu = NeuralOEU(OEUConfig(hidden=128))
    opt = torch.optim.AdamW(oeu.parameters(), lr=3e-3)
    for _ in range(400):
        loss, metrics = oeu_loss(oeu, ex)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # The whole ADD table with carry-in 0/1, most entries far more than the traces showed.
    V, C = DEFAULT_ALPHABET.size, 10
    a, b, c = torch.meshgrid(torch.arange(10), torch.arange(10), torch.arange(2), indexing="ij")
    a, b, c = a.flatten(), b.flatten(), c.flatten()
    op = F.one_hot(torch.full_like(a, int(Op.ADD)), len(Op)).float()
    out = oeu.logits(op, F.one_hot(a, V).float(), F.one_hot(b, V).float(),
                     F.one_hot(c, C).float(), torch.zeros(len(a)))
    total = a + b + c
    assert torch.equal(out.result.argmax(-1), total % 10)
    assert torch.equal(out.carry.argmax(-1), total // 10)
    assert metrics["oeu_acc"] == 1.0
    # The machine's discrete path agrees with the logits.
    res, cout = oeu.hard(torch.full_like(a, int(Op.ADD)), a, b, c, torch.zeros_like(a))
    assert torch.equal(res, total % 10) and torch.equal(cout, total // 10)


def test_gradients_reach_every_oeu_parameter():
    torch.manual_seed(2)
    oeu = NeuralOEU(OEUConfig(hidden=16))
    gen = torch.Generator().manual_seed(2)
    out = oeu.logits(*_inputs(4, oeu.cfg, gen))
    (out.result.pow(2).sum() + out.carry.pow(2).sum()).backward()
    for name, p in oeu.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_inputs_an_op_does_not_read_cannot_change_its_output():
    torch.manual_seed(3)
    oeu = NeuralOEU(OEUConfig(hidden=16))
    gen = torch.Generator().manual_seed(3)
    op, a, b, c, eq = _inputs(6, oeu.cfg, gen)
    inc = F.one_hot(torch.full((6,), int(Op.INC)), len(Op)).float()
    x = oeu.logits(inc, a, b, c, eq)
    y = oeu.logits(inc, a.roll(1, 0), b.roll(2, 0), c, eq.roll(1, 0))
    assert torch.equal(x.result, y.result) and torch.equal(x.carry, y.carry)


def test_neural_oeu_runs_inside_the_machine():
    """The OEU plugs into the machine's OEU protocol (soft and discrete paths)."""
    from llamacpu.core.golden import load_program
    from llamacpu.machine.machine import Machine

    torch.manual_seed(4)
    oeu = NeuralOEU(OEUConfig(hidden=16))
    m = Machine(oeu=oeu)
    res = m.run_batch([load_program("add")] * 2, ["1+2", "3+4"], max_steps=300, on_limit="stop")
    assert all(r.steps > 0 for r in res)  # untrained: any answer, but it runs (discrete path)
    state = m.run(m.load_batch([load_program("add")], ["1+2"]), 3, hard=False)  # soft path
    assert torch.isfinite(state.memory).all() and int(state.steps.round()) == 3
    # The discrete path's integer fast path agrees with the distributions the soft path uses.
    gen = torch.Generator().manual_seed(5)
    op, a, b = (torch.randint(n, (64,), generator=gen) for n in (len(Op), 55, 55))
    c, eq = torch.randint(10, (64,), generator=gen), torch.randint(2, (64,), generator=gen)
    res_i, cout_i = oeu.hard(op, a, b, c, eq)
    out = oeu(F.one_hot(op, len(Op)).float(), F.one_hot(a, 55).float(), F.one_hot(b, 55).float(),
              F.one_hot(c, 10).float(), eq.float())
    assert torch.equal(res_i, out.result.argmax(-1)) and torch.equal(cout_i, out.carry.argmax(-1))


def _carry_roles():
    from llamacpu.core.isa import OPS

    return ([s.op for s in OPS if not s.reads_carry], [s.op for s in OPS if not s.writes_carry],
            [s.op for s in OPS if s.writes_carry])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), gate=st.booleans())
def test_a_gated_carry_is_read_and_kept_by_construction(seed, gate):
    """With carry_gate an untrained OEU already ignores the carry where the op does not
    read it and passes it through where the op does not write it (hard and soft paths);
    the certificate's smaller domain (certify.gate_domain) rests on exactly this."""
    torch.manual_seed(seed)
    oeu = NeuralOEU(OEUConfig(hidden=16, carry_gate=gate))
    assert oeu.carry_gated is gate
    gen = torch.Generator().manual_seed(seed)
    no_read, no_write, write = _carry_roles()
    B, V, C = 64, oeu.cfg.alphabet.size, oeu.cfg.n_carry
    op = torch.tensor(no_read)[torch.randint(len(no_read), (B,), generator=gen)]
    a, b = torch.randint(V, (B,), generator=gen), torch.randint(V, (B,), generator=gen)
    c1, c2 = torch.randint(C, (B,), generator=gen), torch.randint(C, (B,), generator=gen)
    eq = torch.randint(2, (B,), generator=gen)
    r1, _ = oeu.hard(op, a, b, c1, eq)
    r2, _ = oeu.hard(op, a, b, c2, eq)
    if gate:
        assert torch.equal(r1, r2)
        keep = torch.tensor(no_write)[torch.randint(len(no_write), (B,), generator=gen)]
        assert torch.equal(oeu.hard(keep, a, b, c1, eq)[1], c1)
        soft_c = torch.rand(B, C, generator=gen).softmax(-1)
        out = oeu(F.one_hot(keep, len(Op)).float(), F.one_hot(a, V).float(),
                  F.one_hot(b, V).float(), soft_c, eq.float())
        assert torch.allclose(out.carry, soft_c)
        logits = oeu.logits(F.one_hot(keep, len(Op)).float(), F.one_hot(a, V).float(),
                            F.one_hot(b, V).float(), F.one_hot(c1, C).float(), eq.float())
        assert torch.equal(logits.carry.argmax(-1), c1)
    # ops that write the carry compute it in the MLP, gated or not: gradients reach it
    w = torch.tensor(write)[torch.randint(len(write), (B,), generator=gen)]
    out = oeu.logits(F.one_hot(w, len(Op)).float(), F.one_hot(a, V).float(),
                     F.one_hot(b, V).float(), F.one_hot(c1, C).float(), eq.float())
    out.carry.sum().backward()
    assert oeu.head.weight.grad.abs().sum() > 0


def test_checkpoints_from_before_the_carry_gate_load_with_it_off():
    from llamacpu.learn.learned import LearnedConfig

    d = LearnedConfig().to_json()
    assert d["oeu"]["carry_gate"] is True
    del d["oeu"]["carry_gate"]
    assert LearnedConfig.from_json(d).oeu.carry_gate is False
