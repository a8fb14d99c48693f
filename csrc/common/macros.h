// Qualifiers for code shared between host C++ and CUDA device code.
#pragma once

#ifdef __CUDACC__
#define FASTSDF_HD __host__ __device__ __forceinline__
#else
#define FASTSDF_HD inline
#endif

// Products and sums rounded on their own, never fused into an FMA, so that host and device code
// compute bit-identical results (and neighbouring cubes the same face decisions).
#ifdef __CUDA_ARCH__
#define FASTSDF_MUL_RN(a, b) __dmul_rn((a), (b))
#define FASTSDF_ADD_RN(a, b) __dadd_rn((a), (b))
#else
#define FASTSDF_MUL_RN(a, b) ((a) * (b))
#define FASTSDF_ADD_RN(a, b) ((a) + (b))
#endif
