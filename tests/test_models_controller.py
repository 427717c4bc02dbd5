"""Pretrained-architecture controllers: tiny random Llama, Qwen2, Mistral and GPT-2 models saved
to a temp directory (with a small character tokenizer, a chat template for the first three)
and loaded back as controllers through ``llamacpu.models``: plan, execute and one training
step each with LoRA on; frozen base weights; checkpoints that hold only the adapter and the
heads and refuse a missing or different base model; a 4-bit (NF4) base on the CPU.

Nothing here downloads anything: every model is built from a config in code.
"""

from __future__ import annotations

import dataclasses
import os
import string

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from llamacpu.core.golden import load_program
from llamacpu.learn.checkpoint import CheckpointError, load_checkpoint
from llamacpu.learn.learned import ADAPTER_DIR, LearnedMachine
from llamacpu.learn.trainer import TrainConfig, Trainer
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.controller import Controller
from llamacpu.llm.heads import StepView
from llamacpu.llm.models import format_prompt
from llamacpu.llm.prompts import ChatPrompts
from llamacpu.llm.supervision import batch_steps, trace_to_steps

H = 32
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]


def _tokenizer(chat: bool) -> PreTrainedTokenizerFast:
    """A character-level BPE (no merges) over printable ASCII, built offline."""
    from tokenizers import Tokenizer, models

    chars = sorted(set(string.printable) - set("\t\n\r\x0b\x0c"))
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def _model(arch: str):
    small = dict(hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                 max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**small))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**small))
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(**small, sliding_window=256))
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=H, n_layer=2, n_head=4, vocab_size=128,
                                          n_positions=512, bos_token_id=1, eos_token_id=2))
    raise AssertionError(arch)


ARCHS = ("llama", "qwen2", "mistral", "gpt2")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """One saved random model (+ tokenizer) per architecture."""
    dirs = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        d = tmp_path_factory.mktemp(arch)
        _model(arch).save_pretrained(d)
        _tokenizer(chat=arch != "gpt2").save_pretrained(d)
        dirs[arch] = d
    return dirs


def _cfg(path, **kw) -> ControllerConfig:
    return ControllerConfig(model=str(path), max_slots=40, **{"lora_r": 4, **kw})


PROMPTS = ["What is 3 plus 4?", "add 12 and 5"]


@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_controller_plans_executes_and_trains_with_lora(arch, model_dirs):
    torch.manual_seed(1)
    ctl = Controller(_cfg(model_dirs[arch]))
    lm = ctl.lm
    # LoRA wraps the architecture's projections; the base is frozen, the vocabulary kept
    assert hasattr(lm, "peft_config")
    lora = {n: p for n, p in lm.named_parameters() if "lora_" in n}
    base = {n: p for n, p in lm.named_parameters() if "lora_" not in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for p in base.values())
    assert lm.get_input_embeddings().num_embeddings == 128
    assert ctl.slot_head.stop.in_features == H and ctl.step_head.in_features == H
    # prompts go through the chat template (GPT-2 has none: plain text)
    ids = ctl.prompts.ids(PROMPTS[0])
    view = ctl.cfg.view(PROMPTS[0])        # the LM reads the bounded view of the prompt
    assert view != PROMPTS[0] and ids == ctl.prompts.ids(view)
    text = format_prompt(ctl.tokenizer, view)
    assert (text == f"<|user|>{view}<|end|><|assistant|>") == (arch != "gpt2")
    assert text == view or arch != "gpt2"
    assert ids == ctl.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert (ctl.tokenizer.convert_tokens_to_ids("<|user|>") in ids) == (arch != "gpt2")

    # plan: greedy emission, the KV-cached path equal to recomputing the sequence
    ctl.eval()
    with torch.no_grad():
        cached, h1, _ = ctl._emit(PROMPTS, 8, use_cache=True)
        full, h2, _ = ctl._emit(PROMPTS, 8, use_cache=False)
    assert [p.slots for p in cached] == [p.slots for p in full]
    assert all(len(p.slots) <= 8 for p in cached)
    torch.testing.assert_close(h1[-1].args, h2[-1].args, atol=1e-4, rtol=1e-4)

    # execute: one state token after the prompt cache, batched over steps
    add = load_program("add")
    traces = [trace_to_steps(add, "3+4"), trace_to_steps(add, "12+5")]
    views, targets, mask = batch_steps(traces)
    ctl.train()
    before_lora = {n: p.detach().clone() for n, p in lora.items()}
    before_base = {n: p.detach().clone() for n, p in list(base.items())[:6]}
    before_head = ctl.slot_head.op.weight.detach().clone()
    before_marker = ctl.prompts.markers.detach().clone()
    plan, pm = ctl.plan_loss(PROMPTS, [add, add])
    views = StepView(*(None if x is None else x[:, :10] for x in views))      # first 10 steps
    exe, em = ctl.step_loss(PROMPTS, views, targets[:, :10], mask[:, :10])
    assert torch.isfinite(plan) and torch.isfinite(exe)
    opt = torch.optim.AdamW([p for p in ctl.parameters() if p.requires_grad], lr=1e-2)
    (plan + exe).backward()
    assert all(p.grad is None for p in base.values())
    opt.step()
    moved = [n for n, p in lora.items() if not torch.equal(p, before_lora[n])]
    assert len(moved) == len(lora)  # every adapter matrix trains
    assert all(torch.equal(base[n], v) for n, v in before_base.items())
    assert not torch.equal(ctl.slot_head.op.weight, before_head)
    assert not torch.equal(ctl.prompts.markers, before_marker)
    plan2, _ = ctl.plan_loss(PROMPTS, [add, add])
    assert plan2.item() < plan.item()  # the step helped


