"""The curriculum trainer: ``python -m llamacpu.train --stage 0``.

One loop per stage (see ``curriculum.STAGES``). Each step draws a batch of prompts, runs the
expert programs on the reference interpreter for supervision, and sums four losses:

- plan     teacher-forced cross-entropy of the program's slot fields (controller plan phase)
- execute  cross-entropy of the step decisions taken / write / halt (controller execute phase),
           plus rows of the certificate's execute table (``learn/certified.py``)
- oeu      cross-entropy of the ALU's result and carry on every step seen so far and on the
           certificate's OEU table (replay)
- answer   end-to-end: the soft machine runs the controller's soft plan with the neural OEU
           and soft decisions; cross-entropy of the answer read from the output region.
           Scheduled sampling moves its plan from teacher-forced to free-running.

Every ``eval_every`` steps the machine runs *free* on a fresh held-out set (no expert, no
symbolic part) and ``curriculum.decide`` turns the exact-match accuracy into advance /
stay / give up. A competent stage first looks back: every earlier task is run free on its
own held-out prompts, and any task below ``--retention`` (default 0.9) keeps the stage
open, consolidating — half of each batch reviews earlier stages, weighted towards the
tasks that dropped — until everything clears its bar again. And the sample is a second
opinion: the stage passes only when the learned tables of its task and of every earlier
task are certified at the same check (``learn/certified.py``; ``--no-certify``: sampled
only). Checkpoints (``checkpoint.py``) are atomic; re-running the same command resumes from
the latest one.

Under ``torchrun --nproc-per-node K`` the same loop runs data-parallel: every rank draws the
global batch, owns a stride of its rows, and the gradients are summed so that the update is
the one-process update on the whole batch (``llamacpu/distributed.py`` explains how).
``--batch-size`` and ``answer_batch`` stay global.

A run is written in its alphabet (``--alphabet``, ``TrainConfig.symbols``): its batches,
evaluation sets, filler words and expert programs, and the machine's V.

``--model smollm2-135m --lora-r 8 [--quant 4bit]`` (or a local HF directory) trains a
pretrained controller: its base weights frozen, LoRA adapters, heads and the OEU trained
(see ``controller.py``). Its step costs seconds on a CPU, so the answer loss is off by
default for it, and ``--time-budget``, ``--step-sample`` and ``--oeu-steps`` fit a run to
the time available.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from llamacpu.core.isa import N_PORTS, Program
from llamacpu.learn import checkpoint as ckpt
from llamacpu.learn import distributed
from llamacpu.learn.averaging import WeightAverage, load_trained
from llamacpu.learn.certified import Certifier
from llamacpu.learn.checkpoint import CheckpointError
from llamacpu.learn.compiling import is_composed, plan_program, run_program
from llamacpu.learn.curriculum import (
    CONSOLIDATE_REVIEW,
    STAGES,
    Decision,
    Stage,
    competence_set,
    decide,
    eval_set,
    last_stages,
    review_weights,
    sample_batch,
    trained_stages,
)
from llamacpu.learn.evaluation import evaluate, screened_evaluate
from llamacpu.learn.learned import WEIGHT_CHANNEL_KEYS, LearnedMachine
from llamacpu.learn.logs import _fmt, _log_jsonl, _plot_curve, _progress, _scalars, _tensorboard
from llamacpu.learn.runlock import RunLock
from llamacpu.learn.schedule import ANNEAL_FLOOR, _schedule_change, lr_at
from llamacpu.learn.supervise import _supervise, _Supervision, _with_filler
from llamacpu.learn.tasks import Example, default_out_size
from llamacpu.learn.train_config import OPTIMIZERS, TrainConfig, _cfg_json, alphabet_name
from llamacpu.llm.compile_head import compile_loss
from llamacpu.machine.oeu import OEUExamples, examples_from_traces, merge_examples, oeu_loss

__all__ = ["OPTIMIZERS", "TrainConfig", "Trainer", "lr_at"]


def _as_tuple(x):
    """Lists back to tuples, nested (``random.setstate`` wants its state as it gave it)."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass
class _StageState:
    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    passed: bool = False
    resume: dict | None = None  # a checkpoint's ``extra``: the data sampler's and the
    #                             certifier's state, restored so a resumed run is exact

    @property
    def uncertified(self) -> int:
        """How many checks so far found the stage competent but its tables not certified
        (``certified == 0`` records): the learning rate's annealing exponent, so a resumed
        run anneals as far as the interrupted one had."""
        return sum(1 for m in self.metrics if m.get("certified") == 0.0)

    @property
    def retained(self) -> dict[str, float] | None:
        """The latest retention measurement (``retained/<task>`` keys of the metrics), if any:
        while it is below the floor the stage consolidates (and a resumed run does too)."""
        for m in reversed(self.metrics):
            got = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("retained/")}
            if got:
                return got
        return None


