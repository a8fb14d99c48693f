"""Triton kernels (CUDA tensors; on the CPU only under TRITON_INTERPRET=1)."""
