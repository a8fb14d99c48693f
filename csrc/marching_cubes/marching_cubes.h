// Marching cubes on a strided 3-D grid in two passes, count then fill, so that the caller allocates
// outputs of exactly the right size (and can refuse sizes that do not fit) between the two.
//
// Vertex order: by point layer (axis 0); within a layer, first the vertices of its crossed edges (by
// row (axis 1), point (axis 2), then edge axis), then the centre vertices of the cube layer starting
// there, in cube order (only cubes whose table entry has one: see tables.h). Triangle order: by cube
// in the same order, then table order. Both backends produce this order, so the same input gives
// the same mesh on CPU and GPU.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "common/macros.h"

namespace fastsdf::mc {

// Which cubes to mesh: cube (i, j, k) is meshed only where data[i * stride[0] + j * stride[1] +
// k * stride[2]] != 0; every cube when data is null. A grid edge gets a vertex only when the surface
// crosses it and a meshed cube holds it.
struct CubeMask {
  const uint8_t* data = nullptr;
  int64_t stride[3] = {0, 0, 0};

  FASTSDF_HD bool keeps(int64_t i, int64_t j, int64_t k) const {
    return data == nullptr || data[i * stride[0] + j * stride[1] + k * stride[2]] != 0;
  }
};

struct Grid {
  int64_t shape[3];
  int64_t stride[3];  // in elements, may be negative
  CubeMask mask;
};

// Bit `axis` set when a cube that the mask keeps holds the grid edge from point (i, j, k) along
// `axis` (whether that edge is crossed or not); 7 without a mask.
FASTSDF_HD int kept_edges(const Grid& g, int64_t i, int64_t j, int64_t k) {
  if (g.mask.data == nullptr) return 7;
  int bits = 0;
  // Cube (i - di, j - dj, k - dk) holds the edges from (i, j, k) along the axes it does not step back on.
  for (int c = 0; c < 7; ++c) {
    const int64_t ci = i - (c & 1), cj = j - ((c >> 1) & 1), ck = k - ((c >> 2) & 1);
    if (ci < 0 || cj < 0 || ck < 0 || ci + 1 >= g.shape[0] || cj + 1 >= g.shape[1] || ck + 1 >= g.shape[2])
      continue;
    if (g.mask.keeps(ci, cj, ck)) bits |= ~c & 7;
  }
  return bits;
}

struct LayerRange {
  int64_t begin, end;
  FASTSDF_HD bool contains(int64_t i) const { return begin <= i && i < end; }
};

// What to write in a fill pass. Ids in faces are global (vertex_offsets), positions are stored at
// verts[id - vertex_base]; only vertices of `vertex_layers` and triangles of `cube_layers` are
// written, which lets a caller mesh a volume slab by slab with shared boundary vertices.
struct FillArgs {
  double level;
  int64_t index_offset[3];  // grid index of element (0, 0, 0), for slabs of a larger grid
  double origin[3];
  double spacing[3];
  LayerRange vertex_layers;
  LayerRange cube_layers;
  int64_t vertex_base;
  int64_t vertex_capacity;
  int64_t triangle_capacity;
  float* verts;    // (vertex_capacity, 3)
  int64_t* faces;  // (triangle_capacity, 3)
  // Optional per-vertex outputs (null: not computed), see attributes.h: the unit gradient of the
  // volume, pointing towards values above the level, and scikit-image's "values".
  float* normals;  // (vertex_capacity, 3)
  float* values;   // (vertex_capacity,)
};

// FillArgs from what the bindings receive; the output buffers are the caller's to set.
inline FillArgs make_fill_args(double level, const std::array<int64_t, 3>& index_offset,
                               const std::array<double, 3>& origin, const std::array<double, 3>& spacing,
                               std::pair<int64_t, int64_t> vertex_layers,
                               std::pair<int64_t, int64_t> cube_layers, int64_t vertex_base) {
  FillArgs a{};
  a.level = level;
  for (int d = 0; d < 3; ++d) {
    a.index_offset[d] = index_offset[d];
    a.origin[d] = origin[d];
    a.spacing[d] = spacing[d];
  }
  a.vertex_layers = {vertex_layers.first, vertex_layers.second};
  a.cube_layers = {cube_layers.first, cube_layers.second};
  a.vertex_base = vertex_base;
  return a;
}

// CPU. count_cpu fills vertex_counts[shape[0]] (edge vertices per point layer), and
// triangle_counts and centre_counts[shape[0] - 1] (per cube layer), and returns false if the volume
// holds NaN or Inf. fill_cpu takes the matching global ids vertex_offsets[shape[0]] (each layer's
// first edge vertex) and centre_offsets[shape[0] - 1] (each cube layer's first centre vertex), and
// triangle_offsets[shape[0] - 1] (row in faces of each cube layer's first triangle).
// above_cache is null or above_cache_words(shape) words: count_cpu writes there which points lie
// above the level, and fill_cpu, given the same buffer, reads it instead of comparing every sample
// again (a bit per point, where the volume has 32 or 64).
template <typename T>
bool count_cpu(const T* data, const Grid& grid, double level, int64_t* vertex_counts,
               int64_t* triangle_counts, int64_t* centre_counts, uint64_t* above_cache);

template <typename T>
void fill_cpu(const T* data, const Grid& grid, const FillArgs& args, const int64_t* vertex_offsets,
              const int64_t* triangle_offsets, const int64_t* centre_offsets, const uint64_t* above_cache);

// The code count_cpu and fill_cpu run, chosen once: AVX2 with BMI1 and POPCNT where the CPU has
// them and FASTSDF_CPU_ISA (common/cpu_isa.h) is not "baseline"; else SSE2 and portable code. Both
// give the same mesh.
enum class CpuPath { kBaseline, kAvx2 };
CpuPath cpu_path();

// Size of count_cpu's above_cache in 8-byte words; a double, as for scratch_bytes_cpu.
double above_cache_words(const int64_t shape[3]);

// Bytes that count_cpu and fill_cpu allocate for a grid of this shape (scratch of every thread and
// their per-layer flags), so that the caller can refuse a volume before they try. A double: the
// product of a broadcast volume's sizes can pass int64.
double scratch_bytes_cpu(const int64_t shape[3]);

// CUDA (fastsdf._cuda); every pointer is device memory. Work is split in segments of kSegment
// points along axis 2, one thread block each. counts is (3, segments) int32, segments =
// shape[0] * shape[1] * segments_per_row in that order: edge vertices, triangles and centre
// vertices per segment. offsets is (3, segments) int64, computed by the caller on the device: the
// global id of each segment's first edge vertex, the row in faces of its first triangle, and the
// global id of its first centre vertex, in the order above. `tables` holds flat_tables().
constexpr int kSegment = 256;

inline int64_t segments_per_row(int64_t n) { return (n + kSegment - 1) / kSegment; }

template <typename T>
void count_cuda(const T* data, const Grid& grid, double level, const uint8_t* tables, int32_t* counts,
                int32_t* nonfinite, void* stream);

template <typename T>
void fill_cuda(const T* data, const Grid& grid, const FillArgs& args, const uint8_t* tables,
               const int32_t* counts, const int64_t* offsets, void* stream);

}  // namespace fastsdf::mc
