// The per-point work of a query, shared by the CPU loop and the CUDA kernel.
#pragma once

#include "mesh_sdf/mesh_sdf.h"

namespace fastsdf::msdf {

// What a query hands the next point of a run: its closest triangle, where the next search starts
// (bvh.h's closest_point: results never depend on it), and its position, distance and bounds on its
// winding number. The open balls around two points with their distances as radii hold no triangle;
// where they overlap, the segment between the points crosses no surface, and the winding number
// changes along it by at most its length times winding_slope (0 on a closed mesh): where the bounds
// so carried over stay on one side of 1/2, the point's side is known without a winding sum.
struct Neighbour {
  int64_t slot = -1;
  Vec3 point{0.0, 0.0, 0.0};
  double reach = 0.0;  // its distance; 0: no winding number to hand on
  double low = 0.0, high = 0.0;
};

// A query point in mesh units (bvh.h). A point at least 2^kPullIn mesh units from the origin is
// pulled in along its ray from the origin, by 2^-shift, to within [2^(kPullIn - 1), 2^kPullIn):
// the mesh lies within 2 sqrt(3) of the origin, so out there the closest point and the winding
// number are those of the point at infinity in that direction, to float64 precision.
struct MeshPoint {
  Vec3 q;
  int shift;  // 0: not pulled in
};

template <typename P>
FASTSDF_HD MeshPoint mesh_point(const MeshView& m, const P* points, int64_t i) {
  const Vec3 x{static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
               static_cast<double>(points[3 * i + 2])};
  const double largest = fmax(fabs(x.x), fmax(fabs(x.y), fabs(x.z)));
  if (!(largest >= m.pull_in)) return {m.to_mesh * x, 0};
  int e;
  frexp(largest, &e);  // largest in [2^(e - 1), 2^e)
  return {{ldexp(x.x, kPullIn - e), ldexp(x.y, kPullIn - e), ldexp(x.z, kPullIn - e)}, e - kPullIn - m.exponent};
}

// A signed distance d from p (mesh units) in the caller's units. A pulled-in point q, in truth at
// 2^shift |q|, is as much nearer to the mesh than that as q is than |q|: |q| - |d| (the next terms,
// below |mesh|^2 / |q|, are under 2^-20 of an ulp of the result).
FASTSDF_HD double caller_distance(const MeshView& m, const MeshPoint& p, double d) {
  if (p.shift == 0) return d * m.from_mesh;
  const double length = norm(p.q);
  return copysign(ldexp(length, p.shift + m.exponent) - ldexp(length - fabs(d), m.exponent), d);
}

template <typename P>
FASTSDF_HD Neighbour query_point(const MeshView& mesh, const int64_t* order, const P* points, int64_t i, Sign sign,
                                 double beta, const QueryOut& out, const Neighbour& previous) {
  const MeshPoint mp = mesh_point(mesh, points, i);
  const Vec3 q = mp.q;
  const Closest c = closest_point(mesh, q, previous.slot);
  Neighbour next;
  next.slot = c.triangle;
  double d = distance(q, c.at.point);
  const bool far = d > kPseudonormalReach * mesh.scale;
  if (sign == Sign::kPseudonormal && !mesh.distance_only[c.triangle] && !far) {
    d *= pseudonormal_sign(mesh, q, c);
  } else if (sign != Sign::kNone) {
    // The winding number decides; in "pseudonormal" mode where the pseudonormal cannot tell: the
    // exact one for a distance-only closest triangle, the fast one (exact to float64 there) for a
    // point far away.
    const Vec3 r = q - previous.point;
    const double step = sqrt(dot(r, r));
    double change = INFINITY;
    // (With a margin for the rounding of the distances.)
    if (previous.reach > 0.0 && step < (previous.reach + d) * (1.0 - 1e-9)) {
      const LocalPoint l = local_point(mesh, q);
      const float local_step = static_cast<float>(step / mesh.scale);
      change = local_step * winding_slope(mesh, l.p, local_step);
    }
    next.low = previous.low - change;
    next.high = previous.high + change;
    if (!(next.low > 0.5 || next.high <= 0.5)) {
      next.low = next.high =
          sign == Sign::kFastWinding || far ? fast_winding(mesh, q, beta) : exact_winding(mesh, q);
    }
    next.point = q;
    next.reach = d;
    if (next.low > 0.5) d = -d;
  }
  out.distance[i] = caller_distance(mesh, mp, d);
  if (out.closest) {
    out.closest[3 * i] = c.at.point.x * mesh.from_mesh;
    out.closest[3 * i + 1] = c.at.point.y * mesh.from_mesh;
    out.closest[3 * i + 2] = c.at.point.z * mesh.from_mesh;
  }
  if (out.face) out.face[i] = order[c.triangle];
  if (out.barycentric)
    for (int k = 0; k < 3; ++k) out.barycentric[3 * i + k] = c.at.bary[k];
  return next;
}

// Far out the winding number is its dipole term, which falls as the distance squared: a pulled-in
// point's is scaled back by 2^(-2 shift).
template <typename P>
FASTSDF_HD double winding_point(const MeshView& mesh, const P* points, int64_t i, bool exact, double beta) {
  const MeshPoint p = mesh_point(mesh, points, i);
  return ldexp(exact ? exact_winding(mesh, p.q) : fast_winding(mesh, p.q, beta), -2 * p.shift);
}

}  // namespace fastsdf::msdf
