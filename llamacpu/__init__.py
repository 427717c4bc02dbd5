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
"""

__version__ = "0.1.0"
