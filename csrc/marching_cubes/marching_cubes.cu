// CUDA marching cubes: count, scan (by the caller, on the device), fill.
//
// One thread block per segment of kSegment points along axis 2 of one row (i, j); a thread per
// point, and per cube starting there. Scratch memory is three int32 counts and three int64 offsets
// per segment (36 / kSegment bytes per voxel), never per voxel. Vertex ids follow the CPU order:
// a segment's vertices are numbered from its offset by a block-wide scan, and a cube finds the ids
// on its four point rows by scanning them again in shared memory, so nothing is hashed or sorted.
#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "common/cuda_device.h"
#include "marching_cubes/attributes.h"
#include "marching_cubes/cube.h"
#include "marching_cubes/marching_cubes.h"

namespace fastsdf::mc {
namespace {

template <typename T>
struct Volume {
  const T* data;
  Grid grid;
  T threshold;
  double level;

  FASTSDF_HD T at(int64_t i, int64_t j, int64_t k) const {
    return data[i * grid.stride[0] + j * grid.stride[1] + k * grid.stride[2]];
  }
  // The sample as a double, for attributes.h.
  FASTSDF_HD double operator()(int64_t i, int64_t j, int64_t k) const { return static_cast<double>(at(i, j, k)); }
  __device__ bool above(int64_t i, int64_t j, int64_t k) const { return at(i, j, k) > threshold; }

  // Bit `axis` set when the grid edge from (i, j, k) along `axis` is crossed and gets a vertex.
  __device__ int point_flags(int64_t i, int64_t j, int64_t k) const {
    const bool a = above(i, j, k);
    int f = 0;
    if (i + 1 < grid.shape[0]) f |= static_cast<int>(a != above(i + 1, j, k));
    if (j + 1 < grid.shape[1]) f |= static_cast<int>(a != above(i, j + 1, k)) << 1;
    if (k + 1 < grid.shape[2]) f |= static_cast<int>(a != above(i, j, k + 1)) << 2;
    return f ? f & kept_edges(grid, i, j, k) : 0;
  }