class Trainer:
    """Runs the stages of a :class:`TrainConfig`, one readable loop each."""

    def __init__(self, cfg: TrainConfig, log=print,
                 dist: distributed.Dist | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.interrupted = False  # this process got a Ctrl-C
        self.stopped = False      # some rank got one: every rank stops after the same step
        self.model: LearnedMachine | None = None
        self.trained: set[int] | None = None  # earlier stages the model learned (None: all)
        self.dist = dist          # set from the environment (torchrun's) by run()
        self.certifier: Certifier | None = None  # the running stage's (cfg.certify)
        self.average: WeightAverage | None = None  # --ema: the machine checked and saved
        self._sampler: random.Random | None = None  # the running stage's data sampler
        self.run_id = uuid.uuid4().hex[:12]  # in every metrics record of this process
        self._views_of: tuple[int | None, dict] = (None, {})  # (stage, _every_view's sets)

    # ------------------------------------------------------------------ helpers

    def _new_model(self) -> LearnedMachine:
        torch.manual_seed(self.cfg.seed)
        return LearnedMachine(self.cfg.model_config()).to(self.cfg.device)

    def _optimizer(self, model: LearnedMachine) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters only (a pretrained base is frozen), in two
        groups: the weight-token channel's modules at ``channel_lr`` × the learning rate
        (their ``lr_scale``), everything else at 1×."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        channel = [p for n, p in named if n.startswith(WEIGHT_CHANNEL_KEYS)]
        rest = [p for n, p in named if not n.startswith(WEIGHT_CHANNEL_KEYS)]
        groups = [{"params": rest, "lr_scale": 1.0},
                  {"params": channel, "lr_scale": self.cfg.channel_lr}]
        if self.cfg.optim == "adamw8bit":
            from llamacpu.llm.models import import_bitsandbytes

            bnb = import_bitsandbytes()

            return bnb.optim.AdamW8bit(groups, lr=self.cfg.lr, weight_decay=0.0)
        return torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=0.0)

    def _save(self, stage: Stage, model: LearnedMachine, opt, st: _StageState,
              replay: OEUExamples) -> Path:
        state = {f"model.{k}": v for k, v in self._judged(model).trainable_state().items()}
        if self.average is not None:  # the average is the machine; the trained weights too
            state.update(self.average.checkpoint_state(model))
        state.update({f"replay.{k}": v for k, v in replay._asdict().items()})
        config = {"model": model.cfg.to_json(), "train": _cfg_json(self.cfg)}
        if model.base_model is not None:
            config["base_model"] = model.base_model
        before = range(stage.index) if self.trained is None else sorted(self.trained)
        extra = {"sampler": self._sampler.getstate(), "trained_stages": [*before, stage.index]}
        if self.certifier is not None:
            extra["certifier"] = self.certifier.state()
        if self.average is not None:
            extra["ema_updates"] = self.average.updates
        return ckpt.save_checkpoint(
            ckpt.stage_dir(self.cfg.out, stage.index), model_state=state, optimizer=opt,
            config=config, stage=stage.index, step=st.step, metrics=st.metrics,
            passed=st.passed, extra=extra, attachments=model.adapter_files())

    def _judged(self, model: LearnedMachine) -> LearnedMachine:
        """The machine checks, certificates and checkpoints look at: ``model`` as trained,
        or with ``--ema`` the average of its weights."""
        return model if self.average is None else self.average.model

    def _checkpoint(self, *args) -> Path:
        """:meth:`_save` on rank 0; every rank waits until the checkpoint is complete."""
        path = self._save(*args) if self.dist.main else ckpt.stage_dir(self.cfg.out,
                                                                         args[0].index)
        self.dist.barrier()
        return path

    def _load_model(self, c: ckpt.Checkpoint) -> tuple[LearnedMachine, OEUExamples]:
        c = self._adopt_operand_window(c)
        model = LearnedMachine.from_checkpoint(c)
        if model.alphabet != self.cfg.symbols:
            had = alphabet_name(model.alphabet)
            raise CheckpointError(
                f"{c.path} was trained in the {had} alphabet (V = {model.alphabet.size}), not "
                f"--alphabet {self.cfg.alphabet}: pass --alphabet {had} to resume it, --out "
                f"to train a new one elsewhere, or --no-resume to start over here")
        if model.cfg != self.cfg.model_config():
            raise CheckpointError(
                f"{c.path} was trained with a different model configuration; use --out to "
                f"train a new one elsewhere, or --no-resume to start over here")
        replay = OEUExamples(*(c.model_state[f"replay.{k}"] for k in OEUExamples._fields))
        return model.to(self.cfg.device), replay

    def _adopt_operand_window(self, c: ckpt.Checkpoint) -> ckpt.Checkpoint:
        """``c`` with the run's operand window when it was written before the window existed
        and its machine never trained a composed task: every prompt it trained on has fewer
        payloads than a window reads (a non-composed template has at most two placeholders),
        so the window changes none of their views, and the machine is the one it would have
        been with it. Any other checkpoint as it is."""
        model = c.config.get("model") if isinstance(c.config, dict) else None
        ctl = model.get("controller") if isinstance(model, dict) else None
        if not isinstance(ctl, dict) or "operand_window" in ctl or not self.cfg.operand_window:
            return c
        if any(not STAGES[i].reviews_all and is_composed(STAGES[i].task)
               for i in trained_stages(c) if i < len(STAGES)):
            return c
        config = {**c.config, "model": {**model, "controller": {
            **ctl, "operand_window": self.cfg.operand_window}}}
        self.log(f"note: {c.path} is from before the operand window and trained no composed "
                 f"task: it reads every prompt it trained on alike with --operand-window "
                 f"{self.cfg.operand_window}, which it takes")
        return replace(c, config=config)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[int, _StageState]:
        """Trains ``cfg.stages`` in order. A Ctrl-C at any moment of it (loading, stepping,
        checking, saving) stops the run once a step has finished, saved. Not only while a
        stage steps: a KeyboardInterrupt raised during a lazy import can land in a
        finalizer, which swallows it (and the run went on to its end)."""
        prev_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._run()
        finally:
            signal.signal(signal.SIGINT, prev_handler)

    def _run(self) -> dict[int, _StageState]:
        cfg = self.cfg
        torch.set_num_threads(cfg.threads)
        if self.dist is None:
            self.dist = distributed.from_env(cfg.device)
        if self.dist.device != cfg.device:  # torchrun on GPUs: "cuda" → this rank's cuda:N
            self.cfg = cfg = replace(cfg, device=self.dist.device)
        if cfg.batch_size < self.dist.world:
            raise distributed.DistributedError(
                f"--batch-size {cfg.batch_size} is smaller than the {self.dist.world} ranks: "
                f"each rank needs a row (the batch size is global)")
        lock = RunLock(cfg.out)
        if self.dist.main:
            ckpt.ensure_out_dir(cfg.out)
            lock.acquire()  # one trainer per run directory (a second one stops here)
        else:
            self.log = lambda s: None  # rank 0 speaks for the job
        try:
            self.dist.barrier()  # the directory exists before any rank looks for checkpoints
            done: dict[int, _StageState] = {}
            for index in cfg.stages:
                stage = STAGES[index]
                if cfg.competence is not None or cfg.eval_size is not None:
                    stage = replace(stage, competence=cfg.competence or stage.competence,
                                    eval_size=cfg.eval_size or stage.eval_size)
                if cfg.review is not None and index > 0:
                    stage = replace(stage, review=cfg.review)
                st = self._train_stage(stage)
                done[index] = st
                if st.passed and self.trained is not None:  # the next stage, in this process
                    self.trained.add(stage.index)
                if self.stopped or not st.passed:
                    break
            self.dist.barrier()  # no rank exits (and makes torchrun stop the others) mid-write
        finally:
            lock.release()
        return done

    def _start(self, stage: Stage):
        """Model, optimizer, replay buffer and progress for ``stage``: resumed or fresh."""
        cfg = self.cfg
        found = ckpt.find_latest(cfg.out, stage.index) if cfg.resume else None
        replay = examples_from_traces(())
        if found is None:
            if self.model is None:  # a fresh machine: every earlier stage is reviewed
                self.trained = None
            model = self.model or self._new_model()
            if cfg.ema and self.average is None:
                self.average = WeightAverage(model, self._decay(stage))
            return model, self._optimizer(model), _StageState(), replay
        c = ckpt.load_checkpoint(found)
        self.trained = {i for i in trained_stages(c) if i < stage.index}
        model, replay = self._load_model(c)
        if cfg.ema:  # the checkpoint's machine is the average; its train.* go on training
            self.average = WeightAverage.resume(model, c.model_state,
                                                (c.extra or {}).get("ema_updates", 0),
                                                self._decay(stage))
        elif c.stage == stage.index and not c.passed and load_trained(model, c.model_state):
            self.log(f"note: {c.path} was trained with --ema; without it the stage goes on "
                     f"from the trained weights, not their average (pass --ema to keep it)")
        opt = self._optimizer(model)
        if c.stage == stage.index and c.passed:
            return model, opt, _StageState(c.step, list(c.metrics), True), replay
        if c.stage == stage.index:
            if c.optimizer_state is not None:
                try:
                    opt.load_state_dict(c.optimizer_state)
                except ValueError as e:  # written before the channel's parameter group
                    self.log(f"stage {stage.index} ({stage.name}): the checkpoint's optimizer "
                             f"state does not fit ({e}); starting a fresh optimizer")
            ckpt.restore_rng(c)
            self.log(f"stage {stage.index} ({stage.name}): resuming at step {c.step} "
                     f"from {found}")
            note = _schedule_change(c.config.get("train", {}), cfg, c.step)
            if note:
                self.log(f"stage {stage.index} ({stage.name}): {note}")
            return model, opt, _StageState(c.step, list(c.metrics), c.passed, c.extra), replay
        unpassed = "" if c.passed else (f" (stage {c.stage} did not pass: this is its last "
                                        f"checkpoint, step {c.step})")
        self.log(f"stage {stage.index} ({stage.name}): starting from stage {c.stage}'s "
                 f"checkpoint {found}{unpassed}")
        return model, opt, _StageState(), replay

    def _train_stage(self, stage: Stage) -> _StageState:
        cfg = self.cfg
        model, opt, st, replay = self._start(stage)
        self.dist.broadcast_module(model)  # identical start on every rank
        self.model = model
        if st.passed:
            self.log(f"stage {stage.index} ({stage.name}): already passed "
                     f"(accuracy {st.metrics[-1].get('accuracy', float('nan')):.3f}); moving on")
            return st
        rng = random.Random(cfg.seed * 1000 + stage.index * 7919 + st.step)
        if st.resume and "sampler" in st.resume:  # where the interrupted run's draws stood
            rng.setstate(_as_tuple(st.resume["sampler"]))
        alphabet = cfg.symbols  # every prompt of the run is written in it
        heldout = competence_set(stage, seed=cfg.seed + 1, split=cfg.split, alphabet=alphabet,
                                 trained=self.trained)
        # a review's own check holds every task: no separate look back
        looking_back = cfg.retention_size > 0 and cfg.retention > 0 and not stage.reviews_all
        span = self._steps(stage)  # the cosine; a settling stage may go on at its floor
        steps = 2 * span if stage.train_steps else span
        # the rule's retention sets (seed + 2); the report after the stage uses fresh ones
        retention_sets = {s.task: (s, eval_set(s, seed=cfg.seed + 2, size=cfg.retention_size,
                                               split=cfg.split, alphabet=alphabet))
                          for s in last_stages(stage, trained=self.trained)
                          } if looking_back else {}
        self.certifier = certifier = Certifier(
            stage, model.cfg.oeu.alphabet, model.controller.cfg.state_values,
            cfg.certify_views, cfg.certify_patterns,
            model.cfg.oeu.carry_gate, self.trained) if cfg.certify else None
        if certifier is not None and st.resume and "certifier" in st.resume:
            certifier.load_state(st.resume["certifier"])
        self._sampler = rng
        if certifier is not None:  # the OEU table of every task so far, exact targets
            replay = merge_examples(replay, certifier.oeu_table())
            cert_sets = self._cert_sets(stage)
        started = time.time()
        resumed_from = st.step  # 0 for a fresh stage: tells this run's records from others'
        main = self.dist.main
        bar = _progress(cfg, stage, st.step, steps, enabled=main)
        board = _tensorboard(cfg.out) if main else None
        try:
            while st.step < steps and not self.stopped:
                with self._autocast():
                    scale = max(ANNEAL_FLOOR, cfg.anneal ** st.uncertified)
                    metrics, replay = self._train_step(stage, model, opt, rng, st.step, replay,
                                                       st.retained, scale)
                st.step += 1
                if self.average is not None:
                    self.average.update(model)
                judged = self._judged(model)
                out_of_time = self.dist.agree(  # rank 0's clock decides for every rank
                    cfg.time_budget is not None
                    and time.time() - started >= 60 * cfg.time_budget)
                judge = (st.step % cfg.eval_every == 0 if stage.train_steps is None
                         else st.step >= span and (st.step - span) % cfg.eval_every == 0)
                if judge or st.step == steps or out_of_time:
                    check = screened_evaluate(judged, heldout, self._budget(stage),
                                              cfg.eval_screen, stage.competence, self.dist)
                    acc = check.accuracy
                    metrics.update(accuracy=acc, eval_size=check.solved)
                    if check.solved < check.total:  # stopped at the screen: cannot pass
                        metrics.update(eval_screened=check.total)
                    retained = None
                    if retention_sets and check.best >= stage.competence:  # competent: look back
                        retained = {t: evaluate(judged, ex, self._budget(s), dist=self.dist)
                                    for t, (s, ex) in retention_sets.items()}
                        metrics.update({f"retained/{t}": a for t, a in retained.items()})
                    cert = None
                    if certifier is not None:  # the tables; the controller's once competent
                        cert = certifier.check_oeu(judged)
                        if check.best >= stage.competence:
                            certifier.check_controller(judged, cert, cert_sets, st.step)
                            if cert.certified and cfg.certify_all:  # sampled views pass:
                                certifier.check_controller(  # now every view, or no pass
                                    judged, cert, self._every_view(stage, judged, cert_sets),
                                    st.step, every=True)
                            if not cert.certified:
                                self.log(f"stage {stage.index} ({stage.name}): competent at "
                                         f"step {st.step}, not certified: {cert.describe()}")
                        else:  # below the bar: the plan pools replayed meanwhile stay current
                            metrics.update(plan_pool=certifier.refresh_plans(judged, cert_sets,
                                                                             st.step))
                        metrics.update(cert.metrics())
                    decision = decide(stage, check.best, st.step, steps, retained,
                                      cfg.retention, None if cert is None else cert.certified)
                    st.passed = self.dist.agree(decision == Decision.ADVANCE)
                    if decision == Decision.CONSOLIDATE:
                        self._log_consolidation(stage, st.step, retained)
                    elif st.passed and retained and min(retained.values()) < cfg.retention:
                        self.log(f"stage {stage.index} ({stage.name}): step budget spent; "
                                 f"advancing with earlier tasks below the retention floor "
                                 f"{cfg.retention:g}: " + _fmt(retained))
                metrics.update(step=st.step, stage=stage.index, time=time.time() - started,
                               run=self.run_id, resumed_from=resumed_from)
                st.metrics.append(metrics)
                if main:
                    _log_jsonl(cfg.out, metrics)
                self.stopped = self.dist.any(self.interrupted)  # Ctrl-C so far: stop here
                if board is not None:
                    for k, v in metrics.items():
                        if isinstance(v, (int, float)):  # not the run id
                            board.add_scalar(f"stage_{stage.index}/{k}", v, st.step)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()
                                 if k in ("loss", "plan_acc", "step_acc", "oeu_acc", "accuracy")})
                if st.passed or st.step % cfg.ckpt_every == 0 or st.step == steps:
                    self._checkpoint(stage, model, opt, st, replay)
                if st.passed:
                    break
                if out_of_time:
                    self._checkpoint(stage, model, opt, st, replay)
                    self.log(f"stage {stage.index} ({stage.name}): time budget of "
                             f"{cfg.time_budget:g} min used up at step {st.step}")
                    break
            if self.stopped:
                path = self._checkpoint(stage, model, opt, st, replay)
                self.log(f"interrupted: saved {path} at step {st.step}; re-run to resume")
        finally:
            bar.close()
            if board is not None:
                board.close()
        elapsed = time.time() - started
        last = next((m["accuracy"] for m in reversed(st.metrics) if "accuracy" in m), None)
        verdict = "passed" if st.passed else ("interrupted" if self.stopped else "not passed")
        certified = next((m["certified"] for m in reversed(st.metrics) if "certified" in m), None)
        tables = "" if certified is None else (", certified" if certified else ", not certified")
        self.log(f"stage {stage.index} ({stage.name}): {verdict} at step {st.step}, free-running "
                 f"exact match {last if last is not None else float('nan'):.3f}{tables}, "
                 f"{elapsed:.1f} s")
        if st.passed and cfg.retention_size:
            self._report_retention(stage, self._judged(model), st)
        if main:
            _plot_curve(cfg.out, stage, st.metrics)
        return st

    def _log_consolidation(self, stage: Stage, step: int, retained: dict[str, float]) -> None:
        low = {t: a for t, a in retained.items() if a < self.cfg.retention}
        self.log(f"stage {stage.index} ({stage.name}): competent at step {step}, but "
                 + _fmt(low) + f" below the retention floor {self.cfg.retention:g}: "
                 f"consolidating (review {CONSOLIDATE_REVIEW:.0%}, weighted to what dropped)")

    def _cert_sets(self, stage: Stage) -> dict[str, list[Example]]:
        """The prompts a stage's sampled certificates draw from, per task trained so far:
        held-out problems in the training wordings, the stage's own task's too (not its
        competence set, which holds held-out wordings: a wrong plan is replayed in training,
        and a held-out wording would then be trained)."""
        cfg = self.cfg
        own = () if stage.reviews_all else (stage,)
        return {s.task: eval_set(s, seed=cfg.seed + 2, split=cfg.split, alphabet=cfg.symbols,
                                 size=max(cfg.retention_size, cfg.certify_views))
                for s in (*own, *last_stages(stage, trained=self.trained))}

    def _steps(self, stage: Stage) -> int:
        """The span of ``stage``'s cosine: the run's ``--steps`` (its step budget too), or a
        settling stage's own ``train_steps`` if more, judged from its end on, every
        --eval-every steps at the floor rate until it passes or as many steps again."""
        return max(self.cfg.steps, stage.train_steps or 0)

    def _decay(self, stage: Stage) -> float:
        """The average's decay in ``stage``: the run's ``--ema``, or the stage's own if slower
        (a run without --ema keeps none)."""
        return max(self.cfg.ema, stage.ema or 0.0) if self.cfg.ema else 0.0

    def _every_view(self, stage: Stage, model: LearnedMachine,
                    sampled: dict[str, list[Example]]) -> dict[str, list[Example]]:
        """One prompt per view of each trained task's training wordings
        (``controller_tables.every_view``; computed once per stage), for ``--certify-all-
        views``; a task whose views cannot be enumerated (fmap) keeps its sampled set."""
        from llamacpu.learn.controller_tables import every_view

        if self._views_of[0] != stage.index:
            view, out = model.cfg.controller.view, {}
            for task, examples in sampled.items():
                try:
                    out[task] = every_view(task, view, (self.cfg.split,),
                                           seed=self.cfg.seed, alphabet=self.cfg.symbols,
                                           combinations="trained").examples
                except ValueError:
                    out[task] = list(examples)
            self._views_of = (stage.index, out)
        return self._views_of[1]

    def _budget(self, stage: Stage) -> int | None:
        """Machine steps a check's free runs may take: the stage's own budget, sized for its
        template wordings; with grammar wordings (a question around the operands makes a
        run longer) each batch's from its costliest reference run (``step_budget``)."""
        return stage.max_steps if self.cfg.wordings == "templates" else None

    def _report_retention(self, stage: Stage, model: LearnedMachine, st: _StageState) -> None:
        """Forgetting, measured after the stage: free-running exact match on FRESH held-out
        prompts of every earlier task (at the widest stage it was trained at; not the sets
        the stage rule looked at), logged and appended to ``metrics.jsonl`` as
        ``{"retained": {task: accuracy}}``."""
        earlier = last_stages(stage, trained=self.trained)
        if not earlier:
            return
        seed = self.cfg.seed + 3
        got = {s.task: evaluate(model, eval_set(s, seed=seed, size=self.cfg.retention_size,
                                                split=self.cfg.split,
                                                alphabet=self.cfg.symbols),
                                self._budget(s), dist=self.dist) for s in earlier}
        self.log(f"stage {stage.index} ({stage.name}): retained " + _fmt(got))
        if self.dist.main:
            _log_jsonl(self.cfg.out, {"stage": stage.index, "step": st.step, "retained": got})

    def _autocast(self):
        """bf16 autocast on CUDA (``--device cuda``); a no-op on the CPU."""
        if self.cfg.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _on_sigint(self, signum, frame) -> None:  # noqa: ARG002
        if self.interrupted:  # a second Ctrl-C: stop now (the last checkpoint stays valid)
            raise KeyboardInterrupt
        self.interrupted = True

    def _train_step(self, stage: Stage, model: LearnedMachine, opt, rng: random.Random,
                    step: int, replay: OEUExamples,
                    retained: dict[str, float] | None = None,
                    lr_scale: float = 1.0) -> tuple[dict, OEUExamples]:
        """One optimizer step on a global batch; this rank computes its rows' share.

        ``retained`` (the last retention measurement) below the floor: the stage is
        consolidating, and the batch's review share is :data:`CONSOLIDATE_REVIEW`, drawn by
        :func:`curriculum.review_weights`.

        Every loss is a sum over rows divided by a count of the WHOLE batch, so the ranks'
        losses add up to the one-process loss and their gradients are summed
        (``Dist.sum_grads``); the OEU's replay loss, computed in full on every rank, is
        divided by the number of ranks. One process: the shares are the whole.
        """
        cfg, dist = self.cfg, self.dist
        for g in opt.param_groups:  # ``lr_scale``: the stage's annealing (``anneal``)
            g["lr"] = (lr_at(step, self._steps(stage), cfg.lr * stage.lr_scale, cfg.warmup)
                       * g.get("lr_scale", 1.0) * lr_scale)
        # the global batch and every random choice about it: the same on every rank
        review = weights = None
        if retained and cfg.retention > 0 and min(retained.values()) < cfg.retention:
            review = max(stage.review, CONSOLIDATE_REVIEW)
            weights = review_weights(retained)
        batch = [_with_filler(e, rng) if rng.random() < cfg.filler else e
                 for e in sample_batch(stage, rng, cfg.batch_size, review=review,
                                       weights=weights, split=cfg.split,
                                       alphabet=cfg.symbols, trained=self.trained)]
        if self.certifier is not None:  # prompts whose plan the last certificate found wrong
            wrong = self.certifier.plan_rows(rng, len(batch))
            if wrong:
                batch = batch[: len(batch) - len(wrong)] + wrong
        seeds = [rng.getrandbits(63) for _ in batch]             # each row's step subsample
        prompts = [e.prompt for e in batch]
        exe_prompts = [prompts[rng.randrange(len(batch))] if rng.random() < cfg.prompt_mix
                       else p for p in prompts]
        programs = [run_program(e) for e in batch]     # what runs
        plans = [plan_program(e) for e in batch]         # what the plan phase emits
        mine = dist.rows(len(batch))
        # this rank's rows: expert runs, then their share of each loss
        sup = _supervise([batch[i] for i in mine], cfg.step_sample,
                         [seeds[i] for i in mine], dist)
        replay = merge_examples(replay, _gather_examples(dist, sup.oeu))  # all ALU steps seen
        ctl = model.controller
        my_exe = [exe_prompts[i] for i in mine]
        plan_prefix = exe_cache = None
        if cfg.shared_prompt:  # each distinct prompt through the LM once, for both losses
            distinct = list(dict.fromkeys(sup.prompts + my_exe))
            row = {p: i for i, p in enumerate(distinct)}
            prefix = ctl.encode_prefix(distinct)                    # <bos> prompt, [U, ...]
            plan_prefix = prefix.select(_rows(row, sup.prompts, ctl.device))
            exe_cache = ctl.encode_prompt(prefix=prefix).select(_rows(row, my_exe, ctl.device))
        n_slot = sum(len(p.slots) - N_PORTS for p in plans)
        n_weights = sum(len(ctl.weights_targets([p])[0]) for p in plans)
        plan, plan_m = ctl.plan_loss(sup.prompts, sup.plans,
                                     counts=(n_slot + len(plans), n_slot, n_weights),
                                     prefix=plan_prefix)
        step_mask = sup.step_args[2]                                          # [B_r, T]
        n_steps = 3 * float(dist.sum(step_mask.sum().double()))            # Σ mask, 3 decisions
        exe, exe_m = ctl.step_loss(my_exe, *sup.step_args, denominator=n_steps,
                                   cache=exe_cache)
        alu, alu_m = oeu_loss(model.oeu, replay)
        alu = alu / dist.world
        loss = plan + exe + alu
        sums = {"plan_loss": plan.item(), "step_loss": exe.item(), "oeu_loss": alu.item()}
        rows = float(len(mine))
        means = {k: (v, rows) for k, v in {**_scalars(plan_m), **_scalars(exe_m)}.items()
                 if k != "loss"}
        means.update({k: (v, 1.0) for k, v in alu_m.items()})
        views, actions = sup.compile
        if self.certifier is not None and self.certifier.compile_buffer:  # and its failures
            views = views + [v for v, _ in self.certifier.compile_buffer]
            actions = actions + [a for _, a in self.certifier.compile_buffer]
        if views:  # composed rows: the compile head on their expert's decisions
            comp, comp_m = compile_loss(ctl, views, actions)
            loss = loss + comp / dist.world
            sums["compile_loss"] = comp_m["compile_loss"] / dist.world
            means["compile_acc"] = (comp_m["compile_acc"], comp_m["compile_views"])
        if self.certifier is not None:  # the execute table's rows and the failed ones
            loss = loss + self._pattern_share(ctl, sup, [seeds[i] for i in mine], step,
                                              sums, means)
        if cfg.answer_period and step % cfg.answer_period == 0:
            loss = loss + cfg.answer_weight * self._answer_share(
                model, batch, programs, sup, mine, step, sums, means)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dist.sum_grads(trainable)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sums["loss"] = loss.item()
        metrics = dist.reduce_metrics(sums, means)
        for _ in range(cfg.oeu_steps - 1):  # OEU-only steps: the other grads are None
            opt.zero_grad(set_to_none=True)
            extra, extra_m = oeu_loss(model.oeu, replay)  # the same replay on every rank
            (extra / dist.world).backward()
            dist.sum_grads(model.oeu.parameters())
            torch.nn.utils.clip_grad_norm_(model.oeu.parameters(), 1.0)
            opt.step()
            metrics.update(extra_m)
        metrics["lr"] = opt.param_groups[0]["lr"]
        return metrics, replay

    def _pattern_share(self, ctl, sup: _Supervision, seeds: Sequence[int], step: int,
                       sums: dict, means: dict) -> Tensor:
        """This rank's share of the execute loss on the certificate's rows
        (``Certifier.rows``), divided by the whole batch's count of checked decisions."""
        got = self.certifier.rows(sup.prompts, sup.programs, seeds, step, self.dist)
        n = got[3].sum().double() if got is not None else torch.zeros((), dtype=torch.double)
        total = float(self.dist.sum(n))
        if got is None:
            sums["pattern_loss"], means["pattern_acc"] = 0.0, (1.0, 0.0)
            return torch.zeros((), device=ctl.device)
        prompts, views, targets, mask = got
        B, T = targets.shape[:2]
        loss, m = ctl.step_loss(prompts, views, targets, mask,
                                torch.zeros(B, T, dtype=torch.long), denominator=total)
        sums["pattern_loss"], means["pattern_acc"] = loss.item(), (m.step_acc, float(B))
        return loss

    def _answer_share(self, model: LearnedMachine, batch: Sequence[Example],
                      programs: Sequence[Program], sup: _Supervision, mine: Sequence[int],
                      step: int, sums: dict, means: dict) -> Tensor:
        """This rank's share of the answer loss on the batch's first ``answer_batch`` rows:
        every rank computes all of it and takes 1/K. (The soft machine steps a batch until
        ALL its rows halt and half-halted rows keep moving, so a row's answer depends on
        its batch-mates: split over ranks it would differ. It is a few percent of a step.)"""
        cfg, dist = self.cfg, self.dist
        # the first answer_batch rows whose plan is their program (a composed row's plan
        # is the compile marker: its program is built, not planned slot by slot)
        pick = [i for i, e in enumerate(batch) if not is_composed(e.task)][:cfg.answer_batch]
        if not pick:
            return torch.zeros((), device=model.controller.device)
        sample_prob = min(1.0, step / max(1, cfg.steps // 2))  # teacher → free plan
        chosen = set(pick)
        own = [j for j, i in enumerate(mine) if i in chosen]  # mine among them: I ran them
        steps = max((sup.steps[j] for j in own), default=0)
        steps = int(dist.max(torch.tensor([steps])).item())  # the longest expert run of all
        rows = [batch[i] for i in pick]
        ans, ans_m = model.answer_loss(
            [e.prompt for e in rows], [e.answer for e in rows], [programs[i] for i in pick],
            steps=steps, sample_prob=sample_prob,
            out_size=max(default_out_size(e) for e in rows))
        sums["answer_loss"] = ans_m["answer_loss"] / dist.world
        means["answer_acc_soft"] = (ans_m["answer_acc_soft"], 1.0)
        return ans / dist.world


def _rows(row: dict[str, int], prompts: Sequence[str], device) -> Tensor:
    """Indices of ``prompts`` in a batch of distinct prompts (``row``: prompt → index)."""
    return torch.tensor([row[p] for p in prompts], dtype=torch.long, device=device)


def _gather_examples(dist: distributed.Dist, ex: OEUExamples) -> OEUExamples:
    """Every rank's ALU examples (so every rank's replay buffer is the same)."""
    if not dist.active:
        return ex
    rows = dist.gather_rows(torch.stack(list(ex), 1))                      # [E, 7]
    return merge_examples(OEUExamples(*rows.T))

