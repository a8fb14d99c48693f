// Building the BVH of bvh.h on the CPU; fastsdf._C builds it for both backends.
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

// vertices (V, 3) in mesh units (see bvh.h) and faces (F, 3), F >= 1, indices in range (checked);
// distance_only[f] != 0 marks faces that get no dipole, no boundary edges and no sign weight.
Bvh build_bvh(const double* vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
              const uint8_t* distance_only);

}  // namespace fastsdf::msdf
