// Four float32 lanes, one per child of a node or triangle of a pack, so that the traversals in bvh.h
// are written once: a GCC/Clang vector (SSE, NEON) in the CPU module, where the auto-vectoriser
// gives up on code with selects, and a plain array in CUDA code, where a thread runs the lanes in turn.
#pragma once

#include <cmath>
#include <cstring>

#include "common/macros.h"

#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
#define FASTSDF_VECTOR_LANES 1
#endif

namespace fastsdf::msdf {

constexpr int kLanes = 4;

#ifdef FASTSDF_VECTOR_LANES
typedef float FloatLanes __attribute__((vector_size(16)));
typedef int MaskLanes __attribute__((vector_size(16)));  // -1 where true, 0 where false
#else
struct FloatLanes {
  float x[kLanes];
  FASTSDF_HD float& operator[](int k) { return x[k]; }
  FASTSDF_HD float operator[](int k) const { return x[k]; }
};
struct MaskLanes {
  int x[kLanes];
  FASTSDF_HD int& operator[](int k) { return x[k]; }
  FASTSDF_HD int operator[](int k) const { return x[k]; }
};
#endif

struct F4 {
  FloatLanes v;
};
struct M4 {
  MaskLanes v;
};

// Each operation once for both representations: whole vectors where the compiler has them, a loop
// over the lanes elsewhere.
#ifdef FASTSDF_VECTOR_LANES
#define FASTSDF_LANEWISE(Type, vector_expr, lane_expr) return Type{vector_expr};
#else
#define FASTSDF_LANEWISE(Type, vector_expr, lane_expr) \
  Type r;                                              \
  for (int k = 0; k < kLanes; ++k) r.v[k] = lane_expr; \
  return r;
#endif

FASTSDF_HD F4 operator+(F4 a, F4 b) { FASTSDF_LANEWISE(F4, a.v + b.v, a.v[k] + b.v[k]) }
FASTSDF_HD F4 operator-(F4 a, F4 b) { FASTSDF_LANEWISE(F4, a.v - b.v, a.v[k] - b.v[k]) }
FASTSDF_HD F4 operator*(F4 a, F4 b) { FASTSDF_LANEWISE(F4, a.v * b.v, a.v[k] * b.v[k]) }
FASTSDF_HD F4 operator/(F4 a, F4 b) { FASTSDF_LANEWISE(F4, a.v / b.v, a.v[k] / b.v[k]) }
FASTSDF_HD M4 operator<(F4 a, F4 b) { FASTSDF_LANEWISE(M4, a.v < b.v, a.v[k] < b.v[k] ? -1 : 0) }
FASTSDF_HD M4 operator>(F4 a, F4 b) { FASTSDF_LANEWISE(M4, a.v > b.v, a.v[k] > b.v[k] ? -1 : 0) }
FASTSDF_HD M4 operator>=(F4 a, F4 b) { FASTSDF_LANEWISE(M4, a.v >= b.v, a.v[k] >= b.v[k] ? -1 : 0) }
FASTSDF_HD M4 operator&(M4 a, M4 b) { FASTSDF_LANEWISE(M4, a.v & b.v, a.v[k] & b.v[k]) }
// Lanes of a where m is set, of b elsewhere.
FASTSDF_HD F4 select(M4 m, F4 a, F4 b) { FASTSDF_LANEWISE(F4, m.v ? a.v : b.v, m.v[k] ? a.v[k] : b.v[k]) }
// The larger / smaller lane by lane, as x86's maxps / minps: the second operand where either is NaN.
FASTSDF_HD F4 vmax(F4 a, F4 b) { return select(a > b, a, b); }
FASTSDF_HD F4 vmin(F4 a, F4 b) { return select(a < b, a, b); }
#undef FASTSDF_LANEWISE

FASTSDF_HD F4 splat(float x) {
  F4 r;
  for (int k = 0; k < kLanes; ++k) r.v[k] = x;
  return r;
}

// kLanes consecutive floats.
FASTSDF_HD F4 load4(const float* row) {
  F4 r;
  memcpy(&r.v, row, sizeof(r.v));
  return r;
}

FASTSDF_HD float lane(F4 a, int k) { return a.v[k]; }

// Bit k set where lane k of m is (movmskps, where there is one).
FASTSDF_HD int bits(M4 m) { return (m.v[0] & 1) | (m.v[1] & 2) | (m.v[2] & 4) | (m.v[3] & 8); }

// The index of the lowest set bit of x != 0.
FASTSDF_HD int lowest_bit(int x) {
#ifdef __CUDA_ARCH__
  return __ffs(x) - 1;
#else
  return __builtin_ctz(static_cast<unsigned>(x));
#endif
}

// sqrtf lane by lane compiles to one vector square root (sqrtps) when -fno-math-errno lets it.
FASTSDF_HD F4 vsqrt(F4 a) {
  F4 r;
  for (int k = 0; k < kLanes; ++k) r.v[k] = sqrtf(a.v[k]);
  return r;
}

FASTSDF_HD F4 vabs(F4 a) { return vmax(a, splat(0.0f) - a); }

FASTSDF_HD float sum(F4 a) { return (a.v[0] + a.v[1]) + (a.v[2] + a.v[3]); }

FASTSDF_HD F4 dot3(const F4* a, const F4* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

}  // namespace fastsdf::msdf
