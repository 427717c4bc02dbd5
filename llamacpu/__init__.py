"""llamacpu: a neuro-symbolic differentiable computer with a language model as its CPU.

One subpackage per pipeline stage, data flowing one way (docs/architecture.md):

- ``core``      the symbolic machine: instruction set (``isa``), assembler and disassembler,
                program graph, the reference interpreter (the ground truth), expert programs
- ``kernels``   the fused pointer read (Triton on CUDA, torch on CPU)
- ``machine``   HybridSWM memory (addressing -> heads), the differentiable machine with a
                pluggable OEU and sequencer (``interfaces``), the symbolic and neural OEU
- ``llm``       model loading (the tiny Llama and pretrained ones), the controller's prompt
                encoders, plan and execute heads, and the weight-token channel
- ``learn``     tasks, the curriculum, the learned machine, the trainer, checkpoints
- ``evaluate``  hypothesis strategies, property checks of learned machines, baselines

and thin command lines on top: ``python -m llamacpu.{train,eval,run,asm,check,models,bench}``
or the ``llamacpu`` console script (``llamacpu.cli``).

The Python API is two lines::

    m = llamacpu.load("checkpoints/stage_3")   # a LearnedMachine, in eval mode
    m.solve(["12+35"])                          # [Solution('47', steps=...)]

Importing ``llamacpu`` is light (no torch); :func:`load` imports the machine when called.
"""

from __future__ import annotations

import os

from llamacpu._version import __version__

__all__ = ["load", "__version__"]


def load(path: str | os.PathLike):
    """The learned machine of a checkpoint directory (``checkpoints/stage_N``), ready to
    ``solve`` prompts: ``llamacpu.learn.evaluation.load_learned``. Reads the checkpoint
    (safetensors and JSON, no pickle) and writes nothing."""
    from pathlib import Path

    from llamacpu.learn.evaluation import load_learned

    return load_learned(Path(path))
