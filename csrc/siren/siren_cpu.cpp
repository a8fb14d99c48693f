// SIREN on the CPU (siren.h). A tile of points goes through every layer in turn: each layer is a
// small matrix product, A (tile rows x in) times the packed weight panels, in register blocks of
// MR rows x 2 vectors of outputs, with the bias and sine applied to the block before it is stored.
// Nothing but the tile's activations (and, for the Jacobian, each layer's derivative factors)
// leaves the registers, so they stay in the L1/L2 caches. The same template is instantiated for
// AVX-512, AVX2 with FMA and SSE vectors, picked once at run time (common/cpu_isa.h).
#include "siren/siren.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/cpu_isa.h"

// The vector types are only ever passed between always-inlined functions.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastsdf::siren {
namespace {

#define FASTSDF_INLINE inline __attribute__((always_inline))

template <int W>
struct Vec {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef int32_t I __attribute__((vector_size(4 * W)));
  typedef uint32_t U __attribute__((vector_size(4 * W)));
};

template <int W>
FASTSDF_INLINE typename Vec<W>::F load(const float* p) {
  typename Vec<W>::F v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int W>
FASTSDF_INLINE void store(float* p, typename Vec<W>::F v) {
  std::memcpy(p, &v, sizeof v);
}

// *p in every lane, as one broadcast load. GCC builds a vector of equal lanes inside these generic
// templates (no target attribute of their own) lane by lane, with inserts, even once they are
// inlined into an AVX2 or AVX-512 function, and `F{} + x` costs a scalar add first (it turns -0
// into +0, so it stays): either puts extra uops on the FMA ports for every broadcast of the
// products' inner loop. The instruction itself avoids both; SSE vectors splat well as they are.
template <int W>
FASTSDF_INLINE typename Vec<W>::F broadcast(const float* p) {
  typename Vec<W>::F v;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (W == 8) {
    asm("vbroadcastss %1, %0" : "=x"(v) : "m"(*p));  // ymm0-15: no AVX-512 register
    return v;
  } else if constexpr (W == 16) {
    asm("vbroadcastss %1, %0" : "=v"(v) : "m"(*p));
    return v;
  }
#endif
  v = *p - typename Vec<W>::F{};  // x - (+0) is x for every float: a plain splat
  return v;
}

// Arguments below this magnitude go through the fast reduction below, which stays exact there with
// or without FMA: q < 2^13 times pi/2's first two parts (8 and 11 bits) fits a float. Beyond, the
// vectors' sines would drift from sin and then, past 2^22 (q no longer in the mantissa), leave
// [-1, 1] altogether.
constexpr float kFastSineLimit = 8192.0f;

// sin(x) and cos(x) for |x| < kFastSineLimit: x = q pi/2 + r with |r| <= pi/4 (Cody-Waite: pi/2 in
// three parts, exact products), then Cephes' minimax polynomials on r and the quadrant's swap and
// signs. Within 1e-7 of float64 sin and cos of the float argument there (every float checked).
// Beyond the limit the values are wrong but finite or NaN, with no undefined behaviour: callers
// track the largest |x| (beyond_fast_range) and have exact_sincos redo those. NaN and Inf give NaN.
template <int W>
FASTSDF_INLINE void sincos_vec(typename Vec<W>::F x, typename Vec<W>::F* s, typename Vec<W>::F* c) {
  using F = typename Vec<W>::F;
  using U = typename Vec<W>::U;
  const F shifter = F{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const F shifted = x * 0.636619772f + shifter;
  // For |x| within the limit the low mantissa bits of `shifted` are q's (two's complement), read
  // as bits rather than converted: a float to int conversion out of range is undefined.
  const U q = (U)shifted;
  const F qf = shifted - shifter;
  const F r = ((x - qf * 1.5703125f) - qf * 4.837512969970703125e-4f) - qf * 7.54978995489188216e-8f;
  const F r2 = r * r;
  const F sr = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
  const F cr = 1.0f - 0.5f * r2 +
               r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f + r2 * 2.443315711809948e-5f));
  const auto odd = (q & 1u) != 0u;
  const F sv = odd ? cr : sr, cv = odd ? sr : cr;
  *s = (F)((U)sv ^ ((q & 2u) << 30));
  *c = (F)((U)cv ^ (((q + 1u) & 2u) << 30));
}

// a b + c (kSubtract: a b - c) with one rounding, as the instruction, for where that rounding is the point: the
// compiler might fuse another product of the same sum, or compute a b once for two uses. Only the AVX2 and AVX-512
// kernels (W >= 8, with FMA) call it.
template <int W, bool kSubtract>
FASTSDF_INLINE typename Vec<W>::F fused(typename Vec<W>::F a, typename Vec<W>::F b, typename Vec<W>::F c) {
  static_assert(W >= 8, "the SSE kernel has no FMA");
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if constexpr (W == 8 && kSubtract) {
    asm("vfmsub213ps %2, %1, %0" : "+x"(a) : "x"(b), "x"(c));  // ymm0-15: no AVX-512 register
  } else if constexpr (W == 8) {
    asm("vfmadd213ps %2, %1, %0" : "+x"(a) : "x"(b), "x"(c));
  } else if constexpr (kSubtract) {
    asm("vfmsub213ps %2, %1, %0" : "+v"(a) : "v"(b), "v"(c));
  } else {
    asm("vfmadd213ps %2, %1, %0" : "+v"(a) : "v"(b), "v"(c));
  }
  return a;
#else
  return kSubtract ? a * b - c : a * b + c;
#endif
}

// sin(x) alone for |x| < kFastSineLimit, the activations' sine (inference needs no cosine): x = q pi + r, |r| <= pi/2
// (Cody-Waite with the parts of sincos_vec's pi/2 doubled, so the same exact products: q < 2^12 here), then
// sin(x) = (-1)^q (r + r^3 P(r^2)), P of degree 3 (minimax): one polynomial where sincos_vec evaluates two and
// picks. r^3 is summed from r times r^2's two parts (r^2 and its rounding error, by FMA): rounded once rather
// than twice, it keeps the sine within 8.9e-8 of float64 sin of the float argument, as sincos_vec's 9.4e-8
// (every float checked, AVX2 and AVX-512; with r^3 rounded twice, samples reached 1.2e-7). Beyond the limit
// wrong but finite or NaN as sincos_vec's, for callers to redo. The SSE kernel, without FMA, takes sincos_vec's
// sine instead.
template <int W>
FASTSDF_INLINE typename Vec<W>::F sin_vec(typename Vec<W>::F x) {
  using F = typename Vec<W>::F;
  using U = typename Vec<W>::U;
  if constexpr (W == 4) {
    F sine, cosine;
    sincos_vec<W>(x, &sine, &cosine);
    return sine;
  } else {
    const F shifter = F{} + 12582912.0f;
    const F shifted = x * 0.318309886f + shifter;
    const U q = (U)shifted;  // as in sincos_vec: the low bits of `shifted` hold q
    const F qf = shifted - shifter;
    const F r = ((x - qf * 3.140625f) - qf * 9.67502593994140625e-4f) - qf * 1.509957990978376432e-7f;
    const F r2 = r * r;
    const F r3 = fused<W, false>(r, r2, r * fused<W, true>(r, r, r2));
    const F p = -1.6666661e-1f + r2 * (8.3330842e-3f + r2 * (-1.9809956e-4f + r2 * 2.6051662e-6f));
    const F sine = r + r3 * p;
    return (F)((U)sine ^ (q << 31));
  }
}

// A sine layer's activation sin(phase) and, with kDerivative, its derivative factor omega cos(phase): the sine
// always sin_vec's, so that every path through a layer (inference alone, with the Jacobian, from a tape) gives
// the same activations and y is the same bits with the Jacobian or without; the cosine sincos_vec's.
template <int W, bool kDerivative>
FASTSDF_INLINE void activation(typename Vec<W>::F phase, float omega, typename Vec<W>::F* a,
                               typename Vec<W>::F* c) {
  *a = sin_vec<W>(phase);
  if constexpr (kDerivative) {
    typename Vec<W>::F sine, cosine;
    sincos_vec<W>(phase, &sine, &cosine);
    *c = cosine * omega;
  }
}

// Keeps, lane by lane, the largest |x| seen as the bits of the float (ordered as the magnitudes are,
// NaN above Inf): two instructions a vector, where a comparison per vector would take more.
template <int W>
FASTSDF_INLINE void track_magnitude(typename Vec<W>::F x, typename Vec<W>::U* largest) {
  using U = typename Vec<W>::U;
  const U bits = (U)x & 0x7fffffffu;
  *largest = *largest > bits ? *largest : bits;
}

// Whether a magnitude tracked by track_magnitude reaches the limit (or is NaN, which exact_sincos
// then leaves as it is).
template <int W>
FASTSDF_INLINE bool beyond_fast_range(typename Vec<W>::U largest) {
  uint32_t lanes[W], limit;
  std::memcpy(lanes, &largest, sizeof lanes);
  std::memcpy(&limit, &kFastSineLimit, sizeof limit);
  uint32_t top = 0;
  for (int l = 0; l < W; ++l) top = std::max(top, lanes[l]);
  return top >= limit;
}

// s = sin(omega z) and, unless c is null, c = omega cos(omega z) for the n values whose phase
// omega z is at or beyond kFastSineLimit (the others are left as they are): float64 sin and cos of
// the float phase, whose range reduction is exact for any argument, rounded to float (within 1 ulp).
// The rare path, out of line.
__attribute__((noinline, cold)) void exact_sincos(const float* z, int64_t n, float omega, float* s, float* c) {
  for (int64_t i = 0; i < n; ++i) {
    const float phase = z[i] * omega;
    if (!(std::fabs(phase) >= kFastSineLimit)) continue;
    s[i] = static_cast<float>(std::sin(static_cast<double>(phase)));
    if (c) c[i] = static_cast<float>(std::cos(static_cast<double>(phase))) * omega;
  }
}

// Register blocks: MR rows by 2 vectors. With AVX-512 8 x 2 zmm accumulators, otherwise 6 x 2 (16
// registers in all).
template <int W>
constexpr int kRows = W == 16 ? 8 : 6;
// Points per tile, a multiple of the block rows.
template <int W>
constexpr int64_t kTile = 8 * kRows<W>;

// acc = sum over k of A[i, k] B[k, 0:2W] for MR rows i: A[i, k] at a[i * a_row + k * a_col] (a_col
// = 1 for a row-major A, a_row = 1 to read A transposed), B row k at b + k * ldb.
template <int W>
FASTSDF_INLINE void multiply_block(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
                                   int64_t k_count, typename Vec<W>::F (&acc)[kRows<W>][2]) {
  using F = typename Vec<W>::F;
  // Summed in a local block, copied out at the end: the broadcasts read memory, and acc's could
  // be what they read for all the compiler knows, so it would store acc at every step.
  F sum[kRows<W>][2];
  for (int i = 0; i < kRows<W>; ++i) sum[i][0] = sum[i][1] = F{};
  for (int64_t k = 0; k < k_count; ++k) {
    const F b0 = load<W>(b + ldb * k), b1 = load<W>(b + ldb * k + W);
    for (int i = 0; i < kRows<W>; ++i) {
      const F ai = broadcast<W>(a + i * a_row + k * a_col);
      sum[i][0] += ai * b0;
      sum[i][1] += ai * b1;
    }
  }
  for (int i = 0; i < kRows<W>; ++i) acc[i][0] = sum[i][0], acc[i][1] = sum[i][1];
}

// A (rows x k_count, row-major, stride lda; rows a multiple of MR) times packed panels (each
// k_count x 2W): epilogue(row, column, acc) for every block.
template <int W, typename Epilogue>
FASTSDF_INLINE void multiply(const float* a, int64_t lda, int64_t rows, const float* panels, int64_t k_count,
                             int64_t n_padded, const Epilogue& epilogue) {
  constexpr int64_t kPanel = 2 * W;
  for (int64_t p = 0; p < n_padded / kPanel; ++p) {
    const float* panel = panels + p * k_count * kPanel;
    for (int64_t r = 0; r < rows; r += kRows<W>) {
      typename Vec<W>::F acc[kRows<W>][2];
      multiply_block<W>(a + r * lda, lda, 1, panel, kPanel, k_count, acc);
      epilogue(r, p * kPanel, acc);
    }
  }
}

// The sum of a vector's lanes.
template <int W>
FASTSDF_INLINE float lane_sum(typename Vec<W>::F v) {
  float lanes[W];
  std::memcpy(lanes, &v, sizeof lanes);
  float sum = 0.0f;
  for (int l = 0; l < W; ++l) sum += lanes[l];
  return sum;
}

// z = W a + b for a linear layer with fewer outputs than a vector has lanes (the SDF's 256 -> 1): per point and
// output, one dot product over vectors of the inputs, where the products over a whole panel would do 2W outputs'
// work for each real one. z goes to next and, unless null, z_out (rows of out_padded floats, the padding 0 as the
// panels give it), for `rows` points of A (stride in_padded), a multiple of the block rows.
template <int W>
FASTSDF_INLINE void linear_by_dots(const PackedNet::Layer& layer, const float* a, int64_t rows, float* next,
                                   float* z_out) {
  using F = typename Vec<W>::F;
  constexpr int64_t kPanel = 2 * W;
  const int64_t lda = layer.in_padded, ldc = layer.out_padded;
  for (int64_t r = 0; r < rows; r += kRows<W>) {
    for (int64_t j = 0; j < ldc; ++j) {
      F sum[kRows<W>][2];
      for (int i = 0; i < kRows<W>; ++i) sum[i][0] = sum[i][1] = F{};
      // W's row j, panel by panel, from the backward's copy (W in panels of the inputs, zeros beyond them).
      for (int64_t p = 0; j < layer.out && p < lda / kPanel; ++p) {
        const float* w = layer.backward.data() + (p * layer.out + j) * kPanel;
        const F w0 = load<W>(w), w1 = load<W>(w + W);
        for (int i = 0; i < kRows<W>; ++i) {
          const float* ai = a + (r + i) * lda + p * kPanel;
          sum[i][0] += load<W>(ai) * w0;
          sum[i][1] += load<W>(ai + W) * w1;
        }
      }
      for (int i = 0; i < kRows<W>; ++i) {
        const float z = lane_sum<W>(sum[i][0] + sum[i][1]) + layer.bias[j];
        next[(r + i) * ldc + j] = z;
        if (z_out) z_out[(r + i) * ldc + j] = z;
      }
    }
  }
}

// C (m_padded x n_padded, stride ldc) += A^T B, A (rows x m, stride lda) and B (rows x n, stride
// ldb) read in place: the weight gradients, summed over a tile's rows. m_padded need not be a
// multiple of the block rows: the last block ends at row m_padded - 1, overlapping the one before
// (whose rows it does not add again), rather than reading past A's last row.
template <int W>
FASTSDF_INLINE void accumulate_transposed(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t rows,
                                          int64_t m_padded, int64_t n_padded, float* c, int64_t ldc) {
  using F = typename Vec<W>::F;
  static_assert(2 * W >= kRows<W>, "a padded size (whole panels) holds at least one block of rows");
  for (int64_t col = 0; col < n_padded; col += 2 * W) {
    for (int64_t done = 0; done < m_padded; done += kRows<W>) {
      const int64_t i0 = std::min(done, m_padded - kRows<W>);
      F acc[kRows<W>][2];
      multiply_block<W>(a + i0, 1, lda, b + col, ldb, rows, acc);
      for (int64_t i = done - i0; i < kRows<W>; ++i) {
        float* row = c + (i0 + i) * ldc + col;
        store<W>(row, load<W>(row) + acc[i][0]);
        store<W>(row + W, load<W>(row + W) + acc[i][1]);
      }
    }
  }
}

// What one thread needs for one tile; row strides are the padded sizes. act[0] holds the inputs,
// act[k + 1] layer k's outputs a_k, deriv[k] its factors c_k = omega cos(omega z_k) (1 for a linear
// layer), jac[k] the Jacobian rows G_k = dy/da_k (tile points x outputs rows, jac[L - 1] = I) and
// cbar[k] what the Jacobian's adjoint adds to c_k. The rest are work buffers and, for training,
// this thread's sums of the parameter gradients.
struct Scratch {
  std::vector<std::vector<float>> act, deriv, jac, cbar, grad_w, grad_b;
  std::vector<float> x_jacobian, m, mbar, gbar, gbar_next, zbar, abar, abar_next;

