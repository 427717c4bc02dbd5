"""Fused kernels for the hot path, imported as ``llamacpu.kernels``.

Each kernel sits beside its torch reference; CUDA tensors dispatch to Triton, CPU tensors
to the fastest correct torch path.
"""
