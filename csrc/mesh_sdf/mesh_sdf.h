// Exact signed distance to triangle meshes: BVH construction (CPU) and batched queries (CPU, CUDA).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "mesh_sdf/bvh.h"

namespace fastsdf::msdf {

// What the build produces: MeshView's arrays except the per-slot float64 ones, which the caller
// gathers through `order` (the original face index of each slot, -1 for padding), and the frame of
// the local coordinates.
struct Bvh {
  std::vector<float> node_box;
  std::vector<int32_t> node_link;
  std::vector<float> node_dipole;
  std::vector<int64_t> closing_start;
  std::vector<double> closing_edges;
  std::vector<float> packs;
  std::vector<int64_t> order;
  std::vector<float> boundary;
  double origin[3];
  double scale;
};

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

// vertices (V, 3) in mesh units (see bvh.h) and faces (F, 3), F >= 1, indices in range (checked);
// distance_only[f] != 0 marks faces that get no dipole, no boundary edges and no sign weight.
Bvh build_bvh(const double* vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
              const uint8_t* distance_only);

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