  Scratch(const std::vector<PackedNet::Layer>& layers, int64_t tile, bool with_jacobian, bool training) {
    const int64_t out = layers.back().out, rows = tile * out;
    int64_t widest = layers.front().in_padded;
    act.emplace_back(tile * layers.front().in_padded, 0.0f);
    for (const PackedNet::Layer& layer : layers) {
      widest = std::max(widest, layer.out_padded);
      act.emplace_back(tile * layer.out_padded, 0.0f);
      deriv.emplace_back(tile * layer.out_padded, 1.0f);
      jac.emplace_back(with_jacobian ? rows * layer.out_padded : 0, 0.0f);
      cbar.emplace_back(with_jacobian && training ? tile * layer.out_padded : 0, 0.0f);
      grad_w.emplace_back(training ? layer.out_padded * layer.in_padded : 0, 0.0f);
      grad_b.emplace_back(training ? layer.out_padded : 0, 0.0f);
    }
    if (with_jacobian) {
      for (int64_t row = 0; row < rows; ++row) jac.back()[row * layers.back().out_padded + row % out] = 1.0f;
      x_jacobian.resize(rows * layers.front().in_padded);
      m.resize(rows * widest);
    }
    if (training) {
      for (auto* buffer : {&mbar, &gbar, &gbar_next}) buffer->resize(with_jacobian ? rows * widest : 0);
      for (auto* buffer : {&zbar, &abar, &abar_next}) buffer->resize(tile * widest);
    }
  }
};

// out[row] = rows[row] * factors[row / per_point], element by element, for rows (points x outputs)
// of `ld` floats and one row of factors per point.
FASTSDF_INLINE void scale_rows(const float* rows, const float* factors, int64_t points, int64_t per_point, int64_t ld,
                               float* out) {
  for (int64_t p = 0; p < points; ++p) {
    const float* c = factors + p * ld;
    for (int64_t o = 0; o < per_point; ++o) {
      const int64_t row = (p * per_point + o) * ld;
      for (int64_t j = 0; j < ld; ++j) out[row + j] = rows[row + j] * c[j];
    }
  }
}

// Floats a tile keeps for the backward (see forward_tile): z of every layer and, with the
// Jacobian, the rows G_k of every layer but the last (G_{L-1} = I).
int64_t tape_per_tile(const std::vector<PackedNet::Layer>& layers, int64_t tile, bool with_jacobian) {
  int64_t floats = 0;
  for (size_t k = 0; k < layers.size(); ++k) {
    floats += tile * layers[k].out_padded;
    if (with_jacobian && k + 1 < layers.size()) floats += tile * layers.back().out * layers[k].out_padded;
  }
  return floats;
}

// The tile's inputs (count points from `first`, the rest zeros) into act[0].
template <int W>
FASTSDF_INLINE void load_inputs(const std::vector<PackedNet::Layer>& layers, const float* x, int64_t first,
                                int64_t count, Scratch* s) {
  const int64_t in = layers.front().in, ld_in = layers.front().in_padded;
  float* inputs = s->act[0].data();
  std::fill(inputs, inputs + kTile<W> * ld_in, 0.0f);
  for (int64_t i = 0; i < count; ++i) std::memcpy(inputs + i * ld_in, x + (first + i) * in, sizeof(float) * in);
}

// The bias and sine of a block of products (acc): a = sin(omega z) into next and, if kDerivative,
// c = omega cos(omega z) into derivative; a linear layer's a = z. z itself goes to z_out unless null.
template <int W, bool kDerivative>
FASTSDF_INLINE void bias_sine_block(const PackedNet::Layer& layer, int64_t r, int64_t col,
                                    typename Vec<W>::F (&acc)[kRows<W>][2], float* next, float* derivative,
                                    float* z_out) {
  using F = typename Vec<W>::F;
  const int64_t ldc = layer.out_padded;
  const float* bias = layer.bias.data() + col;
  typename Vec<W>::U largest{};
  for (int i = 0; i < kRows<W>; ++i) {
    for (int h = 0; h < 2; ++h) {
      const int64_t at = (r + i) * ldc + col + h * W;
      const F z = acc[i][h] + load<W>(bias + h * W);
      if (z_out) store<W>(z_out + at, z);
      if (!layer.sine) {
        store<W>(next + at, z);
        continue;
      }
      const F phase = z * layer.omega;
      track_magnitude<W>(phase, &largest);
      F a, c;
      activation<W, kDerivative>(phase, layer.omega, &a, &c);
      store<W>(next + at, a);
      if constexpr (kDerivative) store<W>(derivative + at, c);
    }
  }
  if (!beyond_fast_range<W>(largest)) return;
  for (int i = 0; i < kRows<W>; ++i) {
    for (int h = 0; h < 2; ++h) {
      const int64_t at = (r + i) * ldc + col + h * W;
      float z[W];
      store<W>(z, acc[i][h] + load<W>(bias + h * W));
      exact_sincos(z, W, layer.omega, next + at, kDerivative ? derivative + at : nullptr);
    }
  }
}

// The tile's inputs through the network: act, deriv (if `derivatives` or with_jacobian: inference
// alone needs no c_k, which spares a cosine per activation) and, with the Jacobian, jac and
// x_jacobian (dy/d input rows). With a tape (tape_per_tile floats), the pre-activations z_k and the
// rows G_k go there too, for a backward that then need not run the network again (restore_tile).
template <int W>
FASTSDF_INLINE void forward_tile(const std::vector<PackedNet::Layer>& layers, const float* x, int64_t first,
                                 int64_t count, bool with_jacobian, bool derivatives, Scratch* s, float* tape) {
  using F = typename Vec<W>::F;
  constexpr int64_t kTileRows = kTile<W>;
  const int64_t out = layers.back().out;
  load_inputs<W>(layers, x, first, count, s);
  float* z_tape = tape;
  for (size_t k = 0; k < layers.size(); ++k) {
    const PackedNet::Layer& layer = layers[k];
    float* next = s->act[k + 1].data();
    float* derivative = s->deriv[k].data();
    float* z_out = z_tape;
    if (z_tape) z_tape += kTileRows * layer.out_padded;
    const auto epilogue = [&](auto with_derivative) {
      return [&](int64_t r, int64_t col, F (&acc)[kRows<W>][2]) {
        bias_sine_block<W, decltype(with_derivative)::value>(layer, r, col, acc, next, derivative, z_out);
      };
    };
    if (!layer.sine && layer.out < W) {
      linear_by_dots<W>(layer, s->act[k].data(), kTileRows, next, z_out);
    } else if (derivatives || with_jacobian) {
      multiply<W>(s->act[k].data(), layer.in_padded, kTileRows, layer.forward.data(), layer.in, layer.out_padded,
                  epilogue(std::true_type{}));
    } else {
      multiply<W>(s->act[k].data(), layer.in_padded, kTileRows, layer.forward.data(), layer.in, layer.out_padded,
                  epilogue(std::false_type{}));
    }
  }
  if (!with_jacobian) return;
  float* g_tape = z_tape;
  // Reverse mode over (point, output) rows: G_{k-1} = (G_k * c_k) W_k, from G_{L-1} = I down to
  // the inputs.
  const int64_t rows = kTileRows * out;
  for (size_t k = layers.size(); k-- > 0;) {
    const PackedNet::Layer& layer = layers[k];
    const int64_t ld = layer.out_padded;
    scale_rows(s->jac[k].data(), s->deriv[k].data(), kTileRows, out, ld, s->m.data());
    float* below = k > 0 ? s->jac[k - 1].data() : s->x_jacobian.data();
    multiply<W>(s->m.data(), ld, rows, layer.backward.data(), layer.out, layer.in_padded,
                [&](int64_t r, int64_t col, F (&acc)[kRows<W>][2]) {
                  for (int i = 0; i < kRows<W>; ++i)
                    for (int h = 0; h < 2; ++h) store<W>(below + (r + i) * layer.in_padded + col + h * W, acc[i][h]);
                });
  }
  if (g_tape) {
    for (size_t k = 0; k + 1 < layers.size(); ++k) {
      const int64_t size = rows * layers[k].out_padded;
      std::memcpy(g_tape, s->jac[k].data(), sizeof(float) * size);
      g_tape += size;
    }
  }
}

// What forward_tile left in the scratch, from the tape it wrote: the inputs again, a_k and c_k from
// z_k (one sine and cosine each, instead of a matrix product), and the rows G_k.
template <int W>
FASTSDF_INLINE void restore_tile(const std::vector<PackedNet::Layer>& layers, const float* x, int64_t first,
                                 int64_t count, bool with_jacobian, const float* tape, Scratch* s) {
  using F = typename Vec<W>::F;
  constexpr int64_t kTileRows = kTile<W>;
  load_inputs<W>(layers, x, first, count, s);
  for (size_t k = 0; k < layers.size(); ++k) {
    const PackedNet::Layer& layer = layers[k];
    const int64_t size = kTileRows * layer.out_padded;
    float* a = s->act[k + 1].data();
    if (!layer.sine) {
      std::memcpy(a, tape, sizeof(float) * size);
    } else {
      float* c = s->deriv[k].data();
      typename Vec<W>::U largest{};
      for (int64_t i = 0; i < size; i += W) {
        F sine, derivative;
        const F phase = load<W>(tape + i) * layer.omega;
        activation<W, true>(phase, layer.omega, &sine, &derivative);
        track_magnitude<W>(phase, &largest);
        store<W>(a + i, sine);
        store<W>(c + i, derivative);
      }
      if (beyond_fast_range<W>(largest)) exact_sincos(tape, size, layer.omega, a, c);
    }
    tape += size;
  }
  if (!with_jacobian) return;
  const int64_t rows = kTileRows * layers.back().out;
  for (size_t k = 0; k + 1 < layers.size(); ++k) {
    const int64_t size = rows * layers[k].out_padded;
    std::memcpy(s->jac[k].data(), tape, sizeof(float) * size);
    tape += size;
  }
}

// Adds the tile's contributions to the parameter gradients (this thread's sums) and writes the
// input gradient, for upstream gradients dy (tile points x out) and dj (rows x inputs, zeros in
// the columns without a Jacobian), both zero past the tile's points. forward_tile ran first.
template <int W>
FASTSDF_INLINE void backward_tile(const std::vector<PackedNet::Layer>& layers, const float* dy, const float* dj,
                                  float* dx, Scratch* s) {
  using F = typename Vec<W>::F;
  constexpr int64_t kTileRows = kTile<W>;
  const int64_t out = layers.back().out, rows = kTileRows * out;
  const int64_t count = static_cast<int64_t>(layers.size());
  auto store_block = [](float* dst, int64_t ld) {
    return [dst, ld](int64_t r, int64_t col, F (&acc)[kRows<W>][2]) {
      for (int i = 0; i < kRows<W>; ++i)
        for (int h = 0; h < 2; ++h) store<W>(dst + (r + i) * ld + col + h * W, acc[i][h]);
    };
  };
  if (dj) {
    // The Jacobian's adjoint, from the inputs up: with M_k = G_k * c_k and G_{k-1} = M_k W_k,
    // dW_k += M_k^T dG_{k-1}, dM_k = dG_{k-1} W_k^T, dG_k = dM_k * c_k, and c_k gets
    // sum over outputs of dM_k * G_k.
    std::copy(dj, dj + rows * layers.front().in_padded, s->gbar.begin());
    for (int64_t k = 0; k < count; ++k) {
      const PackedNet::Layer& layer = layers[k];
      const int64_t ld = layer.out_padded;
      const float* g = s->jac[k].data();
      const float* c = s->deriv[k].data();
      scale_rows(g, c, kTileRows, out, ld, s->m.data());
      accumulate_transposed<W>(s->m.data(), ld, s->gbar.data(), layer.in_padded, rows, ld, layer.in_padded,
                               s->grad_w[k].data(), layer.in_padded);
      multiply<W>(s->gbar.data(), layer.in_padded, rows, layer.forward.data(), layer.in, ld,
                  store_block(s->mbar.data(), ld));
      if (layer.sine) {
        float* cbar = s->cbar[k].data();
        std::fill(cbar, cbar + kTileRows * ld, 0.0f);
        for (int64_t p = 0; p < kTileRows; ++p) {
          float* sum = cbar + p * ld;
          for (int64_t o = 0; o < out; ++o) {
            const int64_t row = (p * out + o) * ld;
            for (int64_t j = 0; j < ld; ++j) sum[j] += s->mbar[row + j] * g[row + j];
          }
        }
      }
      if (k + 1 < count) {
        scale_rows(s->mbar.data(), c, kTileRows, out, ld, s->gbar_next.data());
        std::swap(s->gbar, s->gbar_next);
      }
    }
  }
  // The forward adjoint, from the output down: dz_k = da_k * c_k (minus omega^2 cbar_k * a_k from
  // the Jacobian), db_k += dz_k, dW_k += dz_k^T a_{k-1}, da_{k-1} = dz_k W_k.
  const int64_t ld_out = layers.back().out_padded;
  std::fill(s->abar.begin(), s->abar.begin() + kTileRows * ld_out, 0.0f);
  if (dy)
    for (int64_t p = 0; p < kTileRows; ++p) std::copy(dy + p * out, dy + (p + 1) * out, s->abar.begin() + p * ld_out);
  for (int64_t k = count; k-- > 0;) {
    const PackedNet::Layer& layer = layers[k];
    const int64_t ld = layer.out_padded;
    const float* c = s->deriv[k].data();
    const float* a = s->act[k + 1].data();
    const float curvature = -layer.omega * layer.omega;
    const float* abar = s->abar.data();
    float* zbar = s->zbar.data();
    if (dj && layer.sine) {
      const float* cbar = s->cbar[k].data();
      for (int64_t i = 0; i < kTileRows * ld; ++i) zbar[i] = abar[i] * c[i] + curvature * cbar[i] * a[i];
    } else {
      for (int64_t i = 0; i < kTileRows * ld; ++i) zbar[i] = abar[i] * c[i];
    }
    float* grad_b = s->grad_b[k].data();
    for (int64_t p = 0; p < kTileRows; ++p)
      for (int64_t j = 0; j < ld; ++j) grad_b[j] += s->zbar[p * ld + j];
    accumulate_transposed<W>(s->zbar.data(), ld, s->act[k].data(), layer.in_padded, kTileRows, ld, layer.in_padded,
                             s->grad_w[k].data(), layer.in_padded);
    if (k > 0 || dx) {
      multiply<W>(s->zbar.data(), ld, kTileRows, layer.backward.data(), layer.out, layer.in_padded,
                  store_block(s->abar_next.data(), layer.in_padded));
      std::swap(s->abar, s->abar_next);
    }
  }
  if (dx) std::copy(s->abar.begin(), s->abar.begin() + kTileRows * layers.front().in_padded, dx);
}

// Inference over points [first, first + count): y and, unless null, the Jacobian columns.
template <int W>
FASTSDF_INLINE void infer_tile(const std::vector<PackedNet::Layer>& layers, const float* x, int64_t first,
                               int64_t count, float* y, float* jacobian, int64_t grad_columns, Scratch* s,
                               float* tape) {
  forward_tile<W>(layers, x, first, count, jacobian != nullptr, false, s, tape);
  const int64_t in = layers.front().in, out = layers.back().out;
  const int64_t ld_out = layers.back().out_padded, ld_in = layers.front().in_padded;
  const float* result = s->act.back().data();
  for (int64_t i = 0; i < count; ++i) std::memcpy(y + (first + i) * out, result + i * ld_out, sizeof(float) * out);
  if (!jacobian) return;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t o = 0; o < out; ++o)
      std::memcpy(jacobian + ((first + i) * out + o) * grad_columns,
                  s->x_jacobian.data() + (i * out + o) * ld_in + in - grad_columns, sizeof(float) * grad_columns);
}

