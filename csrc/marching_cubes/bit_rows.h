// Rows of grid points as bit sets, 64 points to a word: the CPU marching cubes thresholds each row of
// samples once into "above the level" bits and finds crossed edges and cut cubes with word-wide
// logic, so that its cost per sample is a compare, and per cube of the surface a table lookup.
#pragma once

#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
// The fast path: x86-64-v3's AVX2, BMI1 and POPCNT, compiled into the functions that carry this
// attribute and chosen at run time (see marching_cubes_cpu.cpp); without it, SSE2 and portable code.
#define FASTSDF_MC_FAST_TARGET __attribute__((target("avx2,bmi,popcnt")))
#endif

namespace fastsdf::mc::bits {

constexpr int kWordBits = 64;

inline int64_t words_for(int64_t n) { return (n + kWordBits - 1) / kWordBits; }

// Bits [0, n) of a word, n in [0, 64].
inline uint64_t low_bits(int64_t n) { return n >= kWordBits ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

// Fast: the caller is compiled for POPCNT (FASTSDF_MC_FAST_TARGET) and inlines this.
template <bool Fast = false>
inline int popcount(uint64_t x) {
  if constexpr (Fast) return __builtin_popcountll(x);
#if defined(__GNUC__) && (defined(__POPCNT__) || !defined(__x86_64__))
  return __builtin_popcountll(x);
#else
  // Without the instruction, GCC calls libgcc's table-driven popcount; this is inline and branch-free.
  x -= (x >> 1) & 0x5555555555555555ULL;
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
#endif
}

inline int lowest_bit(uint64_t x) {  // x != 0
#if defined(__GNUC__)
  return __builtin_ctzll(x);
#else
  int n = 0;
  while (!((x >> n) & 1)) ++n;
  return n;
#endif
}

inline void prefetch(const void* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// Word w of a row shifted down by one point (bit k holds point k + 1); rows carry a zero word past
// their end, so w + 1 is always readable.
inline uint64_t next_points(const uint64_t* row, int64_t w) { return (row[w] >> 1) | (row[w + 1] << 63); }

#if defined(FASTSDF_MC_FAST_TARGET)
// The whole words of threshold_row for contiguous samples, eight floats or four doubles to a
// compare; returns the number of samples done (a multiple of 64).
template <bool Check, typename T>
FASTSDF_MC_FAST_TARGET int64_t threshold_words_avx2(const T* row, int64_t n, T threshold, uint64_t* out, bool& bad) {
  int64_t k = 0;
  __m256i acc = _mm256_setzero_si256();
  for (; k + kWordBits <= n; k += kWordBits) {
    uint64_t word = 0;
    if constexpr (sizeof(T) == 4) {
      const __m256 thr = _mm256_set1_ps(threshold);
      for (int g = 0; g < kWordBits; g += 8) {
        const __m256 x = _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k + g);
        word |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(x, thr, _CMP_GT_OQ))) << g;
        if constexpr (Check) acc = _mm256_or_si256(acc, _mm256_castps_si256(_mm256_sub_ps(x, x)));
      }
    } else {
      const __m256d thr = _mm256_set1_pd(threshold);
      for (int g = 0; g < kWordBits; g += 4) {
        const __m256d x = _mm256_loadu_pd(reinterpret_cast<const double*>(row) + k + g);
        word |= static_cast<uint64_t>(_mm256_movemask_pd(_mm256_cmp_pd(x, thr, _CMP_GT_OQ))) << g;
        if constexpr (Check) acc = _mm256_or_si256(acc, _mm256_castpd_si256(_mm256_sub_pd(x, x)));
      }
    }
    out[k / kWordBits] = word;
  }
  if constexpr (Check) bad |= !_mm256_testz_si256(acc, acc);
  return k;
}
#endif

// Samples row[0], row[stride], ... (n of them) against `threshold`: bit k of out set where sample k
// is above it. With Check, `bad` becomes true if a sample is NaN or Inf. Bits past n are zero.
// Fast: the caller is compiled for FASTSDF_MC_FAST_TARGET.
template <bool Check, bool Fast = false, typename T>
void threshold_row(const T* row, int64_t stride, int64_t n, T threshold, uint64_t* out, bool& bad) {
  int64_t k = 0;
#if defined(FASTSDF_MC_FAST_TARGET)
  if constexpr (Fast)
    if (stride == 1) k = threshold_words_avx2<Check>(row, n, threshold, out, bad);
#endif
#if defined(__SSE2__)
  if (stride == 1 && !Fast) {
    // x - x is +0 for finite x and NaN otherwise: OR-ing its bits flags any non-finite sample.
    if constexpr (sizeof(T) == 4) {
      const __m128 thr = _mm_set1_ps(threshold);
      __m128 acc = _mm_setzero_ps();
      for (; k + kWordBits <= n; k += kWordBits) {
        uint64_t word = 0;
        for (int g = 0; g < kWordBits; g += 4) {
          const __m128 x = _mm_loadu_ps(reinterpret_cast<const float*>(row) + k + g);
          word |= static_cast<uint64_t>(_mm_movemask_ps(_mm_cmpgt_ps(x, thr))) << g;
          if constexpr (Check) acc = _mm_or_ps(acc, _mm_sub_ps(x, x));
        }
        out[k / kWordBits] = word;
      }
      if constexpr (Check) bad |= _mm_movemask_epi8(_mm_cmpeq_epi32(_mm_castps_si128(acc), _mm_setzero_si128())) != 0xffff;
    } else {
      const __m128d thr = _mm_set1_pd(threshold);
      __m128d acc = _mm_setzero_pd();
      for (; k + kWordBits <= n; k += kWordBits) {
        uint64_t word = 0;
        for (int g = 0; g < kWordBits; g += 2) {
          const __m128d x = _mm_loadu_pd(reinterpret_cast<const double*>(row) + k + g);
          word |= static_cast<uint64_t>(_mm_movemask_pd(_mm_cmpgt_pd(x, thr))) << g;
          if constexpr (Check) acc = _mm_or_pd(acc, _mm_sub_pd(x, x));
        }
        out[k / kWordBits] = word;
      }
      if constexpr (Check) bad |= _mm_movemask_epi8(_mm_cmpeq_epi32(_mm_castpd_si128(acc), _mm_setzero_si128())) != 0xffff;
    }
  }
#endif
  for (; k < n; k += kWordBits) {
    const int64_t m = n - k < kWordBits ? n - k : kWordBits;
    uint64_t word = 0;
    bool b = false;
    for (int64_t g = 0; g < m; ++g) {
      const T x = row[(k + g) * stride];
      word |= static_cast<uint64_t>(x > threshold) << g;
      if constexpr (Check) b |= !(x - x == T(0));
    }
    out[k / kWordBits] = word;
    bad |= b;
  }
}

}  // namespace fastsdf::mc::bits
