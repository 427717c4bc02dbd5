"""The learned machine: the LLM controller and the neural OEU driving the differentiable machine.

Shapes: B batch rows, P program slots, N memory slots, D slot width, T machine steps,
V alphabet size.

``solve`` is the free-running computer a result is judged by: the controller compiles each
prompt into a program (greedy, KV-cached emission), the prompt is placed in the input
region, and the machine runs with the neural OEU computing every value and the
controller's execute phase deciding every jump, write and halt. No expert program, trace
or symbolic table takes part.

Checkpoints hold what trained: every tensor of the tiny model; for a pretrained controller
the heads, encoders, markers and the OEU (:meth:`LearnedMachine.trainable_state`), the LoRA
adapter in PEFT format as checkpoint attachments (:meth:`LearnedMachine.adapter_files`), and
a record of the base model they need (:func:`llamacpu.models.base_model_info`), checked
before the base is loaded: a missing or different base model is a one-line
:class:`~llamacpu.learn.checkpoint.CheckpointError`.

``answer_loss`` is the end-to-end signal: the controller's soft plan is loaded into memory,
the soft machine runs with the soft OEU and soft decisions, and the answer is read from
the output region through the OUT pointer, so the loss on the answer's symbols reaches the
OEU, the execute phase and the plan. WEIGHTS slots take the deltas the controller's weight
head decodes (``Controller.plan_weights``) into the machine's weights bank, so the answer
loss reaches the head through APPLY; ``solve`` writes the head's function table
(``argmax_v Δ[v, x]`` on the digits, END elsewhere) into the emitted program's WEIGHTS
slot, which the hard machine's bank runs exactly.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llamacpu.core.isa import PORT_OUT, PRINTABLE_ALPHABET, Alphabet, InputError, Program
from llamacpu.learn.checkpoint import Checkpoint, CheckpointError
from llamacpu.learn.solution import CANNOT_COMPILE, Solution, declined, default_max_steps
from llamacpu.llm.config import ControllerConfig
from llamacpu.llm.controller import Controller
from llamacpu.llm.sequencer import ControllerSequencer
from llamacpu.machine.machine import Machine, MachineConfig, MachineState
from llamacpu.machine.oeu import NeuralOEU, OEUConfig

__all__ = ["LearnedConfig", "LearnedMachine", "Solution", "ADAPTER_DIR", "WEIGHT_CHANNEL_KEYS",
           "base_model_info", "default_max_steps"]

WEIGHT_CHANNEL_KEYS = ("controller.metatokens.", "controller.weight_head.",
                       "controller.weight_lookup.")
"""Parameters of the weight-token channel: a checkpoint written before it existed lacks
them, and loads with them freshly initialised (anything else missing is an error)."""

COMPILE_HEAD_KEYS = ("controller.compile_head.",)
"""Parameters of the compile phase's head (``llamacpu.llm.compile_head``): a checkpoint
written before it existed loads with it freshly initialised, as for the channel."""

ADAPTER_DIR = "adapter"
"""The checkpoint subdirectory holding a LoRA adapter (PEFT ``save_pretrained`` format)."""


def base_model_info(name: str) -> dict:
    """The JSON record of which base model ``name`` is (:func:`llamacpu.models.base_model_info`:
    name, kind, file, size and a sha256 of the registry file or of a local directory's
    config and weight-file sizes)."""
    from llamacpu.llm.models import base_model_info as info

    return dict(info(name))


def _same_base(a: dict, b: dict) -> bool:
    """Two base-model records name the same weights (by content hash when both have one)."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a.get("name") == b.get("name")