// Training over points [first, first + count): gradients for dy (N, out) and dj (N, out,
// grad_columns), either null, into this thread's sums and, unless null, dx (N, in); from the tile's
// tape where there is one, else running the network again.
template <int W>
FASTSDF_INLINE void train_tile(const std::vector<PackedNet::Layer>& layers, const float* x, int64_t first,
                               int64_t count, const float* dy, const float* dj, int64_t grad_columns, float* dx,
                               const float* tape, Scratch* s, std::vector<float>* staging) {
  constexpr int64_t kTileRows = kTile<W>;
  if (tape) {
    restore_tile<W>(layers, x, first, count, dj != nullptr, tape, s);
  } else {
    forward_tile<W>(layers, x, first, count, dj != nullptr, true, s, nullptr);
  }
  const int64_t in = layers.front().in, ld_in = layers.front().in_padded, out = layers.back().out;
  // Upstream gradients of the tile, zero-padded: dy rows, dj rows (columns of the Jacobian placed at
  // the end of the inputs), dx rows.
  std::vector<float>& buf = *staging;
  const int64_t dy_size = kTileRows * out, dj_size = dj ? kTileRows * out * ld_in : 0;
  buf.assign(dy_size + dj_size + (dx ? kTileRows * ld_in : 0), 0.0f);
  if (dy) std::memcpy(buf.data(), dy + first * out, sizeof(float) * count * out);
  if (dj)
    for (int64_t row = 0; row < count * out; ++row)
      std::memcpy(buf.data() + dy_size + row * ld_in + in - grad_columns, dj + (first * out + row) * grad_columns,
                  sizeof(float) * grad_columns);
  float* dx_tile = dx ? buf.data() + dy_size + dj_size : nullptr;
  backward_tile<W>(layers, dy ? buf.data() : nullptr, dj ? buf.data() + dy_size : nullptr, dx_tile, s);
  if (dx)
    for (int64_t i = 0; i < count; ++i) std::memcpy(dx + (first + i) * in, dx_tile + i * ld_in, sizeof(float) * in);
}

