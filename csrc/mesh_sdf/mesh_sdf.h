// Exact signed distance to triangle meshes: BVH construction (CPU) and batched queries (CPU, CUDA).
#pragma once

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

// vertices (V, 3) and faces (F, 3), F >= 1, indices in range (checked); distance_only[f] != 0
// marks faces that get no dipole, no boundary edges and no sign weight (see bvh.h).
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
