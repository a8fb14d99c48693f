// Geometry of one marching-cubes cell, shared by the CPU and CUDA kernels and by the table builder.
//
// Corner c sits at offset (c & 1, c >> 1 & 1, c >> 2 & 1) along axes (0, 1, 2); its bit in the cube
// index is set when the sample there is strictly above the level (scikit-image's convention).
// Edge e = 4 * axis + n runs along `axis` from the n-th corner, in increasing order, whose `axis` bit is
// 0. Face f = 2 * axis + side holds the corners whose `axis` bit equals `side`.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/macros.h"

namespace fastsdf::mc {

constexpr int kNumEdges = 12;
constexpr int kNumFaces = 6;
// In triangle tables, this "edge" stands for the cube's centre vertex (see tables.h).
constexpr int kCentre = kNumEdges;
// A loop of k edge vertices becomes k - 2 triangles, or k around a centre vertex (at most one loop
// per cube needs one), with at most 12 edge vertices per cube.
constexpr int kMaxTriangles = 12;
// Table key: cube index (8 bits) + one "above corners connected" bit per ambiguous face (6 bits).
constexpr int kNumKeys = 256 << kNumFaces;
// The tables as one flat byte buffer, for the device: triangle counts per key, ambiguous-face
// masks per cube index, centre-vertex edge masks per key (uint16, little-endian), then
// 3 * kMaxTriangles edges per key.
constexpr int kFlatAmbiguous = kNumKeys;
constexpr int kFlatCentre = kFlatAmbiguous + 256;
constexpr int kFlatEdges = kFlatCentre + 2 * kNumKeys;
constexpr int kFlatBytes = kFlatEdges + kNumKeys * 3 * kMaxTriangles;

// The largest T not above `level`, so that `v > threshold` is exactly `double(v) > level`.
template <typename T>
T threshold_for(double level) {
  T t = static_cast<T>(level);
  if (static_cast<double>(t) > level) t = std::nextafter(t, -std::numeric_limits<T>::infinity());
  return t;
}

FASTSDF_HD int edge_axis(int e) { return e >> 2; }

FASTSDF_HD int edge_start_corner(int e) {
  const int axis = e >> 2, n = e & 3;
  const int low = n & ((1 << axis) - 1);
  const int high = (n >> axis) << (axis + 1);
  return high | low;
}

FASTSDF_HD int corner_offset(int c, int axis) { return (c >> axis) & 1; }

// The m-th corner (m = 0..3) of face f, counter-clockwise as seen from outside the cube.
FASTSDF_HD int face_corner(int f, int m) {
  const int axis = f >> 1, side = f & 1;
  const int b = (axis + 1) % 3, c = (axis + 2) % 3;
  // (u, v) along (b, c): counter-clockwise about +axis is (0,0) (1,0) (1,1) (0,1); reversed for -axis.
  int u = (m == 1 || m == 2) ? 1 : 0;
  int v = (m >= 2) ? 1 : 0;
  if (side == 0) {
    const int t = u;
    u = v;
    v = t;
  }
  return (side << axis) | (u << b) | (v << c);
}

// Asymptotic decider on an ambiguous face (two diagonal corners above the level, two below): the
// above corners are joined through the face when the bilinear saddle lies above the level, which
// reduces to comparing the products of the two diagonals. Products of the same two numbers are
// bit-identical in either order, so both cubes sharing the face reach the same decision.
FASTSDF_HD bool above_corners_connected(double above_a, double above_b, double below_a, double below_b) {
  return FASTSDF_MUL_RN(above_a, above_b) > FASTSDF_MUL_RN(below_a, below_b);
}

// Face bits of the table key for one cube: `rel` holds the eight corner values minus the level.
FASTSDF_HD int face_bits(int cube, int ambiguous, const double rel[8]) {
  int bits = 0;
  for (int f = 0; f < kNumFaces; ++f) {
    if (!((ambiguous >> f) & 1)) continue;
    const int q0 = face_corner(f, 0), q1 = face_corner(f, 1);
    const int q2 = face_corner(f, 2), q3 = face_corner(f, 3);
    const bool q0_above = (cube >> q0) & 1;
    const bool connected = q0_above ? above_corners_connected(rel[q0], rel[q2], rel[q1], rel[q3])
                                    : above_corners_connected(rel[q1], rel[q3], rel[q0], rel[q2]);
    if (connected) bits |= 1 << f;
  }
  return bits;
}

// Where along an edge from sample v0 to sample v1 the linear interpolant meets the level.
FASTSDF_HD double edge_fraction(double v0, double v1, double level) { return (level - v0) / (v1 - v0); }

// World position (float64) of the vertex on the edge from grid point `index` along `axis`, between
// samples v0 (at the point) and v1.
FASTSDF_HD void edge_point(const int64_t index[3], int axis, double v0, double v1, double level,
                           const int64_t index_offset[3], const double origin[3], const double spacing[3],
                           double out[3]) {
  const double t = edge_fraction(v0, v1, level);
  for (int d = 0; d < 3; ++d) {
    double pos = static_cast<double>(index[d] + index_offset[d]);
    if (d == axis) pos = FASTSDF_ADD_RN(pos, t);
    out[d] = FASTSDF_ADD_RN(origin[d], FASTSDF_MUL_RN(pos, spacing[d]));
  }
}

// The centre vertex of cube (i, j, k): the mean of the edge vertices in `edges` (a bit per edge),
// summed in edge order. `corner` holds the cube's eight samples.
FASTSDF_HD void centre_point(const int64_t cube[3], int edges, const double corner[8], double level,
                             const int64_t index_offset[3], const double origin[3], const double spacing[3],
                             float out[3]) {
  double sum[3] = {0.0, 0.0, 0.0};
  int n = 0;
  for (int e = 0; e < kNumEdges; ++e) {
    if (!((edges >> e) & 1)) continue;
    const int c0 = edge_start_corner(e), axis = edge_axis(e);
    const int64_t index[3] = {cube[0] + corner_offset(c0, 0), cube[1] + corner_offset(c0, 1),
                              cube[2] + corner_offset(c0, 2)};
    double p[3];
    edge_point(index, axis, corner[c0], corner[c0 | (1 << axis)], level, index_offset, origin, spacing, p);
    for (int d = 0; d < 3; ++d) sum[d] = FASTSDF_ADD_RN(sum[d], p[d]);
    ++n;
  }
  for (int d = 0; d < 3; ++d) out[d] = static_cast<float>(sum[d] / n);
}

}  // namespace fastsdf::mc
