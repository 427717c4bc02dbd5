"""WEIGHTS slots, APPLY and WSET across the layers, and the weight channel's gradients.

- programs/apply.lasm writes a WEIGHTS slot (WSET) and applies it: the run CLI prints the
  same on the reference and machine backends, hard and soft;
- APPLY is a zero-base low-rank linear layer whose delta is the slot's factors, and the
  interpreter's table is the argmax of that layer's output;
- the answer loss of the in-context-op task, through the soft machine, reaches every
  parameter of the weight-decoding head (and the LM under it);
- interpreter and machine fault alike on WEIGHTS misuse (tests/test_machine.py covers the
  random programs that use APPLY and WSET).
"""

from __future__ import annotations

import random

import pytest
import torch

from llamacpu.core import interp
from llamacpu.core.asm import assemble
from llamacpu.core.golden import PROGRAMS_DIR, load_program, reference
from llamacpu.core.isa import DEFAULT_ALPHABET, PRINTABLE_ALPHABET, Kind, Slot
from llamacpu.learn.incontext import (
    CHANNEL_PROGRAM,
    TABLE_PROGRAM,
    FunctionReader,
    IncontextConfig,
    Problem,
    answer_loss,
    apply_logits,
    fixed_program,
    make_problem,
    programs_for,
)
from llamacpu.machine.interfaces import apply_result
from llamacpu.machine.machine import Machine, MachineConfig, run_batch, with_weights
from llamacpu.machine.oeu import LowRankDelta, LowRankLinear
from llamacpu.run import main as run_main

V = DEFAULT_ALPHABET.size
PROMPT = "f: 0>3 1>7 2>2 3>9 4>0 5>1 6>8 7>5 8>6 9>4 ; apply f to 40917"


def _cli(capsys, *args: str) -> str:
    assert run_main([str(PROGRAMS_DIR / "apply.lasm"), *args]) == 0
    return capsys.readouterr().out


def test_apply_program_same_output_on_both_backends(capsys):
    ref = _cli(capsys, "--input", PROMPT)
    assert ref.splitlines()[0] == "03475" == reference("apply", PROMPT)
    assert _cli(capsys, "--input", PROMPT, "--backend", "machine") == ref
    assert _cli(capsys, "--input", "1>2;1", "--backend", "machine",
                "--soft").splitlines()[0] == "2"


def test_apply_program_hard_machine_equals_interpreter_with_memory_and_trace():
    p = load_program("apply")
    texts = [PROMPT, "0>1 0>2 ; 00", "1>5 ; 121", "1>2", "9>8;" + "9" * 20]
    results = run_batch([p] * len(texts), texts, trace=True, keep_memory=True)
    for text, r in zip(texts, results):
        ref = interp.run(p, text, trace=True)
        assert (r.output, r.steps, r.trace, r.memory) == (ref.output, ref.steps, ref.trace,
                                                          ref.memory)
        f = ref.memory[p.symbols["f"]]
        assert f.kind == Kind.WEIGHTS   # WSET wrote the function into the slot
    soft = run_batch([p] * 2, ["0>1 0>2;0", "1>3;1"], hard=False)
    assert [r.output for r in soft] == ["2", "3"]


def test_apply_is_a_zero_base_low_rank_linear_and_the_table_its_argmax():
    torch.manual_seed(0)
    table = [random.Random(1).randrange(V) for _ in range(V)]
    u = torch.nn.functional.one_hot(torch.tensor(table), V).T.float()[None]  # U [1, V, r=V]
    v = torch.eye(V)[None]                                                   # Vf [1, V, r]
    layer = LowRankLinear(V, V, bias=False)
    torch.nn.init.zeros_(layer.weight)
    a = torch.eye(V)                                                        # every symbol
    y = layer(a, LowRankDelta(u.expand(V, -1, -1), v.expand(V, -1, -1)))    # [V, V]
    delta = torch.einsum("bor,bir->boi", u, v)[0]                           # Δ = U Vfᵀ
    torch.testing.assert_close(y, a @ delta.T)
    probs = apply_result(delta.expand(V, -1, -1), a)
    assert probs.argmax(-1).tolist() == table
    # the interpreter runs the same table, from a WEIGHTS slot
    prog = assemble("start: apply [OUT], f, [IN]\nhalt\nf: .weights \"\" -> \"\"\n")
    slots = list(prog.slots)
    slots[prog.symbols["f"]] = Slot.weights(table)
    prog = prog.__class__(tuple(slots), prog.entry, prog.alphabet, prog.symbols)
    for x in "0+z":
        want = DEFAULT_ALPHABET.decode_symbol(table[DEFAULT_ALPHABET.encode_char(x)])
        if want != "⊣":
            assert interp.run(prog, x).output == want == run_batch([prog], [x])[0].output


