// CPU marching cubes: OpenMP threads take contiguous slabs of point layers. Each thread keeps, for
// the few layers it is working on, one "above the level" byte per point, and for the fill pass the
// crossed-edge flags and in-row vertex ranks that turn an edge into its global vertex id. Scratch
// memory is a handful of bytes per point of one layer per thread, never per voxel of the volume.
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/parallel_ranges.h"
#include "marching_cubes/attributes.h"
#include "marching_cubes/marching_cubes.h"
#include "marching_cubes/tables.h"

namespace fastsdf::mc {
namespace {

constexpr uint64_t kAllCornersAbove = 0x0F0F0F0F0F0F0F0FULL;

inline int popcount3(uint8_t f) { return (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1); }

// The first k' >= k below n with flags[k'] != 0, or n; runs of zeros are skipped eight at a time.
inline int64_t next_nonzero(const uint8_t* flags, int64_t k, int64_t n) {
  for (uint64_t word; k + 8 <= n; k += 8) {
    std::memcpy(&word, flags + k, 8);
    if (word) break;
  }
  while (k < n && !flags[k]) ++k;
  return k;
}

// Vertex ids of one point layer: crossed-edge flags per point (bit = axis), the rank of each point's
// first vertex within its row, and the rank of each row's first vertex within the layer.
struct LayerIndex {
  int64_t layer = -1;
  std::vector<uint8_t> flags;
  std::vector<int32_t> rank_in_row;
  std::vector<int64_t> row_start;
  int64_t total = 0;
};

template <typename T>
class Sweep {
 public:
  Sweep(const T* data, const Grid& grid, double level)
      : data_(data), grid_(grid), level_(level), threshold_(threshold_for<T>(level)),
        ny_(grid.shape[1]), nz_(grid.shape[2]), points_(ny_ * nz_), cube_row_(nz_) {
    for (auto& a : above_) a.resize(points_);
    for (auto& l : index_) {
      l.flags.resize(points_);
      l.rank_in_row.resize(points_);
      l.row_start.resize(ny_);
    }
  }

  bool saw_nonfinite() const { return nonfinite_ != 0; }

  T value(int64_t i, int64_t j, int64_t k) const {
    return data_[i * grid_.stride[0] + j * grid_.stride[1] + k * grid_.stride[2]];
  }

  double operator()(int64_t i, int64_t j, int64_t k) const { return static_cast<double>(value(i, j, k)); }

  // One byte per point of layer i: 1 where the sample is above the level.
  const uint8_t* above(int64_t i, bool check_finite) {
    auto& slot = above_[i % 3];
    if (above_layer_[i % 3] == i) return slot.data();
    above_layer_[i % 3] = i;
    // Locals and restrict pointers: byte stores may alias anything, which stops vectorisation.
    const int64_t ny = ny_, nz = nz_, s = grid_.stride[2];
    const T thr = threshold_;
    uint8_t bad = 0;
    for (int64_t j = 0; j < ny; ++j) {
      const T* __restrict__ row = data_ + i * grid_.stride[0] + j * grid_.stride[1];
      uint8_t* __restrict__ out = slot.data() + j * nz;
      if (s == 1) {
        for (int64_t k = 0; k < nz; ++k) out[k] = row[k] > thr;
        if (check_finite)
          for (int64_t k = 0; k < nz; ++k) bad |= static_cast<uint8_t>(!(row[k] - row[k] == T(0)));
      } else {
        for (int64_t k = 0; k < nz; ++k) out[k] = row[k * s] > thr;
        if (check_finite)
          for (int64_t k = 0; k < nz; ++k) bad |= static_cast<uint8_t>(!(row[k * s] - row[k * s] == T(0)));
      }
    }
    nonfinite_ |= bad;
    return slot.data();
  }

  // Crossed grid edges owned by the points of layer i (x towards layer i + 1, y and z in-layer)
  // that get a vertex.
  int64_t count_vertices(int64_t i) {
    if (grid_.mask.data) return count_masked_vertices(i);
    const uint8_t* __restrict__ a = above(i, true);
    const int64_t points = points_, nz = nz_;
    uint64_t n = 0;
    if (i + 1 < grid_.shape[0]) {
      const uint8_t* __restrict__ b = above(i + 1, true);
      for (int64_t p = 0; p < points; ++p) n += a[p] ^ b[p];
    }
    for (int64_t p = 0; p + nz < points; ++p) n += a[p] ^ a[p + nz];
    for (int64_t p = 0; p + 1 < points; ++p) n += a[p] ^ a[p + 1];
    // The pairs just counted across the ends of rows are not grid edges.
    for (int64_t p = nz - 1; p + 1 < points; p += nz) n -= a[p] ^ a[p + 1];
    return static_cast<int64_t>(n);
  }