template <int W>
FASTSDF_INLINE void sincos_range(const float* z, int64_t n, float omega, float* s, float* c) {
  using F = typename Vec<W>::F;
  typename Vec<W>::U largest{};
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    F sine, cosine;
    const F phase = load<W>(z + i) * omega;
    sincos_vec<W>(phase, &sine, &cosine);
    track_magnitude<W>(phase, &largest);
    store<W>(s + i, sine);
    if (c) store<W>(c + i, cosine * omega);
  }
  if (i < n) {  // the tail through a zero-padded vector
    float in[W] = {}, sine[W], cosine[W];
    std::memcpy(in, z + i, sizeof(float) * (n - i));
    F vs, vc;
    const F phase = load<W>(in) * omega;
    sincos_vec<W>(phase, &vs, &vc);
    track_magnitude<W>(phase, &largest);
    store<W>(sine, vs);
    store<W>(cosine, vc * omega);
    std::memcpy(s + i, sine, sizeof(float) * (n - i));
    if (c) std::memcpy(c + i, cosine, sizeof(float) * (n - i));
  }
  if (beyond_fast_range<W>(largest)) exact_sincos(z, n, omega, s, c);
}

int thread_number() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

int64_t padded(int64_t n, int64_t panel) { return (n + panel - 1) / panel * panel; }

