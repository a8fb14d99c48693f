// A 4-wide triangle BVH in flat arrays and its queries (closest point, winding numbers, pseudonormal
// signs), written once for the CPU and CUDA kernels.
//
// Each node holds the data of its (up to) kWidth children side by side, one lane per child, so that
// a query tests all of them in one pass of straight-line code (SIMD on the CPU). A child is an inner
// node or a leaf of up to kWidth triangles, which fill one *pack*: kWidth consecutive triangle slots.
// The float32 data (boxes, dipoles, packs) is in *local* coordinates, (x - origin) / scale, which
// put the mesh inside [-1, 1]^3 whatever its units; the float64 data is in the mesh's coordinates.
//
// Layout, for num_nodes nodes (node 0 the root) and num_slots = kWidth * packs triangle slots:
//   node_box      (nodes, 11, 4) float32  child bounds, rounded outwards: the box, rows lo xyz, hi
//                                          xyz, and a slab, rows unit normal n xyz, lo, hi (the
//                                          triangles lie where lo <= n.x <= hi; n is their mean
//                                          normal, so the slab is thin where they are nearly flat,
//                                          while boxes are loose around tilted patches); an empty
//                                          lane has lo = +inf, hi = -inf, n = 0
//   node_link     (nodes, 3, 4)  int32    rows first, count, size: an inner child has count 0 and
//                                          first its node; a leaf has count 1..4 triangles from slot
//                                          first (a multiple of 4); size counts the triangles below
//                                          the child, 0 for an empty lane
//   node_dipole   (nodes, 16, 4) float32  rows: area-weighted centroid c xyz, area-weighted normal
//                                          sum N xyz, radius of the ball around c holding the
//                                          triangles, first moment M = sum (centroid_t - c) outer
//                                          (area normal_t), row-major 3x3
//   closing_start (nodes * 4 + 1) int64   child k of node n has the boundary edges
//                                          closing_edges[closing_start[4n + k] : closing_start[4n + k + 1]]
//   closing_edges (edges, 6)     float64  directed boundary edges (from xyz, to xyz)
//   packs         (slots / 4, 28, 4) float32  rows: corner a xyz; edges e0 = b - a, e1 = c - b,
//                                          e2 = a - c, xyz each; 1 / |e_k|^2 (0 for a zero edge);
//                                          n x e_k, xyz each; unit normal n xyz; sign weight
//   triangles     (slots, 9)     float64  vertex positions
//   distance_only (slots,)       uint8    0 for triangles that count for signs too; 1 for those that
//                                          count for distances only (repeated ones, ones too small for
//                                          float64 normals); 2 for zero-area ones, which count for
//                                          distances only, as their three edges. Both have normal and
//                                          sign weight 0
//   pseudonormal  (slots, 21)    float64  face normal, edge k normals, vertex k normals (Feature order)
//   boundary      (groups, 5, 4) float32  the mesh boundary (the sign triangles' edges that do not
//                                          cancel), kWidth edges a group: midpoint xyz, half length,
//                                          length; padding lanes have midpoint +inf and length 0
//   frame         (5,)           float64  origin xyz, scale, exponent: MeshView's scalars
// Slots past a leaf's count are padding: zeros, never read as triangles. Slot 0 holds a triangle.
//
// Two frames keep every finite input in range. *Mesh units* are the caller's coordinates times
// 2^-exponent (exact: a power of two), which put the largest |vertex coordinate| in [1, 2), so
// that no product of a few coordinates (squared distances, cross products, solid angles) overflows
// or underflows float64 whatever the caller's units; all float64 data is in mesh units, and query
// points are taken into them one by one (query.h). Local coordinates, for the float32 data, are
// relative to the mesh's bounding box.
#pragma once

#include <cstdint>

#include "mesh_sdf/geometry.h"
#include "mesh_sdf/lanes.h"

