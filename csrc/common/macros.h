// Qualifiers for code shared between host C++ and CUDA device code.
#pragma once

#ifdef __CUDACC__
#define FASTSDF_HD __host__ __device__ __forceinline__
#else
#define FASTSDF_HD inline
#endif
