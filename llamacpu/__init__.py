"""llamacpu: a neuro-symbolic differentiable computer with a language model as its CPU.

Layers, bottom up (see README.md and ../shared/ARCHITECTURE.md):

- ``isa``     the instruction set, slot layout and alphabet
- ``asm``     .lasm text -> Program, and back
- ``graph``   control-flow graph, validation and drawing
- ``interp``  the reference interpreter (plain Python ints): the ground truth
"""

__version__ = "0.1.0"
