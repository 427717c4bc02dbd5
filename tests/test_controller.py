"""The LM controller: tokenizer, plan phase (emit programs), execute phase (sequence steps).

The core learning test trains the tiny Llama from scratch to emit the add and sub expert
programs from a handful of prompts and checks that greedy emission reproduces them exactly,
slot for slot, on prompts with operands it never saw. Everything is seeded and runs on one
CPU thread (two threads on a shared 2-core machine are many times slower for a model this
small). Nothing may touch the network: HF offline mode, and sockets refuse to connect.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

from llamacpu.core.golden import load_program  # noqa: E402
from llamacpu.core.interp import run  # noqa: E402
from llamacpu.core.isa import (  # noqa: E402
    DEFAULT_ALPHABET,
    NUM_FIELDS,
    Alphabet,
    InputError,
    Kind,
    Mode,
    Op,
    Program,
    Slot,
)
from llamacpu.core.ops import SPEC  # noqa: E402
from llamacpu.learn.tasks import reference  # noqa: E402
from llamacpu.llm.config import ControllerConfig  # noqa: E402
from llamacpu.llm.controller import Controller  # noqa: E402
from llamacpu.llm.heads import PromptCache, StepView  # noqa: E402
from llamacpu.llm.models import build_tiny_llama  # noqa: E402
from llamacpu.llm.prompts import controller_view  # noqa: E402
from llamacpu.llm.sequencer import ControllerSequencer  # noqa: E402
from llamacpu.llm.supervision import batch_steps, trace_to_steps  # noqa: E402
from llamacpu.llm.tokenizer import SPECIAL_TOKENS, SymbolTokenizer  # noqa: E402
from llamacpu.machine.interfaces import Sequencer  # noqa: E402
from llamacpu.machine.machine import Machine, MachineConfig  # noqa: E402

SMALL = ControllerConfig(max_slots=64)
TEMPLATES = {
    "add": ("what is {a} plus {b}?", "{a}+{b}", "add {a} and {b}"),
    "sub": ("what is {a} minus {b}?", "{a}-{b}", "take {b} from {a}"),
}
PAIRS = [(a, b) for a in range(10) for b in range(10)]
random.Random(0).shuffle(PAIRS)
TRAIN_PAIRS, TEST_PAIRS = PAIRS[:3], PAIRS[50:54]   # disjoint operands


def _prompts(pairs: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """(prompt, task) for every task, template and operand pair."""
    return [(t.format(a=a, b=b), task) for task, ts in TEMPLATES.items() for t in ts
            for a, b in pairs]


@pytest.fixture(autouse=True, scope="module")
def _one_thread_no_network():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    real_connect = socket.socket.connect

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"test tried to open a network connection to {args}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    yield
    socket.socket.connect = real_connect  # type: ignore[method-assign]
    torch.set_num_threads(threads)


def _controller(seed: int = 0, **kw) -> Controller:
    torch.manual_seed(seed)
    return Controller(dataclasses.replace(SMALL, **kw))


def _train_plan(ctl: Controller, steps: int = 200):
    """Plan loss on the add/sub prompts of TRAIN_PAIRS, batches of 16 (seeded): the first
    and the last step's metrics."""
    programs = {t: load_program(t) for t in TEMPLATES}
    train = _prompts(TRAIN_PAIRS)
    rng = random.Random(0)
    opt = torch.optim.AdamW(ctl.parameters(), lr=3e-3)
    first = m = None
    for _ in range(steps):
        batch = [rng.choice(train) for _ in range(16)]
        loss, m = ctl.plan_loss([p for p, _ in batch], [programs[t] for _, t in batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = m if first is None else first
    return first, m


@pytest.fixture(scope="module")
def trained() -> tuple[Controller, dict[str, float]]:
    """A controller that has memorised add and sub from 18 prompts (200 steps of 16)."""
    ctl = _controller(0)
    t0 = time.perf_counter()
    first, m = _train_plan(ctl)
    stats = {"seconds": time.perf_counter() - t0, "first_loss": first.loss, "last_loss": m.loss,
             "last_program_acc": m.program_acc}
    print(f"\nplan training: {stats}")
    return ctl.eval(), stats


# ------------------------------------------------------------------------ tokenizer

def test_tokenizer_roundtrip_ids_and_specials():
    tok = SymbolTokenizer()
    assert tok.vocab_size == len(SPECIAL_TOKENS) + DEFAULT_ALPHABET.size - 1 == 61
    assert [tok.pad_id, tok.bos_id, tok.eos_id, tok.plan_id, tok.exec_id, tok.weights_id,
            tok.weights_end_id] == list(range(7))
    text = "what is 12 plus 35?"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == len(text) + 2
    assert tok.decode(ids, skip_special=True) == text
    assert tok.decode(ids) == "<bos>" + text + "<eos>"
    # a special token's name in text is characters, never the special
    assert tok.encode("<pad>") == [tok.token_id(c) for c in "<pad>"]
    assert tok.pad_id not in tok.encode("<pad>")


def test_tokenizer_rejects_characters_outside_the_alphabet():
    tok = SymbolTokenizer()
    with pytest.raises(InputError, match=r"'Q' at position 3"):
        tok.encode("ab Qc")
    with pytest.raises(InputError):
        tok.encode("tab\there")
    with pytest.raises(TypeError):
        tok.batch("not a list")
    # a base-16 alphabet has digits a-f and no separate letters for them
    hex_tok = SymbolTokenizer(Alphabet.numeric(16))
    assert hex_tok.decode(hex_tok.encode("ff+1")) == "ff+1"


def test_tokenizer_batch_left_pads_with_a_mask():
    tok = SymbolTokenizer()
    b = tok.batch(["1+2", "what is 3 plus 4?"], prefix=(tok.bos_id,), suffix=(tok.plan_id,))
    assert b.ids.shape == b.mask.shape == (2, 19)
    assert b.mask[0].tolist() == [0] * 14 + [1] * 5 and b.mask[1].all()
    assert (b.ids[0, :14] == tok.pad_id).all() and b.ids[0, 14] == tok.bos_id
    assert (b.ids[:, -1] == tok.plan_id).all()
    r = tok.batch(["1+2", "12+34"], padding_side="right")
    assert r.mask[0].tolist() == [1, 1, 1, 0, 0] and tok.decode(r.ids[0, :3]) == "1+2"


# ------------------------------------------------------------------------ config and model

def test_config_checks():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ControllerConfig(hidden_size=66, num_heads=4)
    with pytest.raises(ValueError, match="must be even"):
        ControllerConfig(hidden_size=12, num_heads=4)
    with pytest.raises(ValueError, match="fewer than max_slots"):
        ControllerConfig(max_slots=96, address_bits=6)
    with pytest.raises(ValueError, match="max_slots"):
        ControllerConfig(max_slots=2)
    with pytest.raises(ValueError, match="is not 'tiny', a registry name"):
        Controller(ControllerConfig(model="/nonexistent/model/dir"))


def test_tiny_llama_matches_the_config():
    cfg = ControllerConfig(hidden_size=32, num_layers=3, num_heads=2, intermediate_size=48)
    lm = build_tiny_llama(cfg, 61)
    assert lm.config.hidden_size == 32 and lm.config.num_hidden_layers == 3
    assert lm.get_input_embeddings().weight.shape == (61, 32)
    assert len(lm.model.layers) == 3


# ------------------------------------------------------------------------ plan phase

def test_plan_shapes_and_padding_invariance():
    ctl = _controller(1).eval()
    add = load_program("add")
    prompts = ["1+2", "what is 3 plus 4?"]
    tg = ctl._targets([add, add])
    slots = ctl._target_slots(tg)                                        # [B, Q, D]
    Q = len(add.slots) - 2
    assert slots.shape == (2, Q, ctl.layout.width)
    lg = ctl.plan_logits(prompts, slots)
    N, V = SMALL.max_slots, DEFAULT_ALPHABET.size
    assert lg.stop.shape == (2, Q + 1) and lg.kind.shape == (2, Q + 1, len(Kind))
    assert lg.op.shape == (2, Q + 1, len(Op)) and lg.val.shape == (2, Q + 1, V)
    assert lg.modes.shape == (2, Q + 1, NUM_FIELDS, len(Mode))
    assert lg.args.shape == (2, Q + 1, NUM_FIELDS, N)
    # the short prompt is left-padded in the batch: its predictions must not change
    alone = ctl.plan_logits(prompts[:1], slots[:1])
    for a, b in zip(alone, lg):
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)


def test_plan_loss_rejects_programs_it_cannot_emit():
    ctl = _controller(1)
    add = load_program("add")
    with pytest.raises(ValueError, match="starts at 5"):
        ctl.plan_loss(["1+2"], [dataclasses.replace(add, entry=5)])
    with pytest.raises(ValueError, match="more than max_slots"):
        ctl.plan_loss(["1+2"], [load_program("fib")])                    # 67 > 64 slots
    far = Program(add.slots[:2] + (Slot.instr(Op.JMP, ((Mode.DIRECT, 70),)),), 2)
    with pytest.raises(ValueError, match="points at 70"):
        ctl.plan_loss(["1+2"], [far])
    with pytest.raises(ValueError, match="2 prompts and 1 programs"):
        ctl.plan_loss(["1+2", "3+4"], [add])


def test_plan_soft_is_a_distribution_in_slot_layout_form():
    ctl = _controller(2)
    add = load_program("add")
    lay = ctl.layout
    for kw in ({"teacher": [add, add]}, {"teacher": [add, add], "sample_prob": 0.5},
               {"n_slots": 9}):
        mem = ctl.plan_soft(["1+2", "add 3 and 4"], **kw)
        P = 9 if "n_slots" in kw else len(add.slots)
        assert mem.shape == (2, P, lay.width)
        assert lay.decode(mem[0, :2]) == (Slot.data(), Slot.data())     # the ports
        for name in ("kind", "op", "val"):
            torch.testing.assert_close(lay.get(mem, name).sum(-1), torch.ones(2, P))
        torch.testing.assert_close(lay.modes(mem).sum(-1), torch.ones(2, P, NUM_FIELDS))
        # addresses are convex mixtures of the candidate keys: every block has norm <= 1
        blocks = lay.args(mem).unflatten(-1, (lay.codec.bits, 2)).norm(dim=-1)
        assert (blocks <= 1 + 1e-5).all()


def test_plan_soft_gradients_reach_the_lm_and_heads():
    ctl = _controller(3)
    add = load_program("add")
    for kw in ({"teacher": [add, add]}, {"teacher": [add, add], "sample_prob": 0.5},
               {"n_slots": 6, "hard": True}):
        ctl.zero_grad()
        mem = ctl.plan_soft(["1+2", "add 3 and 4"], **kw)
        w = torch.randn(mem.shape, generator=torch.Generator().manual_seed(0))
        (mem * w).sum().backward()
        for name, mod in (("lm attention", ctl.lm.model.layers[0].self_attn.q_proj),
                          ("lm embeddings", ctl.lm.get_input_embeddings()),
                          ("pointer query", ctl.slot_head.query), ("op head", ctl.slot_head.op),
                          ("stop head", ctl.slot_head.stop),
                          ("slot encoder", ctl.slot_encoder.fields)):
            g = mod.weight.grad
            assert g is not None and g.abs().sum() > 0, f"{kw}: no gradient at {name}"


def test_core_learning_emit_reproduces_the_expert_programs(trained):
    """Memorise add and sub from 18 prompts; emit them exactly for unseen operands."""
    ctl, stats = trained
    assert stats["last_loss"] < 0.05 * stats["first_loss"]
    assert stats["last_program_acc"] == 1.0
    test = _prompts(TEST_PAIRS)
    assert not set(test) & set(_prompts(TRAIN_PAIRS))
    programs = ctl.emit([p for p, _ in test])
    for prog, (prompt, task) in zip(programs, test):
        expert = load_program(task)
        assert prog.slots == expert.slots, f"{prompt!r}: emitted program differs from {task}"
        assert prog.entry == 2 and prog.alphabet == DEFAULT_ALPHABET
        # and it runs: the emitted program answers the prompt
        assert run(prog, prompt).output == reference(task, prompt)


def test_plan_soft_hard_of_a_trained_controller_is_the_program(trained):
    ctl, _ = trained
    add = load_program("add")
    with torch.no_grad():
        mem = ctl.plan_soft(["what is 8 plus 1?"], n_slots=len(add.slots) + 3, hard=True)
    slots = ctl.layout.decode(mem[0])
    assert slots[: len(add.slots)] == add.slots
    assert all(s.kind == Kind.EMPTY for s in slots[len(add.slots):])     # after the stop


def test_emit_with_cache_equals_recompute(trained):
    ctl, _ = trained
    prompts = [p for p, _ in _prompts(TEST_PAIRS[:1])] + ["7-7", "what is 1 plus 9?"]
    fast, lg_fast, c_fast = ctl._emit(prompts, None, use_cache=True)
    slow, lg_slow, c_slow = ctl._emit(prompts, None, use_cache=False)
    assert [p.slots for p in fast] == [p.slots for p in slow]
    torch.testing.assert_close(c_fast, c_slow, atol=1e-4, rtol=1e-4)
    assert len(lg_fast) == len(lg_slow) > 30
    for a, b in zip(lg_fast, lg_slow):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    # an untrained controller, cut off by max_slots, agrees as well
    fresh = _controller(4).eval()
    f, lf, _ = fresh._emit(["1+2", "9-3"], 12, use_cache=True)
    s, ls, _ = fresh._emit(["1+2", "9-3"], 12, use_cache=False)
    assert [p.slots for p in f] == [p.slots for p in s]
    for a, b in zip(lf, ls):
        torch.testing.assert_close(a.args, b.args, atol=1e-4, rtol=1e-4)


def test_plan_confidence_is_its_least_certain_decision(trained):
    """emit_scored's confidence, recomputed from the head's logits: per row, the smallest
    probability of a go decision and its fields over the emitted slots, and of the stop."""
    ctl, _ = trained
    prompts = [p for p, _ in _prompts(TEST_PAIRS[:2])] + ["what is 1 plus 9?"]
    programs, history, conf = ctl._emit(prompts, None, use_cache=True)
    assert torch.equal(conf, ctl.emit_scored(prompts)[1])
    for b, prog in enumerate(programs):
        n = len(prog.slots) - 2
        probs = []
        for k in range(n + 1):
            lg = history[k]
            p_stop = torch.sigmoid(lg.stop[b]).item()
            if k == n:
                probs.append(p_stop)
                continue
            probs.append(1 - p_stop)
            for logits in (lg.kind[b], lg.op[b], lg.val[b], *lg.modes[b], *lg.args[b]):
                probs.append(logits.softmax(-1).max().item())
        assert conf[b].item() == pytest.approx(min(probs), abs=1e-6)
    assert conf.min() > 0.9  # a trained controller on its own prompts is sure of them
    fresh = _controller(4).eval()
    assert fresh.emit_scored(["1+2"])[1].item() < 0.5  # an untrained one is not


# ------------------------------------------------------------------------ execute phase

def _view(B: int, seed: int = 0, cond: bool = False) -> StepView:
    g = torch.Generator().manual_seed(seed)
    V, Vc = DEFAULT_ALPHABET.size, DEFAULT_ALPHABET.base

    def onehot(*shape: int) -> torch.Tensor:
        idx = torch.randint(shape[-1], shape[:-1], generator=g)
        return torch.nn.functional.one_hot(idx, shape[-1]).float()

    return StepView(onehot(B, len(Op)), onehot(B, NUM_FIELDS, len(Mode)),
                    onehot(B, NUM_FIELDS, V), onehot(B, Vc),
                    torch.rand(B, generator=g) if cond else None)


# ------------------------------------------------------------------------ digit window


@given(hs.text(alphabet="0123456789 +ab?", max_size=40), hs.integers(0, 5))
def test_controller_view_cuts_digit_runs_and_keeps_the_rest(prompt, k):
    view = controller_view(prompt, k)
    runs = re.findall(r"\d+", prompt)
    if k == 0:
        assert view == prompt
        return
    assert re.findall(r"\d+", view) == [r[:k] for r in runs]
    assert re.sub(r"\d+", "#", view) == re.sub(r"\d+", "#", prompt)  # the shape is kept
    assert controller_view(view, k) == view


def test_a_digit_window_compiles_operands_far_longer_than_training():
    """Trained on 1-digit operands only, with ``digit_window=1``: 300-digit prompts give
    the LM exactly the input of a 1-digit prompt, so the controller emits the expert
    program for them and it answers them."""
    ctl = _controller(0, digit_window=1)
    _train_plan(ctl)
    ctl.eval()
    programs = {t: load_program(t) for t in TEMPLATES}
    digits = random.Random(1)
    long = [(t.format(a="".join(digits.choice("0123456789") for _ in range(300)),
                      b="".join(digits.choice("0123456789") for _ in range(250))), task)
            for task, ts in TEMPLATES.items() for t in ts]
    short = [(controller_view(p, 1), task) for p, task in long]
    with torch.no_grad():
        a = ctl._prompt([p for p, _ in long], "plan")
        b = ctl._prompt([p for p, _ in short], "plan")
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    for prog, (prompt, task) in zip(ctl.emit([p for p, _ in long]), long):
        assert prog.slots == programs[task].slots, prompt[:40]
        assert run(prog, prompt).output == reference(task, prompt)


def test_step_is_position_free_and_the_cache_does_not_grow():
    ctl = _controller(5).eval()
    prompts = ["1+2", "what is 3 plus 4?"]
    with torch.no_grad():
        cache = ctl.encode_prompt(prompts)
        assert isinstance(cache, PromptCache) and cache.length == 19
        assert cache.lengths.tolist() == [5, 19]
        kv_before = [(k.clone(), v.clone()) for k, v in cache.kv]
        view = _view(2)
        at5 = ctl.step(cache, view, t=5)
        for t in range(6, 40):                                          # a run of steps
            ctl.step(cache, _view(2, seed=t), t=t)
        at500 = ctl.step(cache, view, t=500)
        assert cache.length == 19
        for (k, v), (k0, v0) in zip(cache.kv, kv_before):
            assert torch.equal(k, k0) and torch.equal(v, v0)
        for a, b in zip(at5, at500):
            assert torch.equal(a, b)
        assert not torch.equal(at5.halt, ctl.step(cache, _view(2, seed=99), t=5).halt)
        # the step of row 0 does not depend on the other row's prompt (padding masked)
        alone = ctl.step(ctl.encode_prompt(prompts[:1]), StepView(*(
            None if x is None else x[:1] for x in view)), t=5)
        torch.testing.assert_close(alone.halt, at5.halt[:1], atol=1e-5, rtol=1e-5)


def test_absolute_positions_ablation_depends_on_the_step():
    ctl = _controller(5, absolute_positions=True).eval()
    with torch.no_grad():
        cache = ctl.encode_prompt(["1+2", "what is 3 plus 4?"])
        view = _view(2, cond=True)
        at5, at500 = ctl.step(cache, view, t=5), ctl.step(cache, view, t=500)
        assert not torch.allclose(at5.halt, at500.halt)
        assert cache.length == 19


def test_step_rejects_malformed_views():
    ctl = _controller(6)
    cache = ctl.encode_prompt(["1+2"])
    v = _view(1)
    with pytest.raises(ValueError, match="values has shape"):
        ctl.step(cache, v._replace(values=v.values[..., :10]))
    with pytest.raises(ValueError, match="leading shape"):
        ctl.step(cache, _view(3))


def test_trace_to_steps_targets_follow_the_interpreter():
    add = load_program("add")
    tr = trace_to_steps(add, "7+8")
    res = run(add, "7+8", trace=True)
    T = res.steps
    assert tr.targets.shape == (T, 3) and tr.view.values.shape == (T, NUM_FIELDS, 55)
    assert tr.targets[:, 2].tolist() == [0.0] * (T - 1) + [1.0]         # halt at the end only
    for i, st in enumerate(res.trace):
        assert tr.view.op[i].argmax() == st.op
        assert tr.targets[i, 1] == (st.write_addr is not None)
        if st.op in (Op.JMP, Op.CALL, Op.RET):
            assert tr.targets[i, 0] == 1
        elif st.op in (Op.JZ, Op.JNZ, Op.JEQ, Op.JNE):
            assert tr.targets[i, 0] == (st.next_pc != st.pc + 1)
        else:
            assert tr.targets[i, 0] == 0
    assert 0 < tr.targets[:, 0].sum() < T



@pytest.mark.parametrize("task,prompt", [("add", "907+96"), ("sort", "sort: 3 1 2"),
                                         ("mul", "12*34"), ("reverse", "reverse: abc")])
def test_trace_to_steps_views_are_the_operands_the_interpreter_read(task, prompt):
    """Every field of every step's view, entry by entry, against the traced run: one-hot op,
    modes and carry; per operand field the value it read (immediate or the slot at its
    effective address, memory as it was at that step); zeros for unused fields."""
    prog = load_program(task)
    res = run(prog, prompt, trace=True)
    tr = trace_to_steps(prog, prompt)
    memory = list(res.image.slots)
    assert len(tr.targets) == res.steps > 0
    for i, st in enumerate(res.trace):
        ins = memory[st.pc]
        assert tr.view.op[i].nonzero().flatten().tolist() == [st.op]
        assert tr.view.carry[i].nonzero().flatten().tolist() == [st.carry_in]
        for f in range(NUM_FIELDS):
            assert tr.view.modes[i, f].nonzero().flatten().tolist() == [ins.modes[f]]
            want = []
            if f < SPEC[st.op].arity:
                if ins.modes[f] == Mode.IMMEDIATE:
                    want = [ins.val]
                elif st.addrs[f] is not None:
                    want = [memory[st.addrs[f]].val]
            assert tr.view.values[i, f].nonzero().flatten().tolist() == want
        if st.write_addr is not None:
            memory[st.write_addr] = st.written

def _step_batch(ctl: Controller, pairs, rng: random.Random):
    prompts = [rng.choice(TEMPLATES["add"]).format(a=a, b=b) for a, b in pairs]
    return prompts, batch_steps([trace_to_steps(load_program("add"), p) for p in prompts])


def test_step_loss_sends_gradients_to_the_lm_and_heads():
    ctl = _controller(7)
    prompts, (views, targets, mask) = _step_batch(ctl, PAIRS[:4], random.Random(1))
    assert views.op.shape[:2] == mask.shape and mask.sum() < mask.numel()  # padded
    loss, _ = ctl.step_loss(prompts, views, targets, mask)
    loss.backward()
    for name, mod in (("lm attention", ctl.lm.model.layers[-1].self_attn.v_proj),
                      ("lm embeddings", ctl.lm.get_input_embeddings()),
                      ("state encoder", ctl.state_encoder.proj), ("step head", ctl.step_head)):
        g = mod.weight.grad
        assert g is not None and g.abs().sum() > 0, f"no gradient at {name}"


@pytest.fixture(scope="module")
def trained_exec() -> tuple[Controller, dict[str, float]]:
    """A controller whose execute phase learned add's decisions (40 steps of 8 traces)."""
    ctl = _controller(7)
    rng = random.Random(1)
    opt = torch.optim.AdamW(ctl.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        prompts, (views, targets, mask) = _step_batch(ctl, rng.sample(PAIRS[:50], 8), rng)
        loss, m = ctl.step_loss(prompts, views, targets, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = m if first is None else first
    return ctl.eval(), {"first_loss": first.loss, "last_loss": m.loss}


def test_step_loss_learns_the_expert_decisions(trained_exec):
    ctl, stats = trained_exec
    assert stats["last_loss"] < 0.1 * stats["first_loss"]
    prompts, (views, targets, mask) = _step_batch(ctl, TEST_PAIRS, random.Random(2))
    with torch.no_grad():
        _, m = ctl.step_loss(prompts, views, targets, mask)              # held-out operands
    assert m.step_acc == 1.0, m


def test_learned_sequencer_drives_the_machine(trained_exec):
    """The execute phase as the machine's Sequencer runs add exactly, on the machine's
    discrete path and on its hard dense (straight-through) path."""
    ctl, _ = trained_exec
    prompts = [f"what is {a} plus {b}?" for a, b in TEST_PAIRS] + ["9+9"]
    programs = [load_program("add")] * len(prompts)
    seq = ControllerSequencer(ctl, prompts)
    assert isinstance(seq, Sequencer)
    machine = Machine(MachineConfig(), sequencer=seq)
    with torch.no_grad():
        results = machine.run_batch(programs, prompts, max_steps=400)
        assert [r.output for r in results] == [reference("add", p) for p in prompts]
        assert seq.steps >= max(r.steps for r in results)  # the machine steps in chunks
    # with autograd on (the controller's parameters require grad) the machine takes its dense
    # straight-through path, and the answer's gradient reaches the controller
    seq.reset(prompts[:2])
    state = machine.run(machine.load_batch(programs[:2], prompts[:2]), 120, hard=True)
    assert machine.read_outputs(state) == [reference("add", p) for p in prompts[:2]]
    assert state.memory.requires_grad
    state.memory.sum().backward()
    assert ctl.step_head.weight.grad is not None and ctl.step_head.weight.grad.abs().sum() > 0
