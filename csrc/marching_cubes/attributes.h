// Per-vertex normals and values, shared by the CPU and CUDA fill passes so that both give the same
// bits. `at(i, j, k)` returns the sample at a grid point as a double.
//
// Normal: the volume's gradient in world units (central differences between grid points, one-sided
// at the ends of an axis, as numpy.gradient), interpolated along the vertex's edge with the same
// fraction as its position, normalised; it points towards values above the level. The centre
// vertex of a tunnel cube takes the sum of its edge vertices' gradients. A zero gradient stays zero.
//
// Value: scikit-image's, the largest spread (maximum minus minimum sample) over the meshed cubes
// that hold the vertex.
#pragma once

#include <cmath>
#include <cstdint>

#include "marching_cubes/cube.h"
#include "marching_cubes/marching_cubes.h"

namespace fastsdf::mc {

template <typename Sample>
FASTSDF_HD void point_gradient(const Sample& at, const int64_t shape[3], const double spacing[3], int64_t i,
                               int64_t j, int64_t k, double g[3]) {
  const int64_t p[3] = {i, j, k};
  for (int d = 0; d < 3; ++d) {
    int64_t lo[3] = {i, j, k}, hi[3] = {i, j, k};
    if (p[d] > 0) --lo[d];
    if (p[d] + 1 < shape[d]) ++hi[d];
    const double step = FASTSDF_MUL_RN(static_cast<double>(hi[d] - lo[d]), spacing[d]);
    g[d] = FASTSDF_ADD_RN(at(hi[0], hi[1], hi[2]), -at(lo[0], lo[1], lo[2])) / step;
  }
}

// Gradient at fraction t of the edge from point p along `axis`.
template <typename Sample>
FASTSDF_HD void edge_gradient(const Sample& at, const int64_t shape[3], const double spacing[3], const int64_t p[3],
                              int axis, double t, double g[3]) {
  double g0[3], g1[3];
  point_gradient(at, shape, spacing, p[0], p[1], p[2], g0);
  point_gradient(at, shape, spacing, p[0] + (axis == 0), p[1] + (axis == 1), p[2] + (axis == 2), g1);
  for (int d = 0; d < 3; ++d) g[d] = FASTSDF_ADD_RN(g0[d], FASTSDF_MUL_RN(t, FASTSDF_ADD_RN(g1[d], -g0[d])));
}

FASTSDF_HD void store_unit(const double g[3], float out[3]) {
  const double norm2 = FASTSDF_ADD_RN(FASTSDF_ADD_RN(FASTSDF_MUL_RN(g[0], g[0]), FASTSDF_MUL_RN(g[1], g[1])),
                                      FASTSDF_MUL_RN(g[2], g[2]));
  const double norm = sqrt(norm2);
  for (int d = 0; d < 3; ++d) out[d] = norm > 0.0 ? static_cast<float>(g[d] / norm) : 0.0f;
}

// Maximum minus minimum of a cube's eight samples, each taken relative to the level as
// scikit-image does.
FASTSDF_HD double cube_spread(const double corner[8], double level) {
  double lo = corner[0] - level, hi = lo;
  for (int c = 1; c < 8; ++c) {
    const double r = corner[c] - level;
    lo = r < lo ? r : lo;
    hi = r > hi ? r : hi;
  }
  return hi - lo;
}

template <typename Sample>
FASTSDF_HD void cube_samples(const Sample& at, int64_t i, int64_t j, int64_t k, double corner[8]) {
  for (int c = 0; c < 8; ++c) corner[c] = at(i + corner_offset(c, 0), j + corner_offset(c, 1), k + corner_offset(c, 2));
}

// The value of the vertex on the (crossed) edge from point p along `axis`: the largest spread of the
// up to four meshed cubes around the edge.
template <typename Sample>
FASTSDF_HD float edge_value(const Sample& at, const Grid& g, const int64_t p[3], int axis, double level) {
  const int b = (axis + 1) % 3, c = (axis + 2) % 3;
  double best = 0.0;
  for (int n = 0; n < 4; ++n) {
    int64_t q[3] = {p[0], p[1], p[2]};
    q[b] -= n & 1;
    q[c] -= n >> 1;
    if (q[b] < 0 || q[c] < 0 || q[b] + 1 >= g.shape[b] || q[c] + 1 >= g.shape[c]) continue;
    if (!g.mask.keeps(q[0], q[1], q[2])) continue;
    double corner[8];
    cube_samples(at, q[0], q[1], q[2], corner);
    const double spread = cube_spread(corner, level);
    best = spread > best ? spread : best;
  }
  return static_cast<float>(best);
}

// The normal of the centre vertex of cube `cube`, whose loop runs through the edges in `edges` (a
// bit per edge); `corner` holds the cube's samples.
template <typename Sample>
FASTSDF_HD void centre_normal(const Sample& at, const int64_t shape[3], const double spacing[3], const int64_t cube[3],
                              int edges, const double corner[8], double level, float out[3]) {
  double sum[3] = {0.0, 0.0, 0.0};
  for (int e = 0; e < kNumEdges; ++e) {
    if (!((edges >> e) & 1)) continue;
    const int c0 = edge_start_corner(e), axis = edge_axis(e);
    const int64_t p[3] = {cube[0] + corner_offset(c0, 0), cube[1] + corner_offset(c0, 1), cube[2] + corner_offset(c0, 2)};
    double g[3];
    edge_gradient(at, shape, spacing, p, axis, edge_fraction(corner[c0], corner[c0 | (1 << axis)], level), g);
    for (int d = 0; d < 3; ++d) sum[d] = FASTSDF_ADD_RN(sum[d], g[d]);
  }
  store_unit(sum, out);
}

}  // namespace fastsdf::mc