  int64_t count_masked_vertices(int64_t i) {
    // Finiteness is checked on the way in; layer_index then finds these layers cached.
    above(i, true);
    if (i + 1 < grid_.shape[0]) above(i + 1, true);
    return layer_index(i).total;
  }

  // Triangles and centre vertices of cube layer i.
  void count_triangles(int64_t i, int64_t* triangles, int64_t* centres) {
    const Tables& tab = tables();
    int64_t n = 0, c = 0;
    for_each_active_cube(i, true, [&](int64_t, int64_t, int key) {
      n += tab.num_triangles[key];
      c += tab.centre_edges[key] != 0;
    });
    *triangles = n;
    *centres = c;
  }

  // Calls visit(j, k, key) for every cube of cube layer i that the surface crosses.
  template <typename Visit>
  void for_each_active_cube(int64_t i, bool check_finite, Visit&& visit) {
    const Tables& tab = tables();
    const uint8_t* a0 = above(i, check_finite);
    const uint8_t* a1 = above(i + 1, check_finite);
    uint8_t* __restrict__ w = cube_row_.data();
    const int64_t ny = ny_, nz = nz_;
    for (int64_t j = 0; j + 1 < ny; ++j) {
      const uint8_t *__restrict__ p00 = a0 + j * nz, *__restrict__ p10 = a1 + j * nz;
      const uint8_t *__restrict__ p01 = p00 + nz, *__restrict__ p11 = p10 + nz;
      // Four corner bits per point pair; a cube's index is w[k] | w[k + 1] << 4.
      for (int64_t k = 0; k < nz; ++k)
        w[k] = static_cast<uint8_t>(p00[k] | (p10[k] << 1) | (p01[k] << 2) | (p11[k] << 3));
      int64_t k = 0;
      while (k + 1 < nz) {
        if (k + 9 <= nz) {
          uint64_t lo, hi;
          std::memcpy(&lo, w + k, 8);
          std::memcpy(&hi, w + k + 1, 8);
          if (lo == hi && (lo == 0 || lo == kAllCornersAbove)) {
            k += 8;
            continue;
          }
        }
        const int cube = w[k] | (w[k + 1] << 4);
        if (cube != 0 && cube != 255 && grid_.mask.keeps(i, j, k)) {
          int bits = 0;
          if (const int amb = tab.ambiguous_faces[cube]) {
            double rel[8];
            for (int c = 0; c < 8; ++c)
              rel[c] = static_cast<double>(value(i + corner_offset(c, 0), j + corner_offset(c, 1),
                                                 k + corner_offset(c, 2))) - level_;
            bits = face_bits(cube, amb, rel);
          }
          visit(j, k, (bits << 8) | cube);
        }
        ++k;
      }
    }
  }

  const LayerIndex& layer_index(int64_t i) {
    LayerIndex& l = index_[i & 1];
    if (l.layer == i) return l;
    l.layer = i;
    const int64_t ny = ny_, nz = nz_, points = points_;
    const uint8_t* __restrict__ a = above(i, false);
    uint8_t* __restrict__ f = l.flags.data();
    if (i + 1 < grid_.shape[0]) {
      const uint8_t* __restrict__ b = above(i + 1, false);
      for (int64_t p = 0; p < points; ++p) f[p] = a[p] ^ b[p];
    } else {
      std::memset(f, 0, static_cast<size_t>(points));
    }
    for (int64_t p = 0; p + nz < points; ++p) f[p] |= static_cast<uint8_t>((a[p] ^ a[p + nz]) << 1);
    for (int64_t p = 0; p + 1 < points; ++p) f[p] |= static_cast<uint8_t>((a[p] ^ a[p + 1]) << 2);
    for (int64_t p = nz - 1; p < points; p += nz) f[p] &= 3;  // no z edge past the end of a row
    if (grid_.mask.data) {
      for (int64_t j = 0; j < ny; ++j) {
        uint8_t* fr = f + j * nz;
        for (int64_t k = next_nonzero(fr, 0, nz); k < nz; k = next_nonzero(fr, k + 1, nz))
          fr[k] &= static_cast<uint8_t>(kept_edges(grid_, i, j, k));
      }
    }
    int64_t total = 0;
    int32_t* __restrict__ ranks = l.rank_in_row.data();
    for (int64_t j = 0; j < ny; ++j) {
      const uint8_t* fr = f + j * nz;
      int32_t* rank = ranks + j * nz;
      l.row_start[j] = total;
      int32_t acc = 0;
      // Ranks are only read where a point has vertices, so runs of empty points are skipped.
      for (int64_t k = next_nonzero(fr, 0, nz); k < nz; k = next_nonzero(fr, k + 1, nz)) {
        rank[k] = acc;
        acc += popcount3(fr[k]);
      }
      total += acc;
    }
    l.total = total;
    return l;
  }