@dataclass(frozen=True)
class LearnedConfig:
    """Everything needed to rebuild a learned machine's modules (saved in checkpoints)."""

    controller: ControllerConfig = ControllerConfig()  # noqa: RUF009 (frozen)
    oeu: OEUConfig = OEUConfig()  # noqa: RUF009 (frozen)

    def to_json(self) -> dict:
        c = asdict(self.controller)
        c["alphabet"] = asdict(self.controller.alphabet)
        o = asdict(self.oeu)
        o["alphabet"] = asdict(self.oeu.alphabet)
        return {"controller": c, "oeu": o}

    @classmethod
    def from_json(cls, d: dict) -> LearnedConfig:
        from llamacpu.core.isa import Alphabet

        c = dict(d["controller"])
        c["alphabet"] = Alphabet(**c["alphabet"])
        # written before a window existed: the LM read that payload whole, as typed
        c.setdefault("digit_window", 0)
        c.setdefault("item_window", 0)
        c.setdefault("text_window", 0)
        c.setdefault("abstract_payload", False)
        c.setdefault("operand_window", 0)
        o = dict(d["oeu"])
        o["alphabet"] = Alphabet(**o["alphabet"])
        o.setdefault("carry_gate", False)  # written before the gate: the OEU learned the carry
        return cls(ControllerConfig(**c), OEUConfig(**o))


