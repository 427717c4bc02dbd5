"""Prompts as people type them: a machine trained in the printable alphabet
(``train --alphabet printable``) on the tasks' grammar (``--wordings grammar``, whose
wordings come capitalised and as written) solves ``Add 12 and 35.`` and fresh capitalised
prompts in wordings it never trained on, running free.

The run is stage 0 (1-digit addition) alone, trained here (about a minute on one core):
addition is length-generic, so its machine also answers 2- and 3-digit prompts.
"""

from __future__ import annotations

import pytest
import torch

from llamacpu.core.isa import PRINTABLE_ALPHABET
from llamacpu.learn.evaluation import draw_examples, load_learned
from llamacpu.learn.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def printable_machine(tmp_path_factory):
    out = tmp_path_factory.mktemp("printable")
    threads = torch.get_num_threads()
    cfg = TrainConfig(stages=(0,), steps=400, seed=0, out=out, progress=False, threads=1,
                      alphabet="printable", wordings="grammar")
    try:
        done = Trainer(cfg, log=lambda s: None).run()
    finally:
        torch.set_num_threads(threads)
    assert done[0].passed
    return load_learned(out / "stage_0")


def test_a_printable_machine_solves_add_12_and_35(printable_machine):
    assert printable_machine.alphabet == PRINTABLE_ALPHABET
    solved = printable_machine.solve(["Add 12 and 35.", "What is 47 plus 38?"])
    assert [s.output for s in solved] == ["47", "85"]


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_fresh_capitalised_prompts_in_unseen_wordings_are_exact(printable_machine, digits):
    examples = draw_examples("add", digits, 24, seed=11, split="recombined",
                             alphabet=PRINTABLE_ALPHABET)
    assert sum(any(c.isupper() for c in e.prompt) for e in examples) >= 6
    solved = printable_machine.solve([e.prompt for e in examples])
    wrong = [(e.prompt, e.answer, s.output) for e, s in zip(examples, solved)
             if s.output != e.answer]
    assert not wrong
