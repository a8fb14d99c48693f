// A triangle BVH in flat arrays and its queries (closest point, winding numbers, pseudonormal
// signs), written once for the CPU and CUDA kernels.
//
// Layout, for num_nodes nodes in depth-first order (a node's left child follows it) and the
// triangles in leaf order:
//   node_box      (nodes, 6)  float64  bounding box lo xyz, hi xyz
//   node_link     (nodes, 3)  int32    [right child | first triangle, triangles if leaf else 0,
//                                       triangles below the node]
//   node_dipole   (nodes, 16) float64  area-weighted centroid c xyz, area-weighted normal sum N xyz,
//                                       radius of the ball around c holding the triangles, and the
//                                       first moment M = sum (centroid_t - c) outer (area normal_t),
//                                       row-major 3x3
//   closing_start (nodes + 1) int64    the node's boundary edges are closing_edges[start:end]
//   closing_edges (edges, 6)  float64  directed boundary edges (from xyz, to xyz) of each node
//   triangles     (tris, 9)   float64  vertex positions, leaf order
//   distance_only (tris,)     uint8    1 for triangles that count for distances but not for signs:
//                                       zero-area ones (taken as their edges) and repeated ones
//   pseudonormal  (tris, 21)  float64  face normal, edge k normals, vertex k normals (Feature order)
#pragma once

#include <cstdint>

#include "mesh_sdf/geometry.h"

