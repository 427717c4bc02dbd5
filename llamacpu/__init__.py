"""llamacpu: a neuro-symbolic differentiable computer with a language model as its CPU.

Layers, bottom up (see README.md and ../shared/ARCHITECTURE.md):

- ``isa``         the instruction set, slot layout and alphabet
- ``asm``         .lasm text -> Program, and back
- ``graph``       control-flow graph, validation and drawing
- ``interp``      the reference interpreter (plain Python ints): the ground truth
- ``memory``      HybridSWM: address keys, slot encoding, pointer reads and writes
- ``kernels``     fused pointer read (Triton on CUDA, torch on CPU)
- ``machine``     the differentiable machine with a pluggable OEU and sequencer
- ``oeu``         the neural ALU
- ``controller``  the language-model controller: plan and execute phases
- ``learned``     controller + OEU + machine, running free or trained end to end
- ``tasks``, ``curriculum``, ``train``, ``eval``, ``checkpoint``: the training stack
"""

__version__ = "0.1.0"