int64_t tile_points(int width) { return width == 16 ? kTile<16> : (width == 8 ? kTile<8> : kTile<4>); }

}  // namespace

PackedNet::PackedNet(const std::vector<LayerSpec>& layers, int width) : width_(width ? width : widest_width()) {
  if (width_ != 4 && width_ != 8 && width_ != 16) throw std::invalid_argument("siren: vector width must be 4, 8 or 16");
  if (width_ > widest_width())
    throw std::invalid_argument("siren: this CPU does not run " + std::to_string(width_) + "-float vectors");
  if (layers.size() < 2) throw std::invalid_argument("siren: a network needs at least 2 layers");
  const int64_t panel = 2 * width_;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& spec = layers[l];
    if (spec.in < 1 || spec.out < 1 || (l > 0 && spec.in != layers[l - 1].out))
      throw std::invalid_argument("siren: layer sizes do not chain");
    if (!spec.sine && l + 1 != layers.size()) throw std::invalid_argument("siren: only the last layer may be linear");
    Layer layer{spec.in, spec.out, padded(spec.in, panel), padded(spec.out, panel), spec.sine, spec.omega,
                std::vector<float>(spec.weight, spec.weight + spec.in * spec.out), {}, {}, {}};
    layer.bias.assign(layer.out_padded, 0.0f);
    if (spec.bias) std::copy(spec.bias, spec.bias + spec.out, layer.bias.begin());
    layer.forward.assign(layer.out_padded * layer.in, 0.0f);
    layer.backward.assign(layer.in_padded * layer.out, 0.0f);
    for (int64_t j = 0; j < spec.out; ++j) {
      for (int64_t k = 0; k < spec.in; ++k) {
        const float w = spec.weight[j * spec.in + k];
        layer.forward[(j / panel) * spec.in * panel + k * panel + j % panel] = w;
        layer.backward[(k / panel) * spec.out * panel + j * panel + k % panel] = w;
      }
    }
    layers_.push_back(std::move(layer));
  }
  in_ = layers.front().in;
  out_ = layers.back().out;
}

