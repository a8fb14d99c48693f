// Exact signed distance to triangle meshes: batched queries (CPU, CUDA) of the BVH that
// bvh_build.h builds.
#pragma once

#include <cmath>
#include <cstdint>

#include "mesh_sdf/bvh.h"

namespace fastsdf::msdf {

// The frame (origin xyz, scale, exponent; see bvh.h) into m, with the powers of two it implies.
// exponent is an integer in [-1022, 1023], so that 2^exponent and 2^-exponent are float64 numbers.
inline void set_frame(MeshView* m, const double* frame) {
  for (int d = 0; d < 3; ++d) m->origin[d] = frame[d];
  m->scale = frame[3];
  m->exponent = static_cast<int>(frame[4]);
  m->to_mesh = std::ldexp(1.0, -m->exponent);
  m->from_mesh = std::ldexp(1.0, m->exponent);
  m->pull_in = std::ldexp(1.0, m->exponent + kPullIn);
}

enum class Sign : int { kNone = 0, kFastWinding = 1, kPseudonormal = 2, kExactWinding = 3 };

// Per point: distance (signed unless sign == kNone); optional closest point, original face id,
// barycentrics (nullptr to skip). P is float or double, points (n, 3) contiguous.
struct QueryOut {
  double* distance;
  double* closest;
  int64_t* face;
  double* barycentric;
};

template <typename P>
void query_cpu(const MeshView& mesh, const int64_t* order, const P* points, int64_t n, Sign sign,
               double beta, const QueryOut& out);

template <typename P>
void winding_cpu(const MeshView& mesh, const P* points, int64_t n, bool exact, double beta, double* out);

template <typename P>
void query_cuda(const MeshView& mesh, const int64_t* order, const P* points, int64_t n, Sign sign,
                double beta, const QueryOut& out, void* stream);

template <typename P>
void winding_cuda(const MeshView& mesh, const P* points, int64_t n, bool exact, double beta, double* out,
                  void* stream);

}  // namespace fastsdf::msdf
