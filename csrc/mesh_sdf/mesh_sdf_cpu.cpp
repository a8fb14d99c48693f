// The CPU (OpenMP) queries, over the BVH that bvh_build.cpp builds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/cpu_isa.h"
#include "mesh_sdf/mesh_sdf.h"
#include "mesh_sdf/query.h"

namespace fastsdf::msdf {
namespace {

// Spreads the low 10 bits of x to every third bit.
uint32_t spread_bits(uint32_t x) {
  x &= 0x3ff;
  x = (x | x << 16) & 0x030000ff;
  x = (x | x << 8) & 0x0300f00f;
  x = (x | x << 4) & 0x030c30c3;
  x = (x | x << 2) & 0x09249249;
  return x;
}

// The points in Morton (Z curve) order over their bounding box, 10 bits per axis: points close in
// this order are close in space, so each query starts from a good bound (the previous point's
// closest triangle) and finds the tree already in cache. Radix sort, 3 passes of 10 bits.
template <typename P>
std::vector<uint32_t> morton_order(const P* points, int64_t n) {
  double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
  for (int64_t i = 0; i < n; ++i) {
    for (int d = 0; d < 3; ++d) {
      lo[d] = std::min(lo[d], static_cast<double>(points[3 * i + d]));
      hi[d] = std::max(hi[d], static_cast<double>(points[3 * i + d]));
    }
  }
  // (In halves, so that extents up to twice the largest float64 do not overflow.)
  double cell[3];
  for (int d = 0; d < 3; ++d) cell[d] = hi[d] > lo[d] ? 1023.0 / (0.5 * hi[d] - 0.5 * lo[d]) : 0.0;
  std::vector<uint32_t> key(static_cast<size_t>(n)), index(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t k = 0;
    for (int d = 0; d < 3; ++d) {
      const double x = (0.5 * static_cast<double>(points[3 * i + d]) - 0.5 * lo[d]) * cell[d];
      k |= spread_bits(static_cast<uint32_t>(std::min(x, 1023.0))) << d;
    }
    key[i] = k;
    index[i] = static_cast<uint32_t>(i);
  }
  std::vector<uint32_t> key2(key.size()), index2(index.size());
  for (int shift = 0; shift < 30; shift += 10) {
    std::vector<int64_t> start(1025, 0);
    for (uint32_t k : key) ++start[((k >> shift) & 1023) + 1];
    for (int b = 0; b < 1024; ++b) start[b + 1] += start[b];
    for (int64_t i = 0; i < n; ++i) {
      const int64_t to = start[(key[i] >> shift) & 1023]++;
      key2[to] = key[i];
      index2[to] = index[i];
    }
    key.swap(key2);
    index.swap(index2);
  }
  return index;
}

// Runs point(i, previous) -> Neighbour over order[begin:end] (begin:end without an order), each
// point handing the next what it found (query.h). In Morton order the points and their outputs lie
// all over memory: each is fetched while the query a few points earlier runs.
template <typename P, typename Fn>
void run(const uint32_t* order, int64_t begin, int64_t end, const P* points, double* out, const Fn& point) {
  constexpr int64_t kAhead = 4;
  Neighbour previous;
  for (int64_t j = begin; j < end; ++j) {
    if (order && j + kAhead < end) {
      const int64_t next = order[j + kAhead];
      __builtin_prefetch(points + 3 * next);
      __builtin_prefetch(out + next, 1);
    }
    previous = point(order ? int64_t{order[j]} : j, previous);
  }
}

// Runs point(i, previous) -> Neighbour over all points, in Morton order (when there are more than a
// run of them), in runs of consecutive points that hand each other what they found; out[i] is the
// first output the point writes.
template <typename P, typename Fn>
void for_each_in_space_order(const P* points, int64_t n, double* out, const Fn& point) {
  constexpr int64_t kRun = 256;
  const std::vector<uint32_t> order =
      n > kRun && n <= int64_t{UINT32_MAX} ? morton_order(points, n) : std::vector<uint32_t>{};
  const uint32_t* sorted = order.empty() ? nullptr : order.data();
  // Compiled for AVX2 and FMA where the CPU has them, 15-25% faster; AVX-512 would not widen the
  // 4-float vectors of lanes.h.
  const int width = widest_width();
  const int64_t runs = (n + kRun - 1) / kRun;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t begin = r * kRun, end = std::min(n, begin + kRun);
    with_width<8>(width, [&](auto) { run(sorted, begin, end, points, out, point); });
  }
}

}  // namespace

template <typename P>
void query_cpu(const MeshView& mesh, const int64_t* order, const P* points, int64_t n, Sign sign, double beta,
               const QueryOut& out) {
  for_each_in_space_order(points, n, out.distance, [&](int64_t i, const Neighbour& previous) {
    return query_point(mesh, order, points, i, sign, beta, out, previous);
  });
}

template <typename P>
void winding_cpu(const MeshView& mesh, const P* points, int64_t n, bool exact, double beta, double* out) {
  for_each_in_space_order(points, n, out, [&](int64_t i, const Neighbour&) {
    out[i] = winding_point(mesh, points, i, exact, beta);
    return Neighbour{};
  });
}

template void query_cpu<float>(const MeshView&, const int64_t*, const float*, int64_t, Sign, double, const QueryOut&);
template void query_cpu<double>(const MeshView&, const int64_t*, const double*, int64_t, Sign, double, const QueryOut&);
template void winding_cpu<float>(const MeshView&, const float*, int64_t, bool, double, double*);
template void winding_cpu<double>(const MeshView&, const double*, int64_t, bool, double, double*);

}  // namespace fastsdf::msdf