namespace fastsdf::msdf {

constexpr int kWidth = kLanes;
// build_bvh makes trees at most kMaxDepth nodes deep; a traversal keeps at most kWidth - 1 entries
// per level beside the one it descends into, so its stack never overflows.
constexpr int kMaxDepth = 32;
constexpr int kStackSize = (kWidth - 1) * kMaxDepth + 1;
constexpr int kBoxRows = 11;
constexpr int kPackRows = 28;
constexpr uint8_t kAsEdges = 2;  // distance_only's value for zero-area triangles

struct MeshView {
  int64_t num_nodes;
  int64_t num_slots;
  const float* node_box;
  const int32_t* node_link;
  const float* node_dipole;
  const int64_t* closing_start;
  const double* closing_edges;
  const float* packs;
  const double* triangles;
  const uint8_t* distance_only;
  const double* pseudonormal;
  const float* boundary;
  int64_t boundary_groups;
  double origin[3];
  double scale;  // local = (x - origin) / scale, x in mesh units
  // Mesh units are the caller's coordinates times to_mesh = 2^-exponent; points whose largest
  // |coordinate| reaches pull_in (2^(exponent + kPullIn), +inf where beyond float64) are pulled in
  // towards the origin first (query.h's mesh_point).
  int exponent;
  double to_mesh, from_mesh, pull_in;
};

// Query points farther than 2^kPullIn mesh units are pulled in to that distance (query.h): every
// product of their coordinates then fits float64, and their float32 local coordinates (at most
// 2^(kPullIn + 1) over the scale, which build_bvh keeps at least 2^-60) fit float32.
constexpr int kPullIn = 40;

struct Closest {
  double distance2;
  int64_t triangle;  // slot
  TrianglePoint at;
};

// A query point in local coordinates, and how far the float32 distances to it may be off: float
// tests accept anything within `tol` of the float64 bound, so they never drop what float64 keeps.
struct LocalPoint {
  float p[3];
  float reach;  // the largest |coordinate|: 1 is the mesh's bounding box
  float tol;
};

FASTSDF_HD LocalPoint local_point(const MeshView& m, Vec3 q) {
  LocalPoint l;
  const double inv = 1.0 / m.scale;
  l.p[0] = static_cast<float>((q.x - m.origin[0]) * inv);
  l.p[1] = static_cast<float>((q.y - m.origin[1]) * inv);
  l.p[2] = static_cast<float>((q.z - m.origin[2]) * inv);
  const float x = fabsf(l.p[0]), y = fabsf(l.p[1]), z = fabsf(l.p[2]);
  l.reach = x > y ? (x > z ? x : z) : (y > z ? y : z);
  // A few float32 roundings of numbers up to 1 + reach, with a wide margin (2^-18 = 64 ulp of 1).
  l.tol = (1.0f + l.reach) * (1.0f / 262144.0f);
  return l;
}

// Past this many mesh sizes away the winding number is below 1e-30 of the mesh's area, and the
// products in solid angles overflow (float32 squares, float64 cubes further out): it is 0 there.
constexpr float kWindingReach = 1e15f;

// Squared lower bounds on the distances from p to the kWidth children of a node (+inf for empty
// lanes): to their boxes, or their slabs where farther.
FASTSDF_HD F4 child_distance2(const float* box, const float* p) {
  F4 d2 = splat(0.0f), offset = splat(0.0f);
  for (int a = 0; a < 3; ++a) {
    const F4 pa = splat(p[a]);
    const F4 d = vmax(vmax(load4(box + a * kWidth) - pa, pa - load4(box + (3 + a) * kWidth)), splat(0.0f));
    d2 = d2 + d * d;
    offset = offset + load4(box + (6 + a) * kWidth) * pa;
  }
  const F4 across = vmax(vmax(load4(box + 9 * kWidth) - offset, offset - load4(box + 10 * kWidth)), splat(0.0f));
  return vmax(d2, across * across);
}

// Squared distances from p to the triangles of a pack in float32, as filters for the float64 test:
// each is at most the true distance plus a few roundings (see local_point). The closest point is on
// an edge, or inside when p projects into the triangle; the edge distances are well conditioned
// however thin the triangle, and the unit normal and edge data made in float64 keep the distance to
// the plane and the inside test so too. A degenerate triangle has a zero normal and gets 0: the
// float64 test decides.
FASTSDF_HD F4 pack_distance2(const float* pack, const float* p) {
  F4 w0[3], w[3], e[3], m[3];
  for (int a = 0; a < 3; ++a) w0[a] = w[a] = splat(p[a]) - load4(pack + a * kWidth);
  F4 edge2 = splat(INFINITY);
  M4 inside = splat(0.0f) >= splat(0.0f);  // every lane
  for (int i = 0; i < 3; ++i) {  // edge i from corner i, with w = p - corner i
    for (int a = 0; a < 3; ++a) {
      e[a] = load4(pack + (3 + 3 * i + a) * kWidth);
      m[a] = load4(pack + (15 + 3 * i + a) * kWidth);
    }
    const F4 t = vmin(vmax(dot3(w, e) * load4(pack + (12 + i) * kWidth), splat(0.0f)), splat(1.0f));
    const F4 r[3] = {w[0] - t * e[0], w[1] - t * e[1], w[2] - t * e[2]};
    edge2 = vmin(edge2, dot3(r, r));
    inside = inside & (dot3(w, m) >= splat(0.0f));  // (e x w) . n = w . (n x e)
    for (int a = 0; a < 3; ++a) w[a] = w[a] - e[a];
  }
  F4 n[3];
  for (int a = 0; a < 3; ++a) n[a] = load4(pack + (24 + a) * kWidth);
  const F4 plane = dot3(w0, n);
  return select(inside, vmin(edge2, plane * plane), edge2);
}

FASTSDF_HD void triangle_vertices(const MeshView& m, int64_t t, Vec3* a, Vec3* b, Vec3* c) {
  const double* v = m.triangles + 9 * t;
  *a = load3(v);
  *b = load3(v + 3);
  *c = load3(v + 6);
}

// Which children of a node are leaves and which inner nodes, as bit sets (empty lanes in neither).
struct Children {
  int leaves, inner;
};

FASTSDF_HD Children children(const int32_t* link) {
  Children c{0, 0};
  for (int k = 0; k < kWidth; ++k) {
    c.leaves |= (link[kWidth + k] > 0) << k;
    c.inner |= (link[kWidth + k] == 0 && link[2 * kWidth + k] > 0) << k;
  }
  return c;
}

// The closest point on the mesh, in float64: descent through the children whose box lies within
// reach of the best triangle so far, float32 filters in front of the float64 triangle test. The
// result is the least (squared distance, distance-only, slot) over all triangles, whatever the order
// of the search, so `hint` (a slot to try first, e.g. the last point's; -1 for none) only makes the
// search faster; with a good hint the order of the rest hardly matters, so children are not sorted.
// Comparisons are written so that NaN (float32 overflow, for points far beyond its range) keeps a
// child. The first triangle tried (the hint, or slot 0) is taken whatever its distance, so the
// result is always a triangle's slot, never -1, even should every distance be NaN.
FASTSDF_HD Closest closest_point(const MeshView& m, Vec3 q, int64_t hint) {
  Closest best{INFINITY, -1, {}};
  bool best_distance_only = true;
  const LocalPoint l = local_point(m, q);
  const double inv_scale = 1.0 / m.scale;
  float limit = INFINITY;  // float32 bound, in local units squared, for the best distance so far
  auto consider = [&](int64_t t) {
    Vec3 a, b, c;
    triangle_vertices(m, t, &a, &b, &c);
    const bool distance_only = m.distance_only[t] != 0;
    const TrianglePoint p = closest_on_triangle(q, a, b, c, m.distance_only[t] == kAsEdges);
    const double d2 = dot(q - p.point, q - p.point);
    const bool better =
        best.triangle < 0 || d2 < best.distance2 ||
        (d2 == best.distance2 && (distance_only < best_distance_only ||
                                  (distance_only == best_distance_only && t < best.triangle)));
    if (!better) return;
    best = {d2, t, p};
    best_distance_only = distance_only;
    const float reach = static_cast<float>(sqrt(d2) * inv_scale) + l.tol;
    limit = reach * reach;
  };
  const int64_t start = hint >= 0 ? hint : 0;
  consider(start);

  int32_t stack[kStackSize];
  float bound[kStackSize];
  int top = 0;
  stack[top] = 0;
  bound[top++] = 0.0f;
  while (top > 0) {
    --top;
    if (bound[top] > limit) continue;
    const int32_t node = stack[top];
    const F4 d2 = child_distance2(m.node_box + kBoxRows * kWidth * node, l.p);
    const int32_t* link = m.node_link + 3 * kWidth * node;
    const Children kids = children(link);
    const int near = ~bits(d2 > splat(limit));
    const int inner = near & kids.inner;
    for (int k = 0; k < kWidth; ++k) {  // every lane written, the chosen ones kept: no branches
      stack[top] = link[k];
      bound[top] = lane(d2, k);
      top += (inner >> k) & 1;
    }
    for (int leaves = near & kids.leaves; leaves; leaves &= leaves - 1) {
      const int k = lowest_bit(leaves);
      const int32_t first = link[k];
      const F4 t2 = pack_distance2(m.packs + kPackRows * first, l.p);
      for (int pass = ~bits(t2 > splat(limit)) & ((1 << link[kWidth + k]) - 1); pass; pass &= pass - 1) {
        const int64_t t = first + lowest_bit(pass);
        if (t != start) consider(t);
      }
    }
  }
  return best;
}

// atan2 lane by lane: an odd polynomial on [0, 1] (within 1.4e-7 of atan), then the octant.
FASTSDF_HD F4 vatan2(F4 y, F4 x) {
  const F4 ax = vabs(x), ay = vabs(y), zero = splat(0.0f);
  const F4 hi = vmax(ax, ay), lo = vmin(ax, ay);
  const F4 t = select(hi > zero, lo / select(hi > zero, hi, splat(1.0f)), zero);
  const F4 s = t * t;
  F4 r = splat(-0.004054562654346228f);
  r = r * s + splat(0.02186294086277485f);
  r = r * s + splat(-0.05591230094432831f);
  r = r * s + splat(0.09642195701599121f);
  r = r * s + splat(-0.1390862911939621f);
  r = r * s + splat(0.19946566224098206f);
  r = r * s + splat(-0.33329859375953674f);
  r = r * s + splat(0.9999993443489075f);
  r = r * t;
  r = select(ay > ax, splat(1.5707963267948966f) - r, r);
  r = select(x < zero, splat(3.141592653589793f) - r, r);
  return select(y < zero, zero - r, r);
}

// Signed solid angles over 4 pi of the triangles of a pack seen from p, weighted by their sign
// weights (0 in padding lanes), in float32 (Van Oosterom and Strackee, as solid_angle_fraction).
FASTSDF_HD float pack_winding(const float* pack, const float* p) {
  F4 x[3], y[3], z[3];
  for (int a = 0; a < 3; ++a) {
    x[a] = load4(pack + a * kWidth) - splat(p[a]);
    y[a] = x[a] + load4(pack + (3 + a) * kWidth);
    z[a] = x[a] - load4(pack + (9 + a) * kWidth);
  }
  const F4 lx = vsqrt(dot3(x, x)), ly = vsqrt(dot3(y, y)), lz = vsqrt(dot3(z, z));
  const F4 yz[3] = {y[1] * z[2] - y[2] * z[1], y[2] * z[0] - y[0] * z[2], y[0] * z[1] - y[1] * z[0]};
  const F4 den = lx * ly * lz + dot3(x, y) * lz + dot3(x, z) * ly + dot3(y, z) * lx;
  const F4 angle = vatan2(dot3(x, yz), den) * load4(pack + 27 * kWidth);
  return sum(angle) * static_cast<float>(1.0 / (2.0 * 3.14159265358979323846));
}

// Fast winding number (Barill et al. 2018) to second order, in float32 local coordinates: a child
// whose ball lies far enough away (distance above beta times its radius) counts as the Taylor
// expansion of its integral about its centroid, with r = c - p:
// (r.N / |r|^3 + tr(M) / |r|^3 - 3 r.M.r / |r|^5) / (4 pi); nearer leaves count exactly.
//
// |r|^3 underflows float32 below |r| = 2^-42, where the terms would be 0 / 0: so no child counts as
// far within beta times kMinRadius (beta >= 1). Empty lanes, and children of zero-area triangles
// only, have radius 0 and zero moments: far they add exactly 0, near they add nothing (empty) or
// leaves of zero sign weight; children smaller than kMinRadius count exactly, like near ones.
constexpr float kMinRadius = 1.0f / 1099511627776.0f;  // 2^-40

FASTSDF_HD double fast_winding(const MeshView& m, Vec3 q, double beta) {
  const LocalPoint l = local_point(m, q);
  if (!(l.reach < kWindingReach)) return 0.0;
  const float beta2 = static_cast<float>(beta * beta);
  float w = 0.0f;
  int32_t stack[kStackSize];
  int top = 0;
  stack[top++] = 0;
  while (top > 0) {
    const int32_t node = stack[--top];
    const float* dip = m.node_dipole + 16 * kWidth * node;
    const int32_t* link = m.node_link + 3 * kWidth * node;
    const Children kids = children(link);
    F4 c[3], r[3], mr[3];
    for (int a = 0; a < 3; ++a) r[a] = load4(dip + a * kWidth) - splat(l.p[a]);
    for (int i = 0; i < 3; ++i) {
      for (int a = 0; a < 3; ++a) c[a] = load4(dip + (7 + 3 * i + a) * kWidth);
      mr[i] = dot3(c, r);
    }
    for (int a = 0; a < 3; ++a) c[a] = load4(dip + (3 + a) * kWidth);
    const F4 r2 = dot3(r, r), radius = vmax(load4(dip + 6 * kWidth), splat(kMinRadius));
    const F4 trace = load4(dip + 7 * kWidth) + load4(dip + 11 * kWidth) + load4(dip + 15 * kWidth);
    const M4 far = r2 > splat(beta2) * radius * radius;
    const F4 safe2 = select(far, r2, splat(1.0f));
    const F4 term = (dot3(r, c) + trace - splat(3.0f) * dot3(r, mr) / safe2) / (safe2 * vsqrt(safe2));
    w += sum(select(far, term, splat(0.0f))) * static_cast<float>(0.25 / 3.14159265358979323846);
    const int near = ~bits(far);
    const int inner = near & kids.inner;
    for (int k = 0; k < kWidth; ++k) {  // every lane written, the chosen ones kept: no branches
      stack[top] = link[k];
      top += (inner >> k) & 1;
    }
    for (int leaves = near & kids.leaves; leaves; leaves &= leaves - 1) {
      const int k = lowest_bit(leaves);
      w += pack_winding(m.packs + kPackRows * link[k], l.p);
    }
  }
  return w;
}

// Meshes with more boundary edges than this get no winding_slope: summing it would cost more than
// the winding number it saves.
constexpr int64_t kMaxBoundaryGroups = 256;

// A bound on how fast the winding number can change within `step` (local units) of p, per local
// unit of length, or +inf. Off the surface the gradient of the winding number is a Biot-Savart
// integral over the mesh boundary alone (interior edges cancel), so it is at most
// sum_e |e| / (4 pi dist(x, e)^2): 0 everywhere on a closed mesh.
FASTSDF_HD float winding_slope(const MeshView& m, const float* p, float step) {
  if (m.boundary_groups > kMaxBoundaryGroups) return INFINITY;
  F4 total = splat(0.0f);
  for (int64_t g = 0; g < m.boundary_groups; ++g) {
    const float* b = m.boundary + 5 * kWidth * g;
    F4 r[3];
    for (int a = 0; a < 3; ++a) r[a] = load4(b + a * kWidth) - splat(p[a]);
    // Every point of an edge lies within half its length of its midpoint.
    const F4 gap = vsqrt(dot3(r, r)) - load4(b + 3 * kWidth) - splat(step);
    total = total + select(gap > splat(0.0f), load4(b + 4 * kWidth) / (gap * gap), splat(INFINITY));
  }
  // (1 + 1e-3: a margin for the float32 roundings.)
  return sum(total) * static_cast<float>(1.001 / (4.0 * 3.14159265358979323846));
}

FASTSDF_HD double leaf_winding(const MeshView& m, int64_t first, int64_t count, Vec3 q) {
  double w = 0.0;
  for (int64_t t = first; t < first + count; ++t) {
    if (m.distance_only[t]) continue;
    Vec3 a, b, c;
    triangle_vertices(m, t, &a, &b, &c);
    w += solid_angle_fraction(q, a, b, c);
  }
  return w;
}

// Exact generalised winding number (Jacobson et al. 2013), in float64. Seen from outside a child's
// box, the child's triangles wind exactly like the fan that closes their boundary edges from the box
// centre (the two together form a closed surface inside the box, which winds zero times around q),
// so a child with fewer boundary edges than triangles is replaced by that fan. The float32 boxes
// were rounded outwards, so a point outside one is outside the triangles' own box too.
FASTSDF_HD double exact_winding(const MeshView& m, Vec3 q) {
  if (!(local_point(m, q).reach < kWindingReach)) return 0.0;
  const Vec3 o{m.origin[0], m.origin[1], m.origin[2]};
  const Vec3 local = (1.0 / m.scale) * (q - o);
  const double p[3] = {local.x, local.y, local.z};
  double w = 0.0;
  int32_t stack[kStackSize];
  int top = 0;
  stack[top++] = 0;
  while (top > 0) {
    const int32_t node = stack[--top];
    const float* box = m.node_box + kBoxRows * kWidth * node;
    const int32_t* link = m.node_link + 3 * kWidth * node;
    for (int k = 0; k < kWidth; ++k) {
      const int32_t size = link[2 * kWidth + k];
      if (size == 0) continue;
      const int64_t first = m.closing_start[kWidth * node + k], last = m.closing_start[kWidth * node + k + 1];
      bool outside = false;
      double centre[3];
      for (int a = 0; a < 3; ++a) {
        const double lo = box[a * kWidth + k], hi = box[(3 + a) * kWidth + k];
        outside = outside || p[a] < lo || p[a] > hi;
        centre[a] = m.origin[a] + m.scale * (0.5 * (lo + hi));
      }
      if (outside && last - first < size) {
        const Vec3 apex{centre[0], centre[1], centre[2]};
        for (int64_t e = first; e < last; ++e) {
          const double* edge = m.closing_edges + 6 * e;
          w += solid_angle_fraction(q, load3(edge), load3(edge + 3), apex);
        }
      } else if (link[kWidth + k] > 0) {
        w += leaf_winding(m, link[k], link[kWidth + k], q);
      } else {
        stack[top++] = link[k];
      }
    }
  }
  return w;
}

// Past this many mesh sizes away, float64 squared distances no longer tell the triangles facing a
// point from those behind them, so the closest feature, and its pseudonormal, can be any.
constexpr double kPseudonormalReach = 1e6;

// +1 outside, -1 inside, from the angle-weighted pseudonormal of the closest feature (Baerentzen
// and Aanaes 2005); exact for closed manifold meshes.
FASTSDF_HD double pseudonormal_sign(const MeshView& m, Vec3 q, const Closest& c) {
  const Vec3 n = load3(m.pseudonormal + 21 * c.triangle + 3 * c.at.feature);
  return dot(q - c.at.point, n) < 0.0 ? -1.0 : 1.0;
}

}  // namespace fastsdf::msdf
