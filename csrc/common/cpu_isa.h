// Which x86 vector extensions the CPU kernels may use: asked of the CPU once, capped by
// FASTSDF_CPU_ISA=baseline|avx2|avx512 (to test or compare the narrower code paths).
#pragma once

#include <cstdlib>
#include <cstring>

namespace fastsdf {

enum class CpuIsa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    CpuIsa best = CpuIsa::kBaseline;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = CpuIsa::kAvx2;
    if (best == CpuIsa::kAvx2 && __builtin_cpu_supports("avx512f")) best = CpuIsa::kAvx512;
#endif
    const char* cap = std::getenv("FASTSDF_CPU_ISA");
    if (cap && std::strcmp(cap, "baseline") == 0) return CpuIsa::kBaseline;
    if (cap && std::strcmp(cap, "avx2") == 0 && best == CpuIsa::kAvx512) return CpuIsa::kAvx2;
    return best;
  }();
  return isa;
}

}  // namespace fastsdf