def test_soft_wset_and_mov_keep_the_bank_exact_on_one_hot_operands():
    p = assemble("""
start:  wset  f, [IN], #7
        mov   g, f
        apply [OUT], g, [IN]
        halt
f:      .weights "0" -> "1"
g:      .weights "" -> ""
""")
    m = Machine(MachineConfig())
    s = m.run(m.load_batch([p, p], ["0", "5"]), 10, hard=False)
    assert m.read_outputs(s) == ["7", "7"]
    f, g = p.symbols["f"], p.symbols["g"]
    # soft addressing leaks ~e^-2β of mass to other slots: equal up to that, tables exact
    torch.testing.assert_close(s.weights[:, f], s.weights[:, g], atol=0.01, rtol=0)
    mem = m.decode_memory(s)
    assert mem[0][g].table == mem[0][f].table and mem[0][g].table[0] == 7


def test_gradients_flow_from_the_answer_loss_through_apply_into_the_weight_head():
    torch.manual_seed(0)
    reader = FunctionReader(IncontextConfig(channel=True, hidden=32, layers=1, heads=2))
    machine = Machine(MachineConfig())
    batch = [Problem((3, 7) + (0,) * 8, "0>3 1>7 ; 01", "37"),
             Problem((5, 2) + (0,) * 8, "0>5 1>2 ; 10", "25")]
    loss = answer_loss(reader, machine, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    head = dict(reader.head.named_parameters())
    assert head and all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.values()), \
        {n: None if p.grad is None else p.grad.abs().sum().item() for n, p in head.items()}
    emb = reader.lm.embed_tokens.weight.grad
    assert emb is not None and emb.abs().sum() > 0   # and on into the LM that read the prompt


def test_with_weights_is_differentiable_and_checks_the_slot():
    m = Machine(MachineConfig())
    s = m.load_batch([CHANNEL_PROGRAM], ["1;1"])
    delta = torch.zeros(1, V, V, requires_grad=True)
    s2 = with_weights(s, CHANNEL_PROGRAM.symbols["f"], delta)
    s2.weights.sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not in the WEIGHTS bank"):
        with_weights(s, 999, delta)


@pytest.mark.parametrize("alphabet", [DEFAULT_ALPHABET, PRINTABLE_ALPHABET],
                         ids=["default", "printable"])
@pytest.mark.parametrize("channel", [True, False])
def test_expert_programs_with_the_true_function_are_exact(channel, alphabet):
    """What the controller has to produce is enough: with f written in exactly (crisp
    logits), both expert programs answer every problem, 100-digit payloads included; in
    the printable alphabet too (V = 96, a capitalised prompt)."""
    V = alphabet.size
    rng = random.Random(3)
    probs = [make_problem(tuple(rng.randrange(10) for _ in range(10)),
                          "".join(str(rng.randrange(10)) for _ in range(n))) for n in (5, 100)]
    if alphabet != DEFAULT_ALPHABET:
        probs = [p._replace(prompt=p.prompt.replace("f: ", "F: ").replace("apply", "Apply"))
                 for p in probs]
    f = torch.tensor([p.f for p in probs])
    onehot = torch.nn.functional.one_hot(f, V).float()                      # [B, K, V]
    reader = FunctionReader(IncontextConfig(channel=channel, hidden=16, layers=1, heads=2,
                                            alphabet=alphabet))
    assert reader.tokens([probs[0].prompt]).max() < reader.vocab == V + 10
    if channel:
        out = torch.zeros(2, V, V)
        out[:, :, :10] = onehot.transpose(1, 2)                             # Δ[v, x] = [f(x) = v]
        assert (apply_logits(out).argmax(-1) == f).all()
    else:
        out = onehot * 10
    progs = programs_for(reader, out)
    assert progs[0].alphabet == alphabet
    assert progs[0].slots[:4] == fixed_program(channel, alphabet).slots[:4]
    if alphabet == DEFAULT_ALPHABET:
        assert fixed_program(channel) is (CHANNEL_PROGRAM if channel else TABLE_PROGRAM)
    results = run_batch(progs, [p.prompt for p in probs])
    assert [r.output for r in results] == [p.answer for p in probs]
    assert [interp.run(q, p.prompt).output for q, p in zip(progs, probs)] == \
        [p.answer for p in probs]
