"""Fused kernels for the hot path, imported as ``llamacpu.kernels``.

Each kernel sits beside its torch reference; CUDA tensors dispatch to Triton, CPU tensors
to the fastest correct torch path.
"""

# The sources live in the repository's kernels/src/ and install as llamacpu.kernels only.
# kernels/ itself has no __init__.py: from the repository root (where `python -m` puts the
# working directory first on sys.path) it must not shadow the PyPI package named `kernels`
# that transformers and bitsandbytes import (tests/test_packaging.py).