def test_markers_are_learned_embeddings_not_new_tokens(model_dirs):
    ctl = Controller(_cfg(model_dirs["llama"]))
    assert isinstance(ctl.prompts, ChatPrompts)
    embeds, mask, pos = ctl._prompt(PROMPTS, "plan")
    n = [len(ctl.prompts.ids(p)) for p in PROMPTS]
    S = max(n) + 1
    assert embeds.shape == (2, S, H) and mask.sum(1).tolist() == [k + 1 for k in n]
    torch.testing.assert_close(embeds[:, -1], ctl.prompts.markers[0].expand(2, H))
    _, _, _ = ctl._prompt(PROMPTS, "exec")
    assert pos[:, -1].tolist() == n  # left padding: positions count real tokens only
    with pytest.raises(ValueError, match="lora_r and quant apply to pretrained"):
        ControllerConfig(lora_r=4)


def _trainer_cfg(path, out, **kw) -> TrainConfig:
    kw = {"steps": 2, "batch_size": 2, **kw}
    return TrainConfig(stages=(0,), model=str(path), lora_r=4,
                       eval_every=100, eval_size=4, step_sample=6, out=out, progress=False,
                       **kw)


def test_checkpoint_holds_adapter_and_heads_not_the_base(model_dirs, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(_trainer_cfg(model_dirs["llama"], out), log=lambda s: None)
    trainer.run()
    c = load_checkpoint(out / "stage_0")
    assert not any(k.startswith("model.controller.lm.") for k in c.model_state)
    assert "model.controller.prompts.markers" in c.model_state
    assert set(c.attachments) == {f"{ADAPTER_DIR}/adapter_config.json",
                                  f"{ADAPTER_DIR}/adapter_model.safetensors"}
    assert c.config["base_model"]["kind"] == "local"
    loaded = LearnedMachine.from_checkpoint(c).eval()
    model = trainer.model.eval()
    for (n, a), (m, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == m and torch.equal(a, b), n
    with torch.no_grad():
        assert ([p.slots for p in loaded.controller.emit(PROMPTS, 6)]
                == [p.slots for p in model.controller.emit(PROMPTS, 6)])

    # re-running resumes: the adapter, heads and optimizer state come back, one more step
    logs: list[str] = []
    again = Trainer(_trainer_cfg(model_dirs["llama"], out, steps=3), log=logs.append)
    assert again.run()[0].step == 3
    assert any("resuming at step 2" in line for line in logs)

    # a different base model in the same place: refused by its record
    torch.manual_seed(5)
    other = _model("llama")
    other.config.intermediate_size = 48
    LlamaForCausalLM(other.config).save_pretrained(model_dirs["llama"].parent / "other")
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(model_dirs["llama"], moved)
    cfg = dict(c.config)
    cfg["model"] = {**cfg["model"], "controller": {**cfg["model"]["controller"],
                                                   "model": str(moved)}}
    for f in ("config.json", "model.safetensors"):
        shutil.copy(model_dirs["llama"].parent / "other" / f, moved / f)
    with pytest.raises(CheckpointError, match="was trained on the base model"):
        LearnedMachine.from_checkpoint(dataclasses.replace(c, config=cfg))
    shutil.rmtree(moved)
    with pytest.raises(CheckpointError, match="needs the base model"):
        LearnedMachine.from_checkpoint(dataclasses.replace(c, config=cfg))


def test_4bit_base_loads_linear4bit_and_lora_trains(model_dirs):
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(2)
    ctl = Controller(_cfg(model_dirs["llama"], quant="4bit"))
    n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in ctl.lm.modules())
    assert n4 == 2 * 7  # every projection of both layers
    lora = {n: p for n, p in ctl.lm.named_parameters() if "lora_B" in n}
    before = {n: p.detach().clone() for n, p in lora.items()}
    add = load_program("add")
    loss, _ = ctl.plan_loss(PROMPTS, [add, add])
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.AdamW([p for p in ctl.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(not torch.equal(p, before[n]) for n, p in lora.items())


@pytest.mark.parametrize("argv, message", [
    (["--lora-r", "8"], "--lora-r and --quant apply to pretrained models"),
    (["--quant", "4bit"], "--lora-r and --quant apply to pretrained models"),
    (["--quant", "2bit"], "--quant"),
    (["--optim", "sgd"], "--optim"),
    (["--oeu-steps", "0"], "--oeu-steps"),
    (["--time-budget", "0"], "--time-budget"),
    (["--model", "org/some-model"], "hub"),
])
def test_bad_pretrained_flags_are_one_line_and_exit_2(argv, message, capsys):
    from llamacpu.train import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--stage", "0", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_pretrained_answer_loss_is_off_unless_asked(model_dirs):
    assert TrainConfig(model=str(model_dirs["gpt2"])).answer_period == 0
    assert TrainConfig(model=str(model_dirs["gpt2"]), answer_every=4).answer_period == 4
    assert TrainConfig().answer_period == 8


def test_adamw8bit_option_trains(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    trainer = Trainer(TrainConfig(steps=1, optim="adamw8bit", batch_size=4, eval_every=100,
                                  eval_size=4, step_sample=6, out=tmp_path, progress=False),
                      log=lambda s: None)
    model = trainer._new_model()
    opt = trainer._optimizer(model)
    assert isinstance(opt, bnb.optim.AdamW8bit)
    before = model.controller.slot_head.op.weight.detach().clone()
    trainer.model = model
    trainer.run()
    assert not torch.equal(trainer.model.controller.slot_head.op.weight, before)


SHARED = ["what is 3 plus 4?", "what is 12 plus 5?", "what is 7 plus 0?"]  # common prefix


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("prompts", [SHARED, PROMPTS], ids=["common-prefix", "no-prefix"])
def test_shared_prompt_pass_gives_the_same_losses_and_gradients(arch, prompts, model_dirs):
    """``encode_prefix`` once for both phases (the common prefix at batch 1, the rows
    left-padded after it) is the same function as encoding ``prompt <plan>`` and
    ``prompt <exec>`` separately: equal plan and step losses and equal gradients."""
    torch.manual_seed(3)
    ctl = Controller(_cfg(model_dirs[arch]))
    for n, p in ctl.named_parameters():
        if "lora_B" in n:  # nonzero adapters, so the prompt pass depends on them
            torch.nn.init.normal_(p, std=0.1)
    add = load_program("add")
    B = len(prompts)
    exe = [prompts[-1], *prompts[:-1]]  # the execute loss pairs steps with other prompts
    traces = [trace_to_steps(add, f"{i + 2}+{i}") for i in range(B)]
    views, targets, mask = batch_steps(traces)
    views = StepView(*(None if x is None else x[:, :8] for x in views))
    targets, mask = targets[:, :8], mask[:, :8]

    def losses(shared: bool):
        ctl.zero_grad(set_to_none=True)
        if shared:
            prefix = ctl.encode_prefix(prompts)
            plan, _ = ctl.plan_loss(prompts, [add] * B, prefix=prefix)
            rows = torch.tensor([prompts.index(p) for p in exe])
            cache = ctl.encode_prompt(prefix=prefix).select(rows)
            step, _ = ctl.step_loss(exe, views, targets, mask, cache=cache)
        else:
            plan, _ = ctl.plan_loss(prompts, [add] * B)
            step, _ = ctl.step_loss(exe, views, targets, mask)
        (plan + step).backward()
        grads = {n: p.grad.clone() for n, p in ctl.named_parameters() if p.grad is not None}
        return plan.detach(), step.detach(), grads

    plan0, step0, g0 = losses(False)
    plan1, step1, g1 = losses(True)
    torch.testing.assert_close(plan1, plan0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step1, step0, atol=1e-5, rtol=1e-5)
    assert set(g1) == set(g0) and any("lora_A" in n for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)
    rows = ctl.prompts.rows(prompts)  # the test covers both paths of encode_prefix
    common = len(os.path.commonprefix(rows))
    assert (common >= 2) == (prompts is SHARED), common


def test_training_step_with_shared_prompt_matches_the_separate_passes(model_dirs, tmp_path):
    """The trainer's step (distinct prompts once, then rows selected for the plan and the
    prompt-mixed execute loss) updates the weights as the separate passes do."""
    import copy
    import random

    from llamacpu.learn.curriculum import STAGES
    from llamacpu.machine.oeu import examples_from_traces

    results = []
    torch.manual_seed(4)
    base = Trainer(_trainer_cfg(model_dirs["llama"], tmp_path), log=lambda s: None)._new_model()
    for shared in (False, True):
        trainer = Trainer(_trainer_cfg(model_dirs["llama"], tmp_path, batch_size=6,
                                       shared_prompt=shared, oeu_steps=1),
                          log=lambda s: None)
        from llamacpu.learn import distributed

        trainer.dist = distributed.from_env("cpu")
        model = copy.deepcopy(base)
        opt = trainer._optimizer(model)
        m, _ = trainer._train_step(STAGES[0], model, opt, random.Random(7), 0,
                                   examples_from_traces(()))
        results.append((m, {n: p.detach().clone() for n, p in model.named_parameters()
                            if p.requires_grad}))
    (m0, w0), (m1, w1) = results
    for k in ("plan_loss", "step_loss", "oeu_loss"):
        assert m1[k] == pytest.approx(m0[k], rel=1e-5, abs=1e-6), k
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], atol=1e-5, rtol=1e-4, msg=n)


def test_pretrained_defaults_fit_a_cpu_and_tiny_keeps_its_own(model_dirs):
    tiny, pre = TrainConfig(), TrainConfig(model=str(model_dirs["gpt2"]))
    assert (tiny.lr, tiny.batch_size, tiny.eval_every, tiny.step_sample, tiny.oeu_steps,
            tiny.eval_screen, tiny.shared_prompt) == (3e-3, 32, 25, 24, 3, 0, False)
    assert TrainConfig(certify=False).oeu_steps == 1  # the sampled-only ablation: as before
    assert (pre.lr, pre.batch_size, pre.eval_every, pre.step_sample, pre.oeu_steps,
            pre.eval_screen, pre.shared_prompt) == (1e-3, 8, 20, 12, 8, 16, True)
    assert TrainConfig(model=str(model_dirs["gpt2"]), batch_size=4).batch_size == 4


def test_4bit_gradients_are_the_same_after_a_free_running_check(model_dirs):
    """bitsandbytes repacks a Linear4bit's weight for its AVX512-BF16 inference kernel the
    first time it runs in eval mode without grad (a free-running check), and from then on
    every matmul takes that kernel, which has no backward: gradients through the frozen
    base would silently change. The controller turns the repacking off, so LoRA's
    gradients after a check equal those before it."""
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(2)
    ctl = Controller(_cfg(model_dirs["llama"], quant="4bit"))
    add = load_program("add")

    def grads():
        ctl.train()
        ctl.zero_grad()
        loss, _ = ctl.plan_loss(PROMPTS, [add, add])
        loss.backward()
        return {n: p.grad.clone() for n, p in ctl.lm.named_parameters()
                if "lora_B" in n and p.grad is not None}  # (A starts with zero grad)

    before = grads()
    assert before and any(g.abs().sum() > 0 for g in before.values())
    ctl.eval()
    with torch.no_grad():
        ctl.plan_loss(PROMPTS, [add, add])  # what a check does: eval mode, no grad
    after = grads()
    assert before.keys() == after.keys()
    for n, g in before.items():
        assert torch.allclose(g, after[n], atol=1e-6), n
