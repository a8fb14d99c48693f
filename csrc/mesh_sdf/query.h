// The per-point work of a query, shared by the CPU loop and the CUDA kernel.
#pragma once

#include "mesh_sdf/mesh_sdf.h"

namespace fastsdf::msdf {

template <typename P>
FASTSDF_HD void query_point(const MeshView& mesh, const int64_t* order, const P* points, int64_t i, Sign sign,
                            double beta, const QueryOut& out) {
  const Vec3 q{static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
               static_cast<double>(points[3 * i + 2])};
  const Closest c = closest_point(mesh, q);
  double d = sqrt(c.distance2);
  if (sign == Sign::kPseudonormal && !mesh.distance_only[c.triangle]) {
    d *= pseudonormal_sign(mesh, q, c);
  } else if (sign != Sign::kNone) {
    // A distance-only closest triangle has no pseudonormal: the exact winding number decides.
    const double w = sign == Sign::kFastWinding ? fast_winding(mesh, q, beta) : exact_winding(mesh, q);
    if (w > 0.5) d = -d;
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
}

template <typename P>
FASTSDF_HD double winding_point(const MeshView& mesh, const P* points, int64_t i, bool exact, double beta) {
  const Vec3 q{static_cast<double>(points[3 * i]), static_cast<double>(points[3 * i + 1]),
               static_cast<double>(points[3 * i + 2])};
  return exact ? exact_winding(mesh, q) : fast_winding(mesh, q, beta);
}

}  // namespace fastsdf::msdf