namespace fastsdf::msdf {

constexpr int kStackSize = 64;

struct MeshView {
  int64_t num_nodes;
  int64_t num_triangles;
  const double* node_box;
  const int32_t* node_link;
  const double* node_dipole;
  const int64_t* closing_start;
  const double* closing_edges;
  const double* triangles;
  const uint8_t* distance_only;
  const double* pseudonormal;
};

struct Closest {
  double distance2;
  int64_t triangle;  // leaf-order slot
  TrianglePoint at;
};

FASTSDF_HD void triangle_vertices(const MeshView& m, int64_t t, Vec3* a, Vec3* b, Vec3* c) {
  const double* v = m.triangles + 9 * t;
  *a = load3(v);
  *b = load3(v + 3);
  *c = load3(v + 6);
}

// The closest point on the mesh: nearest-child-first descent, pruning boxes farther than the best
// so far. At equal distance a triangle with a sign wins over a distance-only one, so that the sign
// can be read off its pseudonormal.
FASTSDF_HD Closest closest_point(const MeshView& m, Vec3 q) {
  Closest best{INFINITY, -1, {}};
  bool best_distance_only = true;
  // Each entry keeps the node's box distance, computed once when its parent was opened.
  int32_t stack[kStackSize];
  double bound[kStackSize];
  int top = 0;
  stack[top] = 0;
  bound[top++] = box_distance2(q, m.node_box);
  while (top > 0) {
    --top;
    if (bound[top] > best.distance2) continue;
    const int32_t node = stack[top];
    const int32_t* link = m.node_link + 3 * node;
    if (link[1] > 0) {
      for (int64_t t = link[0]; t < link[0] + link[1]; ++t) {
        Vec3 a, b, c;
        triangle_vertices(m, t, &a, &b, &c);
        const bool distance_only = m.distance_only[t] != 0;
        const TrianglePoint p = closest_on_triangle(q, a, b, c, distance_only);
        const double d2 = dot(q - p.point, q - p.point);
        if (d2 < best.distance2 || (d2 == best.distance2 && best_distance_only && !distance_only)) {
          best = {d2, t, p};
          best_distance_only = distance_only;
        }
      }
      continue;
    }
    const int32_t left = node + 1, right = link[0];
    const double dl = box_distance2(q, m.node_box + 6 * left), dr = box_distance2(q, m.node_box + 6 * right);
    // The nearer child goes on top, to be searched first.
    const bool left_first = dl <= dr;
    stack[top] = left_first ? right : left;
    bound[top++] = left_first ? dr : dl;
    stack[top] = left_first ? left : right;
    bound[top++] = left_first ? dl : dr;
  }
  return best;
}

FASTSDF_HD double leaf_winding(const MeshView& m, const int32_t* link, Vec3 q) {
  double w = 0.0;
  for (int64_t t = link[0]; t < link[0] + link[1]; ++t) {
    if (m.distance_only[t]) continue;
    Vec3 a, b, c;
    triangle_vertices(m, t, &a, &b, &c);
    w += solid_angle_fraction(q, a, b, c);
  }
  return w;
}

FASTSDF_HD bool outside_box(Vec3 q, const double* box) {
  return q.x < box[0] || q.y < box[1] || q.z < box[2] || q.x > box[3] || q.y > box[4] || q.z > box[5];
}

// Sums the winding number over the tree: `far(m, node, q, &w)` may account for a whole node at
// once (returning true); otherwise the node is opened, down to exact solid angles at the leaves.
template <typename Far>
FASTSDF_HD double winding_sum(const MeshView& m, Vec3 q, const Far& far) {
  double w = 0.0;
  int32_t stack[kStackSize];
  int top = 0;
  stack[top++] = 0;
  while (top > 0) {
    const int32_t node = stack[--top];
    if (far(m, node, q, &w)) continue;
    const int32_t* link = m.node_link + 3 * node;
    if (link[1] > 0) {
      w += leaf_winding(m, link, q);
      continue;
    }
    stack[top++] = link[0];
    stack[top++] = node + 1;
  }
  return w;
}

// Exact generalised winding number (Jacobson et al. 2013). Seen from outside a node's box, the
// node's triangles wind exactly like the fan that closes their boundary edges from the box centre
// (the two together form a closed surface inside the box, which winds zero times around q), so a
// node with fewer boundary edges than triangles is replaced by that fan.
struct ClosingFan {
  FASTSDF_HD bool operator()(const MeshView& m, int32_t node, Vec3 q, double* w) const {
    const double* box = m.node_box + 6 * node;
    const int64_t first = m.closing_start[node], last = m.closing_start[node + 1];
    if (last - first >= m.node_link[3 * node + 2] || !outside_box(q, box)) return false;
    const Vec3 apex{0.5 * (box[0] + box[3]), 0.5 * (box[1] + box[4]), 0.5 * (box[2] + box[5])};
    for (int64_t e = first; e < last; ++e) {
      const double* edge = m.closing_edges + 6 * e;
      *w += solid_angle_fraction(q, load3(edge), load3(edge + 3), apex);
    }
    return true;
  }
};

// Fast winding number (Barill et al. 2018) to second order: a node whose ball lies far enough away
// (distance above beta times its radius) counts as the Taylor expansion of its integral about its
// centroid, with r = c - q: (r.N / |r|^3 + tr(M) / |r|^3 - 3 r.M.r / |r|^5) / (4 pi).
struct Dipole {
  double beta;
  FASTSDF_HD bool operator()(const MeshView& m, int32_t node, Vec3 q, double* w) const {
    const double* dip = m.node_dipole + 16 * node;
    const Vec3 r = load3(dip) - q;
    const double r2 = dot(r, r);
    if (r2 <= beta * beta * dip[6] * dip[6]) return false;
    const double* mo = dip + 7;
    const Vec3 mr{mo[0] * r.x + mo[1] * r.y + mo[2] * r.z, mo[3] * r.x + mo[4] * r.y + mo[5] * r.z,
                  mo[6] * r.x + mo[7] * r.y + mo[8] * r.z};
    const double trace = mo[0] + mo[4] + mo[8];
    const double inv3 = 1.0 / (r2 * sqrt(r2));
    *w += (dot(r, load3(dip + 3)) + trace - 3.0 * dot(r, mr) / r2) * inv3 / (4.0 * 3.14159265358979323846);
    return true;
  }
};

FASTSDF_HD double exact_winding(const MeshView& m, Vec3 q) { return winding_sum(m, q, ClosingFan{}); }

FASTSDF_HD double fast_winding(const MeshView& m, Vec3 q, double beta) { return winding_sum(m, q, Dipole{beta}); }

// +1 outside, -1 inside, from the angle-weighted pseudonormal of the closest feature (Baerentzen
// and Aanaes 2005); exact for closed manifold meshes.
FASTSDF_HD double pseudonormal_sign(const MeshView& m, Vec3 q, const Closest& c) {
  const Vec3 n = load3(m.pseudonormal + 21 * c.triangle + 3 * c.at.feature);
  return dot(q - c.at.point, n) < 0.0 ? -1.0 : 1.0;
}

}  // namespace fastsdf::msdf
