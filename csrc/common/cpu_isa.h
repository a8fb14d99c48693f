// Which x86 vector extensions the CPU kernels may use: asked of the CPU once, capped by
// FASTSDF_CPU_ISA=baseline|avx2|avx512 (to test or compare the narrower code paths), and the one
// dispatcher that runs a kernel compiled for them.
#pragma once

#include <cstdlib>
#include <cstring>
#include <type_traits>

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

// The widest float vector cpu_isa() allows, in floats: 16 (AVX-512), 8 (AVX2 with FMA) or 4.
inline int widest_width() {
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return 16;
    case CpuIsa::kAvx2:
      return 8;
    default:
      return 4;
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTSDF_TARGET(isa) __attribute__((target(isa), flatten))
#else
#define FASTSDF_TARGET(isa)
#endif

namespace detail {

template <typename Fn>
FASTSDF_TARGET("avx512f,avx2,fma") void with_16(const Fn& fn) {
  fn(std::integral_constant<int, 16>{});
}

template <typename Fn>
FASTSDF_TARGET("avx2,fma") void with_8(const Fn& fn) {
  fn(std::integral_constant<int, 8>{});
}

template <typename Fn>
void with_4(const Fn& fn) {
  fn(std::integral_constant<int, 4>{});
}

}  // namespace detail

#undef FASTSDF_TARGET

// Runs fn(std::integral_constant<int, W>) for the widest W of 16, 8 and 4 floats per vector that is
// at most width and kMax, compiled for the extensions W needs (AVX-512; AVX2 with FMA; none) with
// everything it calls inlined into it: the module runs on any x86-64, and its kernels use what the
// CPU has. The caller keeps width within widest_width(); kMax spares kernels the instantiations
// they never run.
template <int kMax = 16, typename Fn>
void with_width(int width, const Fn& fn) {
  if constexpr (kMax >= 16) {
    if (width >= 16) return detail::with_16(fn);
  }
  if constexpr (kMax >= 8) {
    if (width >= 8) return detail::with_8(fn);
  }
  detail::with_4(fn);
}

}  // namespace fastsdf