std::vector<std::pair<int64_t, int64_t>> PackedNet::layer_shapes() const {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (const Layer& layer : layers_) shapes.emplace_back(layer.out, layer.in);
  return shapes;
}

bool PackedNet::holds(const std::vector<LayerSpec>& layers) const {
  if (layers.size() != layers_.size()) return false;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerSpec& spec = layers[l];
    const Layer& layer = layers_[l];
    if (spec.in != layer.in || spec.out != layer.out || spec.sine != layer.sine ||
        (spec.sine && std::memcmp(&spec.omega, &layer.omega, sizeof(float)) != 0))
      return false;
    if (std::memcmp(spec.weight, layer.weight.data(), sizeof(float) * spec.in * spec.out) != 0) return false;
    if (spec.bias ? std::memcmp(spec.bias, layer.bias.data(), sizeof(float) * spec.out) != 0
                  : std::any_of(layer.bias.begin(), layer.bias.end(), [](float b) { return b != 0.0f; }))
      return false;
  }
  return true;
}

int64_t PackedNet::tape_floats(int64_t n, bool with_jacobian) const {
  const int64_t tile = tile_points(width_);
  return (n + tile - 1) / tile * tape_per_tile(layers_, tile, with_jacobian);
}

void PackedNet::forward(const float* x, int64_t n, float* y, float* jacobian, int64_t grad_columns,
                        float* tape) const {
  if (jacobian && (grad_columns < 1 || grad_columns > in_))
    throw std::invalid_argument("siren: grad_columns must be in [1, in_features]");
  const int64_t tile = tile_points(width_);
  const int64_t tiles = (n + tile - 1) / tile;
  const int64_t taped = tape_per_tile(layers_, tile, jacobian != nullptr);
#pragma omp parallel
  {
    Scratch scratch(layers_, tile, jacobian != nullptr, false);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t first = t * tile, count = std::min(tile, n - first);
      with_width(width_, [&](auto w) {
        infer_tile<decltype(w)::value>(layers_, x, first, count, y, jacobian, grad_columns, &scratch,
                                       tape ? tape + t * taped : nullptr);
      });
    }
  }
}