  int64_t vertex_id(const int64_t* vertex_offsets, int64_t i, int64_t j, int64_t k, int axis) {
    const LayerIndex& l = layer_index(i);
    const int64_t p = j * nz_ + k;
    return vertex_offsets[i] + l.row_start[j] + l.rank_in_row[p] + popcount3(l.flags[p] & ((1 << axis) - 1));
  }

  // Writes the vertices of point layer i; returns false if one would land outside the buffer.
  bool emit_vertices(int64_t i, const FillArgs& args, const int64_t* vertex_offsets) {
    const LayerIndex& l = layer_index(i);
    int64_t out = vertex_offsets[i] - args.vertex_base;
    for (int64_t j = 0; j < ny_; ++j) {
      const uint8_t* fr = l.flags.data() + j * nz_;
      for (int64_t k = next_nonzero(fr, 0, nz_); k < nz_; k = next_nonzero(fr, k + 1, nz_)) {
        const uint8_t f = fr[k];
        const double v0 = static_cast<double>(value(i, j, k));
        const int64_t idx[3] = {i, j, k};
        for (int axis = 0; axis < 3; ++axis) {
          if (!((f >> axis) & 1)) continue;
          if (out < 0 || out >= args.vertex_capacity) return false;
          const double v1 = static_cast<double>(value(i + (axis == 0), j + (axis == 1), k + (axis == 2)));
          double pos[3];
          edge_point(idx, axis, v0, v1, level_, args.index_offset, args.origin, args.spacing, pos);
          for (int d = 0; d < 3; ++d) args.verts[3 * out + d] = static_cast<float>(pos[d]);
          if (args.normals) {
            double g[3];
            edge_gradient(*this, grid_.shape, args.spacing, idx, axis, edge_fraction(v0, v1, level_), g);
            store_unit(g, args.normals + 3 * out);
          }
          if (args.values) args.values[out] = edge_value(*this, grid_, idx, axis, level_);
          ++out;
        }
      }
    }
    return true;
  }

  // Writes the triangles of cube layer i and its centre vertices; false if a buffer is too small.
  bool emit_triangles(int64_t i, const FillArgs& args, const int64_t* vertex_offsets,
                      const int64_t* triangle_offsets, const int64_t* centre_offsets) {
    const Tables& tab = tables();
    layer_index(i);
    layer_index(i + 1);
    int64_t out = triangle_offsets[i];
    int64_t centre = centre_offsets[i];
    bool ok = true;
    for_each_active_cube(i, false, [&](int64_t j, int64_t k, int key) {
      const int n = tab.num_triangles[key];
      if (out < 0 || out + n > args.triangle_capacity) {
        ok = false;
        return;
      }
      if (const int centre_edges = tab.centre_edges[key]) {
        const int64_t slot = centre - args.vertex_base;
        if (slot < 0 || slot >= args.vertex_capacity) {
          ok = false;
          return;
        }
        double corner[8];
        for (int c = 0; c < 8; ++c)
          corner[c] = static_cast<double>(value(i + corner_offset(c, 0), j + corner_offset(c, 1), k + corner_offset(c, 2)));
        const int64_t cube[3] = {i, j, k};
        centre_point(cube, centre_edges, corner, level_, args.index_offset, args.origin, args.spacing,
                     args.verts + 3 * slot);
        if (args.normals)
          centre_normal(*this, grid_.shape, args.spacing, cube, centre_edges, corner, level_, args.normals + 3 * slot);
        if (args.values) args.values[slot] = static_cast<float>(cube_spread(corner, level_));
      }
      const uint8_t* edges = tab.triangle_edges[key].data();
      int64_t* dst = args.faces + 3 * out;
      for (int v = 0; v < 3 * n; ++v) {
        const int e = edges[v];
        if (e == kCentre) {
          dst[v] = centre;
          continue;
        }
        const int c = edge_start_corner(e);
        dst[v] = vertex_id(vertex_offsets, i + corner_offset(c, 0), j + corner_offset(c, 1),
                           k + corner_offset(c, 2), edge_axis(e));
      }
      centre += tab.centre_edges[key] != 0;
      out += n;
    });
    return ok;
  }