class LearnedMachine(nn.Module):
    """Controller + neural OEU; builds a :class:`Machine` around them for each run."""

    def __init__(self, cfg: LearnedConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or LearnedConfig()
        if cfg.controller.alphabet != cfg.oeu.alphabet:
            raise ValueError("the controller and the OEU must use the same alphabet")
        self.controller = Controller(cfg.controller)
        self.oeu = NeuralOEU(cfg.oeu)
        self.machine_config = MachineConfig(alphabet=cfg.controller.alphabet,
                                            address_bits=cfg.controller.address_bits)
        self.base_model: dict | None = (base_model_info(cfg.controller.model)
                                        if cfg.controller.pretrained else None)

    def trainable_state(self) -> dict[str, Tensor]:
        """The tensors a checkpoint holds (``state_dict`` keys): all of them for the tiny
        model; without the base LM's weights (and the adapter) for a pretrained one."""
        ctl = {f"controller.{k}": v for k, v in self.controller.trainable_state().items()}
        return {**ctl, **{f"oeu.{k}": v for k, v in self.oeu.state_dict().items()}}

    def adapter_files(self) -> dict[str, bytes]:
        """The LoRA adapter as PEFT writes it (``adapter/adapter_config.json``,
        ``adapter/adapter_model.safetensors``), for checkpoint attachments; {} without one."""
        lm = self.controller.lm
        if not hasattr(lm, "peft_config"):
            return {}
        with tempfile.TemporaryDirectory() as tmp:
            lm.save_pretrained(tmp)
            return {f"{ADAPTER_DIR}/{f.name}": f.read_bytes()
                    for f in sorted(Path(tmp).rglob("*"))
                    if f.name in ("adapter_config.json", "adapter_model.safetensors")}

    @classmethod
    def from_checkpoint(cls, c: Checkpoint) -> LearnedMachine:
        """The machine a training checkpoint holds (its ``model.*`` tensors and config; for
        a pretrained controller also its base model, checked first, and its adapter)."""
        try:
            cfg = LearnedConfig.from_json(c.config["model"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{c.path}: state.json has no usable model config ({e})"
                                  ) from None
        if cfg.controller.pretrained:
            _check_base(c, cfg.controller.model)
        model = cls(cfg)
        weights = {k[len("model."):]: v for k, v in c.model_state.items()
                   if k.startswith("model.")}
        try:
            missing, unexpected = model.load_state_dict(weights, strict=False)
        except RuntimeError as e:
            raise CheckpointError(f"{c.path}: weights do not fit the model: "
                                  f"{str(e).splitlines()[0]}") from None
        need = set(model.trainable_state())
        missing = sorted(need - set(weights))
        fresh = [k for k in missing if k.startswith(WEIGHT_CHANNEL_KEYS)]
        if fresh:  # a checkpoint from before the weight-token channel: the rest is intact
            sys.stderr.write(f"note: {c.path} has no weight-token channel ({len(fresh)} "
                             f"tensors: controller.metatokens, weight_lookup, weight_head); "
                             f"they start freshly initialised\n")
        # a checkpoint from before the compile head: it never compiled, so nothing to say
        fresh += [k for k in missing if k.startswith(COMPILE_HEAD_KEYS)]
        missing = [k for k in missing if k not in fresh]
        if missing or unexpected:
            what = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}")
            raise CheckpointError(f"{c.path}: weights do not fit the model ({what})")
        if cfg.controller.lora_r:
            _load_adapter(c, model.controller.lm)
        return model

    @property
    def alphabet(self) -> Alphabet:
        """The symbols the machine reads and writes (its controller's and its OEU's): a
        prompt must be written in it."""
        return self.cfg.controller.alphabet

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Raise InputError naming the first character of a prompt outside the machine's
        alphabet and its position in the prompt (before the controller's view cuts the
        prompt, so the position is the one the user typed)."""
        allowed = _characters(self.alphabet)
        for i, p in enumerate(prompts):
            if set(p) <= allowed:
                continue
            try:
                self.alphabet.encode(p)
            except InputError as e:
                which = f"prompt {i}" if len(prompts) > 1 else "the prompt"
                shown = p if len(p) <= 60 else p[:57] + "..."
                hint = ("; a machine trained with --alphabet printable reads every printable "
                        "ASCII character" if self.alphabet != PRINTABLE_ALPHABET
                        and set(p) <= _characters(PRINTABLE_ALPHABET) else "")
                raise InputError(f"{which} {shown!r}: {e}{hint}") from None

    def machine(self, prompts: Sequence[str]) -> Machine:
        """A machine whose ALU is the neural OEU and whose sequencer is the execute phase."""
        return Machine(self.machine_config, oeu=self.oeu,
                       sequencer=ControllerSequencer(self.controller, prompts))

    @torch.no_grad()
    def solve(self, prompts: Sequence[str], max_steps: int | None = None,
              out_sizes: Sequence[int] | None = None, *, compiled: bool = False,
              abstain_below: float | None = None) -> list[Solution]:
        """Compile and run each prompt, free: emitted program, neural OEU, learned steps.
        ``max_steps`` None: :func:`default_max_steps` of the prompts. ``compiled``: a prompt
        whose tables are certified runs on them instead (``llamacpu.learn.compiled``): the
        same answers, far faster; the others run as without it. ``abstain_below``: a prompt
        whose plan's confidence (``Controller.emit_scored``) is below it is not run; its
        solution says "cannot compile" (``Solution.abstained``), as does a prompt whose plan
        is the decline program (``solution.declined``). A character outside the machine's
        alphabet is an InputError naming it and its position (:meth:`check_prompts`)."""
        self.check_prompts(prompts)
        if max_steps is None:
            max_steps = default_max_steps(prompts)
        if abstain_below is not None:
            return self._solve_or_abstain(prompts, max_steps, out_sizes, compiled,
                                          abstain_below)
        if compiled:
            if getattr(self, "_compiled", None) is None:
                from llamacpu.learn.compiled import CompiledRunner

                self._compiled = CompiledRunner(self)
            return [declined(s) for s in self._compiled.solve(prompts, max_steps, out_sizes)]
        was = self.training
        self.eval()
        try:
            return self._run(prompts, self.controller.emit(prompts), max_steps, out_sizes)
        finally:
            self.train(was)

    @torch.no_grad()
    def run_programs(self, prompts: Sequence[str], programs: Sequence[Program],
                     max_steps: int | None = None,
                     out_sizes: Sequence[int] | None = None) -> list[Solution]:
        """Run ``programs`` (one per prompt: plans emitted earlier, e.g. by
        ``controller.emit_scored``) on the learned machine, free, without planning again;
        ``max_steps`` as in :meth:`solve`."""
        self.check_prompts(prompts)
        if max_steps is None:
            max_steps = default_max_steps(prompts)
        was = self.training
        self.eval()
        try:
            return self._run(prompts, programs, max_steps, out_sizes)
        finally:
            self.train(was)

    def build(self, prompts: Sequence[str], plans: Sequence[Program], *,
              trace: list | None = None) -> tuple[list[Program], dict[int, str]]:
        """The programs that run for ``plans`` (emitted for ``prompts``): a plan that is the
        compile marker (a composed prompt) becomes the main program the compile phase
        builds with the controller's compile head, linked to the library
        (``llamacpu.learn.compiling``); every other plan is its own program. Also which
        rows' compile phase failed, and why (their program stays the marker). ``trace``
        collects every compile decision (``compiling.Decision``), prompt after prompt."""
        from llamacpu.learn.compiling import (
            CompileError,
            compile_main,
            is_compile,
            linked_program,
            neural_policy,
        )

        out, failed = list(plans), {}
        policy = None
        for i, (prompt, plan) in enumerate(zip(prompts, plans)):
            if not is_compile(plan):
                continue
            policy = policy or neural_policy(self.controller)  # one memo for the batch
            try:
                out[i] = linked_program(compile_main(prompt, policy, trace), self.alphabet)
            except (CompileError, ValueError) as e:
                failed[i] = f"the compile phase failed: {e}"
        return out, failed

    def _run(self, prompts: Sequence[str], plans: Sequence[Program], max_steps: int,
             out_sizes: Sequence[int] | None) -> list[Solution]:
        out_size = max(out_sizes) if out_sizes else None
        programs, failed = self.build(prompts, plans)
        results = self.machine(prompts).run_batch(
            programs, prompts, max_steps=max_steps, on_limit="stop", out_size=out_size)
        return [declined(Solution(r.output, r.steps, r.halted, r.fault, p)) if i not in failed
                else Solution("", 0, False, failed[i], p)
                for i, (r, p) in enumerate(zip(results, programs))]

    def _solve_or_abstain(self, prompts: Sequence[str], max_steps: int,
                          out_sizes: Sequence[int] | None, compiled: bool,
                          threshold: float) -> list[Solution]:
        was = self.training
        self.eval()
        try:
            programs, confidence = self.controller.emit_scored(prompts)
            conf = confidence.tolist()
            run = [i for i, c in enumerate(conf) if c >= threshold]
            out: list[Solution] = [Solution("", 0, False, CANNOT_COMPILE, p, c)
                                   for p, c in zip(programs, conf)]
            if run:
                sizes = [out_sizes[i] for i in run] if out_sizes else None
                chosen = [prompts[i] for i in run]
                solved = (self.solve(chosen, max_steps, sizes, compiled=True) if compiled
                          else self._run(chosen, [programs[i] for i in run], max_steps, sizes))
                for i, s in zip(run, solved):
                    out[i] = s._replace(confidence=conf[i])
        finally:
            self.train(was)
        return out

    def answer_loss(self, prompts: Sequence[str], answers: Sequence[str],
                    teacher: Sequence[Program], steps: int, *, sample_prob: float = 0.0,
                    out_size: int | None = None) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the answer (then END) read from the soft machine after ``steps``.

        The plan is the controller's soft plan (teacher-forced, with scheduled sampling
        ``sample_prob``); memory beyond it is the loader's (input and output regions).
        """
        ctl = self.controller
        machine = self.machine(prompts)
        state = machine.load_batch(teacher, prompts, out_size=out_size)
        P = max(len(p.slots) for p in teacher)
        plan = ctl.plan_soft(prompts, teacher=teacher, sample_prob=sample_prob, n_slots=P)
        mem = state.memory
        # The ports (rows 0, 1) keep the loader's pointers; rows 2..len(program)−1 of each
        # row are its soft plan. A shorter program's input starts right after it (before P),
        # so the plan must not overwrite the rows past that row's own program.
        lens = torch.tensor([len(p.slots) for p in teacher], device=mem.device)     # [B]
        idx = torch.arange(P, device=mem.device)                                    # [P]
        own = ((idx >= 2) & (idx < lens[:, None]))[..., None]                       # [B, P, 1]
        head = torch.where(own, plan[:, :P].to(mem.dtype), mem[:, :P])              # [B, P, D]
        mem = torch.cat([head, mem[:, P:]], 1)                                      # [B, N, D]
        state = state._replace(memory=mem)
        # WEIGHTS slots hold the controller's decoded deltas, not the expert's functions
        where, delta = ctl.plan_weights(prompts, teacher)
        if delta is not None:
            rows = torch.tensor([b for b, _ in where], device=mem.device)
            addrs = torch.tensor([a for _, a in where], device=mem.device)
            W = state.weights.index_put((rows, addrs), delta.to(state.weights.dtype))
            state = state._replace(weights=W)                                       # [B, Pw, V, V]
        state = machine.run(state, steps, hard=False)
        dist = self._read_answer(machine, state, max(len(a) for a in answers) + 1)  # [B, L, V]
        alpha = self.cfg.controller.alphabet
        target = torch.full(dist.shape[:2], -100, dtype=torch.long)
        for r, a in enumerate(answers):
            sym = alpha.encode(a) + [alpha.end]
            target[r, : len(sym)] = torch.tensor(sym)
        logp = dist.clamp_min(1e-9).log()
        loss = F.nll_loss(logp.flatten(0, 1), target.flatten(), ignore_index=-100)
        with torch.no_grad():
            ok = ((dist.argmax(-1) == target) | (target < 0)).all(1).float().mean().item()
        return loss, {"answer_loss": loss.item(), "answer_acc_soft": ok}

    @staticmethod
    def _read_answer(machine: Machine, state: MachineState, length: int) -> Tensor:
        """Soft reads at OUT.p0, OUT.p0 + 1, …: the answer's symbol distributions [B, L, V]."""
        mem = state.memory
        swm = machine.memory_for(mem.shape[-1])
        layout = swm.layout
        ptr = layout.args(mem[:, PORT_OUT])[:, 0]                                  # [B, A]
        keys = [ptr]
        for _ in range(length - 1):
            keys.append(swm.inc(keys[-1]))
        q = torch.stack(keys, 1)                                                   # [B, L, A]
        rows = swm.read(mem, q, need_weights=False).values                          # [B, L, D]
        return layout.get(rows, "val")                                             # [B, L, V]


@functools.cache
def _characters(alphabet: Alphabet) -> frozenset[str]:
    """Characters that surely encode in ``alphabet`` (a quick test before ``encode``)."""
    if alphabet.raw_bytes:
        return frozenset()
    return frozenset(alphabet.decode_symbol(v) for v in range(alphabet.end))


def _check_base(c: Checkpoint, name: str) -> None:
    """A pretrained checkpoint names its base model; it must be here and the same one."""
    need = c.config.get("base_model")
    if not isinstance(need, dict):
        raise CheckpointError(f"{c.path}: state.json does not record its base model "
                              f"({name!r})")
    try:
        have = base_model_info(name)
    except Exception as e:  # noqa: BLE001 (not fetched, not found: say which model is needed)
        raise CheckpointError(f"{c.path} needs the base model {_describe(need)}, which is not "
                              f"available here: {str(e).splitlines()[0] if str(e) else e!r}"
                              ) from None
    if not _same_base(need, have):
        raise CheckpointError(f"{c.path} was trained on the base model {_describe(need)}, but "
                              f"{name!r} is now {_describe(have)}")


def _describe(info: dict) -> str:
    bits = [repr(info.get("name"))]
    if info.get("file"):
        bits.append(f"file {info['file']}")
    if info.get("size"):
        bits.append(f"{info['size']:,} bytes")
    if info.get("sha256"):
        bits.append(f"sha256 {str(info['sha256'])[:12]}…")
    return ", ".join(bits)


def _load_adapter(c: Checkpoint, lm: nn.Module) -> None:
    """Load the checkpoint's PEFT adapter weights into the freshly wrapped LM."""
    import safetensors.torch
    from peft import set_peft_model_state_dict

    file = Path(c.path) / ADAPTER_DIR / "adapter_model.safetensors"
    if f"{ADAPTER_DIR}/adapter_model.safetensors" not in c.attachments:
        raise CheckpointError(f"{c.path}: the config has lora_r = "
                              f"{c.config['model']['controller'].get('lora_r')} but the "
                              f"checkpoint holds no {ADAPTER_DIR}/adapter_model.safetensors")
    try:
        weights = safetensors.torch.load_file(file, device="cpu")
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{file}: not a valid safetensors file ({e})") from None
    result = set_peft_model_state_dict(lm, weights)
    lora_missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or lora_missing:
        bad = result.unexpected_keys[:1] or lora_missing[:1]
        raise CheckpointError(f"{file}: the adapter does not fit the model ({bad[0]!r})")