  // Table key of the cube at (i, j, k), or -1 when the surface misses it or the mask drops it; its
  // samples in `v`.
  __device__ int cube_key(int64_t i, int64_t j, int64_t k, const uint8_t* tables, double v[8]) const {
    if (!grid.mask.keeps(i, j, k)) return -1;
    int cube = 0;
    for (int c = 0; c < 8; ++c) {
      const T x = at(i + corner_offset(c, 0), j + corner_offset(c, 1), k + corner_offset(c, 2));
      cube |= static_cast<int>(x > threshold) << c;
      v[c] = static_cast<double>(x);
    }
    if (cube == 0 || cube == 255) return -1;
    const int amb = __ldg(tables + kFlatAmbiguous + cube);
    if (!amb) return cube;
    double rel[8];
    for (int c = 0; c < 8; ++c) rel[c] = v[c] - level;
    return (face_bits(cube, amb, rel) << 8) | cube;
  }
};

__device__ int centre_edges(const uint8_t* tables, int key) {
  return __ldg(tables + kFlatCentre + 2 * key) | (__ldg(tables + kFlatCentre + 2 * key + 1) << 8);
}

// Per-segment counts packed in one word so that a single block reduction sums all three.
constexpr int kTriangleShift = 20, kCentreShift = 42;

struct Segment {
  int64_t i, j, kb, k0;
};

__device__ Segment segment_of(int64_t seg, int64_t ny, int64_t per_row) {
  const int64_t kb = seg % per_row, row = seg / per_row;
  return {row / ny, row % ny, kb, kb * kSegment};
}

template <typename T>
__global__ void __launch_bounds__(kSegment)
    count_kernel(Volume<T> vol, const uint8_t* __restrict__ tables, int64_t per_row, int64_t segments,
                 int32_t* __restrict__ counts, int32_t* __restrict__ nonfinite) {
  using Reduce = cub::BlockReduce<unsigned long long, kSegment>;
  __shared__ typename Reduce::TempStorage temp;
  for (int64_t seg = blockIdx.x; seg < segments; seg += gridDim.x) {
    const Segment s = segment_of(seg, vol.grid.shape[1], per_row);
    const int64_t k = s.k0 + threadIdx.x;
    unsigned long long packed = 0;
    if (k < vol.grid.shape[2]) {
      if (!isfinite(vol.at(s.i, s.j, k))) atomicOr(nonfinite, 1);
      packed = __popc(vol.point_flags(s.i, s.j, k));
      if (s.i + 1 < vol.grid.shape[0] && s.j + 1 < vol.grid.shape[1] && k + 1 < vol.grid.shape[2]) {
        double v[8];
        const int key = vol.cube_key(s.i, s.j, k, tables, v);
        if (key >= 0) {
          packed += static_cast<unsigned long long>(__ldg(tables + key)) << kTriangleShift;
          packed += static_cast<unsigned long long>(centre_edges(tables, key) != 0) << kCentreShift;
        }
      }
    }
    packed = Reduce(temp).Sum(packed);
    if (threadIdx.x == 0) {
      counts[seg] = static_cast<int32_t>(packed & ((1ULL << kTriangleShift) - 1));
      counts[segments + seg] = static_cast<int32_t>((packed >> kTriangleShift) & ((1ULL << (kCentreShift - kTriangleShift)) - 1));
      counts[2 * segments + seg] = static_cast<int32_t>(packed >> kCentreShift);
    }
    __syncthreads();
  }
}

template <typename T>
struct FillParams {
  Volume<T> vol;
  FillArgs args;
  const uint8_t* tables;
  const int32_t* counts;   // (3, segments): edge vertices, triangles, centre vertices
  const int64_t* offsets;  // (3, segments): first edge vertex id, first face row, first centre id
  int64_t per_row;
  int64_t segments;
};

template <typename T>
__global__ void __launch_bounds__(kSegment) fill_kernel(FillParams<T> p) {
  using ScanInt = cub::BlockScan<int, kSegment>;
  using ScanRows = cub::BlockScan<unsigned long long, kSegment>;
  __shared__ union {
    typename ScanInt::TempStorage ints;
    typename ScanRows::TempStorage rows;
  } temp;
  // For the four point rows (i + dx, j + dy), r = dx + 2 dy, over the segment's points and the
  // first point of the next segment: crossed-edge flags and the rank of the point's first vertex.
  __shared__ uint8_t flags[4][kSegment + 1];
  __shared__ uint16_t rank[4][kSegment + 1];
  __shared__ int64_t base[4][2];

  const Volume<T>& vol = p.vol;
  const FillArgs& a = p.args;
  const int t = threadIdx.x;
  for (int64_t seg = blockIdx.x; seg < p.segments; seg += gridDim.x) {
    const Segment s = segment_of(seg, vol.grid.shape[1], p.per_row);
    const int64_t k = s.k0 + t;
    const bool emit_vertices = p.counts[seg] > 0 && a.vertex_layers.contains(s.i);
    const bool emit_triangles = p.counts[p.segments + seg] > 0 && a.cube_layers.contains(s.i);
    if (emit_vertices) {
      const int f = k < vol.grid.shape[2] ? vol.point_flags(s.i, s.j, k) : 0;
      int out;
      ScanInt(temp.ints).ExclusiveSum(__popc(f), out);
      const int64_t first = p.offsets[seg] - a.vertex_base + out;
      const int64_t index[3] = {s.i, s.j, k};
      int written = 0;
      for (int axis = 0; axis < 3; ++axis) {
        if (!((f >> axis) & 1)) continue;
        const int64_t dst = first + written++;
        if (dst < 0 || dst >= a.vertex_capacity) continue;
        const double v0 = static_cast<double>(vol.at(s.i, s.j, k));
        const double v1 = static_cast<double>(vol.at(s.i + (axis == 0), s.j + (axis == 1), k + (axis == 2)));
        double pos[3];
        edge_point(index, axis, v0, v1, vol.level, a.index_offset, a.origin, a.spacing, pos);
        for (int d = 0; d < 3; ++d) a.verts[3 * dst + d] = static_cast<float>(pos[d]);
        if (a.normals) {
          double g[3];
          edge_gradient(vol, vol.grid.shape, a.spacing, index, axis, edge_fraction(v0, v1, vol.level), g);
          store_unit(g, a.normals + 3 * dst);
        }
        if (a.values) a.values[dst] = edge_value(vol, vol.grid, index, axis, vol.level);
      }
      __syncthreads();
    }
    if (emit_triangles) {
      unsigned long long counts = 0;
      int f[4];
      for (int r = 0; r < 4; ++r) {
        f[r] = k < vol.grid.shape[2] ? vol.point_flags(s.i + (r & 1), s.j + (r >> 1), k) : 0;
        counts |= static_cast<unsigned long long>(__popc(f[r])) << (16 * r);
      }
      unsigned long long prefix;
      ScanRows(temp.rows).ExclusiveSum(counts, prefix);
      for (int r = 0; r < 4; ++r) {
        flags[r][t] = static_cast<uint8_t>(f[r]);
        rank[r][t] = static_cast<uint16_t>((prefix >> (16 * r)) & 0xffff);
      }
      if (t < 4) {
        const int64_t i = s.i + (t & 1), j = s.j + (t >> 1), next = s.k0 + kSegment;
        const int64_t row_seg = (i * vol.grid.shape[1] + j) * p.per_row + s.kb;
        base[t][0] = p.offsets[row_seg];
        const bool has_next = next < vol.grid.shape[2];
        base[t][1] = has_next ? p.offsets[row_seg + 1] : 0;
        flags[t][kSegment] = has_next ? static_cast<uint8_t>(vol.point_flags(i, j, next)) : 0;
        rank[t][kSegment] = 0;
      }
      __syncthreads();
      double v[8];
      const int key = k + 1 < vol.grid.shape[2] ? vol.cube_key(s.i, s.j, k, p.tables, v) : -1;
      const int n = key >= 0 ? __ldg(p.tables + key) : 0;
      const int centre_mask = key >= 0 ? centre_edges(p.tables, key) : 0;
      // Triangles in the low 16 bits, centre vertices above: one scan numbers both.
      int out;
      ScanInt(temp.ints).ExclusiveSum(n | ((centre_mask != 0) << 16), out);
      const int64_t first = p.offsets[p.segments + seg] + (out & 0xffff);
      const int64_t centre = p.offsets[2 * p.segments + seg] + (out >> 16);
      if (centre_mask) {
        const int64_t slot = centre - a.vertex_base;
        const int64_t cube[3] = {s.i, s.j, k};
        if (slot >= 0 && slot < a.vertex_capacity) {
          centre_point(cube, centre_mask, v, vol.level, a.index_offset, a.origin, a.spacing, a.verts + 3 * slot);
          if (a.normals)
            centre_normal(vol, vol.grid.shape, a.spacing, cube, centre_mask, v, vol.level, a.normals + 3 * slot);
          if (a.values) a.values[slot] = static_cast<float>(cube_spread(v, vol.level));
        }
      }
      if (n > 0 && first >= 0 && first + n <= a.triangle_capacity) {
        const uint8_t* edges = p.tables + kFlatEdges + key * 3 * kMaxTriangles;
        int64_t* dst = a.faces + 3 * first;
        for (int m = 0; m < 3 * n; ++m) {
          const int e = __ldg(edges + m);
          if (e == kCentre) {
            dst[m] = centre;
            continue;
          }
          const int c = edge_start_corner(e);
          const int r = corner_offset(c, 0) + 2 * corner_offset(c, 1);
          const int q = t + corner_offset(c, 2);
          dst[m] = base[r][q == kSegment] + rank[r][q] + __popc(flags[r][q] & ((1 << edge_axis(e)) - 1));
        }
      }
      __syncthreads();
    }
  }
}

template <typename T>
Volume<T> volume_of(const T* data, const Grid& grid, double level) {
  Volume<T> v{};
  v.data = data;
  v.grid = grid;
  v.threshold = threshold_for<T>(level);
  v.level = level;
  return v;
}

int64_t segments_of(const Grid& grid) { return grid.shape[0] * grid.shape[1] * segments_per_row(grid.shape[2]); }

unsigned blocks_for(int64_t segments) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 30;
  return static_cast<unsigned>(segments < kMaxBlocks ? segments : kMaxBlocks);
}

}  // namespace

