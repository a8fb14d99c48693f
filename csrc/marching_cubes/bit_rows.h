// Rows of grid points as bit sets, 64 points to a word: the CPU marching cubes thresholds each row of
// samples once into "above the level" bits and finds crossed edges and cut cubes with word-wide
// logic, so that its cost per sample is a compare, and per cube of the surface a table lookup.
#pragma once

#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fastsdf::mc::bits {

constexpr int kWordBits = 64;

inline int64_t words_for(int64_t n) { return (n + kWordBits - 1) / kWordBits; }

// Bits [0, n) of a word, n in [0, 64].
inline uint64_t low_bits(int64_t n) { return n >= kWordBits ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

inline int popcount(uint64_t x) {
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

// Word w of a row shifted down by one point (bit k holds point k + 1); rows carry a zero word past
// their end, so w + 1 is always readable.
inline uint64_t next_points(const uint64_t* row, int64_t w) { return (row[w] >> 1) | (row[w + 1] << 63); }

// Bits k and k + 1 of a row, in bits 0 and 1.
inline int two_bits(const uint64_t* row, int64_t k) {
  const int64_t w = k / kWordBits;
  const int o = static_cast<int>(k % kWordBits);
  const uint64_t lo = row[w] >> o;
  return static_cast<int>((o == kWordBits - 1 ? lo | (row[w + 1] << 1) : lo) & 3);
}

// Samples row[0], row[stride], ... (n of them) against `threshold`: bit k of out set where sample k
// is above it. With Check, `bad` becomes true if a sample is NaN or Inf. Bits past n are zero.
template <bool Check, typename T>
void threshold_row(const T* row, int64_t stride, int64_t n, T threshold, uint64_t* out, bool& bad) {
  int64_t k = 0;
#if defined(__SSE2__)
  if (stride == 1) {
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
