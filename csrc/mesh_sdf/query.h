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

template <typename P>
FASTSDF_HD Neighbour query_point(const MeshView& mesh, const int64_t* order, const P* points, int64_t i, Sign sign,
                                 double beta, const QueryOut& out, const Neighbour& previous) {
  const Vec3 q{static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
               static_cast<double>(points[3 * i + 2])};
  const Closest c = closest_point(mesh, q, previous.slot);
  Neighbour next;
  next.slot = c.triangle;
  double d = sqrt(c.distance2);
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
  out.distance[i] = d;
  if (out.closest) {
    out.closest[3 * i] = c.at.point.x;
    out.closest[3 * i + 1] = c.at.point.y;
    out.closest[3 * i + 2] = c.at.point.z;
  }
  if (out.face) out.face[i] = order[c.triangle];
  if (out.barycentric)
    for (int k = 0; k < 3; ++k) out.barycentric[3 * i + k] = c.at.bary[k];
  return next;
}

template <typename P>
FASTSDF_HD double winding_point(const MeshView& mesh, const P* points, int64_t i, bool exact, double beta) {
  const Vec3 q{static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
               static_cast<double>(points[3 * i + 2])};
  return exact ? exact_winding(mesh, q) : fast_winding(mesh, q, beta);
}

}  // namespace fastsdf::msdf