void PackedNet::backward(const float* x, int64_t n, const float* dy, const float* dj, int64_t grad_columns,
                         const std::vector<float*>& grad_weights, const std::vector<float*>& grad_biases,
                         float* dx, const float* tape) const {
  if (dj && (grad_columns < 1 || grad_columns > in_))
    throw std::invalid_argument("siren: grad_columns must be in [1, in_features]");
  if (grad_weights.size() != layers_.size() || grad_biases.size() != layers_.size())
    throw std::invalid_argument("siren: one weight and one bias gradient per layer");
  const int64_t tile = tile_points(width_);
  const int64_t tiles = (n + tile - 1) / tile;
  const int64_t taped = tape_per_tile(layers_, tile, dj != nullptr);
  // Static scheduling and a fixed order of the threads' sums keep the result the same from run to
  // run (for one number of threads).
  std::vector<std::pair<int, Scratch>> sums;
#pragma omp parallel
  {
    Scratch scratch(layers_, tile, dj != nullptr, true);
    std::vector<float> staging;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t first = t * tile, count = std::min(tile, n - first);
      with_width(width_, [&](auto w) {
        train_tile<decltype(w)::value>(layers_, x, first, count, dy, dj, grad_columns, dx,
                                       tape ? tape + t * taped : nullptr, &scratch, &staging);
      });
    }
#pragma omp critical
    sums.emplace_back(thread_number(), std::move(scratch));
  }
  for (size_t k = 0; k < layers_.size(); ++k) {
    const Layer& layer = layers_[k];
    if (grad_weights[k]) std::fill(grad_weights[k], grad_weights[k] + layer.out * layer.in, 0.0f);
    if (grad_biases[k]) std::fill(grad_biases[k], grad_biases[k] + layer.out, 0.0f);
  }
  std::sort(sums.begin(), sums.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [thread, sum] : sums) {
    for (size_t k = 0; k < layers_.size(); ++k) {
      const Layer& layer = layers_[k];
      if (grad_weights[k])
        for (int64_t j = 0; j < layer.out; ++j)
          for (int64_t i = 0; i < layer.in; ++i) grad_weights[k][j * layer.in + i] += sum.grad_w[k][j * layer.in_padded + i];
      if (grad_biases[k])
        for (int64_t j = 0; j < layer.out; ++j) grad_biases[k][j] += sum.grad_b[k][j];
    }
  }
}

void sincos(const float* z, int64_t n, float omega, float* s, float* c) {
  constexpr int64_t kChunk = 1 << 14;
  const int width = widest_width();
#pragma omp parallel for schedule(static)
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    float* cs = c ? c + start : nullptr;
    with_width(width, [&](auto w) { sincos_range<decltype(w)::value>(z + start, count, omega, s + start, cs); });
  }
}

}  // namespace fastsdf::siren