template <typename T>
void count_cuda(const T* data, const Grid& grid, double level, const uint8_t* tables, int32_t* counts,
                int32_t* nonfinite, void* stream) {
  const int64_t segments = segments_of(grid);
  if (segments == 0) return;
  count_kernel<T><<<blocks_for(segments), kSegment, 0, static_cast<cudaStream_t>(stream)>>>(
      volume_of(data, grid, level), tables, segments_per_row(grid.shape[2]), segments, counts, nonfinite);
  check_launch("marching cubes: count kernel");
}

template <typename T>
void fill_cuda(const T* data, const Grid& grid, const FillArgs& args, const uint8_t* tables,
               const int32_t* counts, const int64_t* offsets, void* stream) {
  const int64_t segments = segments_of(grid);
  if (segments == 0) return;
  FillParams<T> p{volume_of(data, grid, args.level), args, tables, counts, offsets,
                  segments_per_row(grid.shape[2]), segments};
  fill_kernel<T><<<blocks_for(segments), kSegment, 0, static_cast<cudaStream_t>(stream)>>>(p);
  check_launch("marching cubes: fill kernel");
}

template void count_cuda<float>(const float*, const Grid&, double, const uint8_t*, int32_t*, int32_t*, void*);
template void count_cuda<double>(const double*, const Grid&, double, const uint8_t*, int32_t*, int32_t*, void*);
template void fill_cuda<float>(const float*, const Grid&, const FillArgs&, const uint8_t*, const int32_t*,
                               const int64_t*, void*);
template void fill_cuda<double>(const double*, const Grid&, const FillArgs&, const uint8_t*, const int32_t*,
                                const int64_t*, void*);

}  // namespace fastsdf::mc
