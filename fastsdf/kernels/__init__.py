"""Triton kernels (CUDA tensors; on the CPU only under TRITON_INTERPRET=1). They take prepared tensors
and import nothing of fastsdf outside ``fastsdf.kernels``."""