 private:
  const T* data_;
  Grid grid_;
  double level_;
  T threshold_;
  int64_t ny_, nz_, points_;
  std::vector<uint8_t> above_[3];
  int64_t above_layer_[3] = {-1, -1, -1};
  LayerIndex index_[2];
  std::vector<uint8_t> cube_row_;
  uint8_t nonfinite_ = 0;
};

// Runs body(sweep, begin, end) on contiguous ranges of point layers, one per thread, each with its
// own sweep; rethrows the first exception any thread raised.
template <typename T, typename Body>
void parallel_over_layers(const T* data, const Grid& grid, double level, Body&& body) {
  parallel_ranges(grid.shape[0], [&](int64_t begin, int64_t end) {
    Sweep<T> sweep(data, grid, level);
    body(sweep, begin, end);
  });
}

}  // namespace

template <typename T>
bool count_cpu(const T* data, const Grid& grid, double level, int64_t* vertex_counts,
               int64_t* triangle_counts, int64_t* centre_counts) {
  std::vector<uint8_t> nonfinite(static_cast<size_t>(grid.shape[0]), 0);
  parallel_over_layers(data, grid, level, [&](Sweep<T>& sweep, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      vertex_counts[i] = sweep.count_vertices(i);
      if (i + 1 < grid.shape[0]) sweep.count_triangles(i, triangle_counts + i, centre_counts + i);
    }
    nonfinite[begin] = sweep.saw_nonfinite();
  });
  for (uint8_t bad : nonfinite)
    if (bad) return false;
  return true;
}

template <typename T>
void fill_cpu(const T* data, const Grid& grid, const FillArgs& args, const int64_t* vertex_offsets,
              const int64_t* triangle_offsets, const int64_t* centre_offsets) {
  const int64_t cube_layers = grid.shape[0] - 1;
  parallel_over_layers(data, grid, args.level, [&](Sweep<T>& sweep, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (args.vertex_layers.contains(i) && !sweep.emit_vertices(i, args, vertex_offsets))
        throw std::out_of_range("marching cubes: vertex buffer smaller than the counts promise");
      if (i < cube_layers && args.cube_layers.contains(i) &&
          !sweep.emit_triangles(i, args, vertex_offsets, triangle_offsets, centre_offsets))
        throw std::out_of_range("marching cubes: output buffers smaller than the counts promise");
    }
  });
}

double scratch_bytes_cpu(const int64_t shape[3]) {
  // Per thread (see Sweep): three "above" layers, two layer indices (flags, int32 ranks, int64 row
  // starts) and a row of cube bits; per layer: a finiteness byte.
  const double points = static_cast<double>(shape[1]) * static_cast<double>(shape[2]);
  const double per_thread = 3 * points + 2 * (5 * points + 8.0 * shape[1]) + shape[2];
  return static_cast<double>(busy_threads(shape[0])) * per_thread + static_cast<double>(shape[0]);
}

template bool count_cpu<float>(const float*, const Grid&, double, int64_t*, int64_t*, int64_t*);
template bool count_cpu<double>(const double*, const Grid&, double, int64_t*, int64_t*, int64_t*);
template void fill_cpu<float>(const float*, const Grid&, const FillArgs&, const int64_t*, const int64_t*,
                              const int64_t*);
template void fill_cpu<double>(const double*, const Grid&, const FillArgs&, const int64_t*, const int64_t*,
                               const int64_t*);

}  // namespace fastsdf::mc
