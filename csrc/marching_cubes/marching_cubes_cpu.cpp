// CPU marching cubes: OpenMP threads take contiguous slabs of point layers. Each thread keeps, for
// the few layers it is working on, the rows of "above the level" bits of its points (bit_rows.h),
// and for the fill pass the crossed-edge bits per axis and the rank of each word's first vertex,
// which turn an edge into its global vertex id. Scratch memory is a few bits per point of one layer
// per thread. The caller may also lend a cache of the above bits of every point (a bit per point):
// the count pass fills it and the fill pass then reads the volume only next to the surface, not
// a second time in full.
#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/cpu_isa.h"
#include "common/parallel_ranges.h"
#include "marching_cubes/attributes.h"
#include "marching_cubes/bit_rows.h"
#include "marching_cubes/marching_cubes.h"
#include "marching_cubes/tables.h"

namespace fastsdf::mc {
namespace {

using bits::kWordBits;

// The crossed edges of one point layer that get a vertex, a bit set per axis (edges towards layer
// i + 1, the next row, the next point), and per word of a row the rank within the layer of the
// first vertex of its points.
struct LayerEdges {
  int64_t layer = -1;
  std::vector<uint64_t> crossed[3];
  std::vector<int64_t> rank;
  int64_t total = 0;
};

// Fast: compiled for FASTSDF_MC_FAST_TARGET (AVX2 thresholds, POPCNT ranks), see run_slab.
// Per cube index, its crossed edges (corners on opposite sides); per edge, the offset of its start
// corner along the three axes.
struct EdgeGeometry {
  std::array<uint16_t, 256> crossed{};
  std::array<std::array<int8_t, 3>, kNumEdges> start{};

  EdgeGeometry() {
    for (int e = 0; e < kNumEdges; ++e) {
      const int c0 = edge_start_corner(e), c1 = c0 | (1 << edge_axis(e));
      for (int d = 0; d < 3; ++d) start[e][d] = static_cast<int8_t>(corner_offset(c0, d));
      for (int cube = 0; cube < 256; ++cube)
        if (((cube >> c0) ^ (cube >> c1)) & 1) crossed[cube] |= static_cast<uint16_t>(1u << e);
    }
  }
};

const EdgeGeometry& edge_geometry() {
  static const EdgeGeometry geometry;
  return geometry;
}

template <typename T, bool Fast>
class Sweep {
 public:
  // `cache`: null, or the above bits of every layer (above_cache_words); filled by this sweep for
  // layers [cache_begin, cache_end), or only read when that range is empty.
  Sweep(const T* data, const Grid& grid, double level, uint64_t* cache, int64_t cache_begin, int64_t cache_end)
      : data_(data), grid_(grid), level_(level), threshold_(threshold_for<T>(level)),
        ny_(grid.shape[1]), nz_(grid.shape[2]), words_(bits::words_for(nz_)), row_words_(words_ + 1),
        cache_(cache), cache_begin_(cache_begin), cache_end_(cache_end) {
    // One zero word past the end of every row (bits::next_points reads it).
    const size_t layer_words = static_cast<size_t>(ny_ * row_words_);
    // A sweep that only reads the cache needs no slots of its own.
    if (!cache_ || cache_begin_ < cache_end_)
      for (auto& a : above_) a.assign(layer_words, 0);
    if (grid_.mask.data)
      for (auto& m : mask_) m.assign(layer_words, 0);
    for (auto& l : edges_) {
      for (auto& c : l.crossed) c.assign(layer_words, 0);
      l.rank.assign(layer_words, 0);
    }
  }

  bool saw_nonfinite() const { return nonfinite_; }

  T value(int64_t i, int64_t j, int64_t k) const {
    return data_[i * grid_.stride[0] + j * grid_.stride[1] + k * grid_.stride[2]];
  }

  double operator()(int64_t i, int64_t j, int64_t k) const { return static_cast<double>(value(i, j, k)); }

  // Whether the above bits come from the cache rather than from the samples.
  bool cache_reading() const { return cache_ && cache_begin_ == cache_end_; }

  // Asks for the samples of a contiguous row of nz_ points to be cached.
  void prefetch_samples(const T* row) const {
    constexpr int64_t kLine = 64 / sizeof(T);
    for (int64_t k = 0; k < nz_; k += kLine) bits::prefetch(row + k);
  }

  // The above-the-level bits of point layer i, row j at j * row_words_.
  template <bool Check>
  const uint64_t* above(int64_t i) {
    if (above_layer_[i % 3] == i) return above_ptr_[i % 3];
    // The cache when it is read, or filled by this sweep for layer i; else a slot of our own.
    const bool reading = cache_reading();
    const bool filling = cache_ && cache_begin_ <= i && i < cache_end_;
    uint64_t* out = reading || filling ? cache_ + i * ny_ * row_words_ : above_[i % 3].data();
    if (!reading) {
      bool bad = false;
      for (int64_t j = 0; j < ny_; ++j) {
        bits::threshold_row<Check, Fast>(data_ + i * grid_.stride[0] + j * grid_.stride[1], grid_.stride[2], nz_,
                                   threshold_, out + j * row_words_, bad);
        out[j * row_words_ + words_] = 0;  // the cache comes uninitialised
      }
      nonfinite_ |= bad;
    }
    above_layer_[i % 3] = i;
    above_ptr_[i % 3] = out;
    return out;
  }

  // The cube-mask bits of cube layer c (rows j < ny - 1, bits k < nz - 1; the rest zero).
  const uint64_t* mask_bits(int64_t c) {
    auto& slot = mask_[c % 3];
    if (mask_layer_[c % 3] == c) return slot.data();
    mask_layer_[c % 3] = c;
    for (int64_t j = 0; j + 1 < ny_; ++j) {
      uint64_t* row = slot.data() + j * row_words_;
      for (int64_t w = 0; w < words_; ++w) {
        uint64_t word = 0;
        for (int64_t k = w * kWordBits, e = std::min(nz_ - 1, k + kWordBits); k < e; ++k)
          word |= static_cast<uint64_t>(grid_.mask.keeps(c, j, k)) << (k - w * kWordBits);
        row[w] = word;
      }
    }
    return slot.data();
  }

  template <bool Check>
  const LayerEdges& layer_edges(int64_t i) {
    LayerEdges& l = edges_[i & 1];
    if (l.layer == i) return l;
    // The count pass (Check) needs only the total: it stores no bits and no ranks to reuse.
    l.layer = Check ? -1 : i;
    const int64_t nx = grid_.shape[0], rw = row_words_;
    const uint64_t* a = above<Check>(i);
    const uint64_t* b = i + 1 < nx ? above<Check>(i + 1) : nullptr;
    // Kept edges: a crossed edge gets a vertex only where a cube the mask keeps holds it.
    const uint64_t* m_here = grid_.mask.data && i + 1 < nx ? mask_bits(i) : nullptr;
    const uint64_t* m_back = grid_.mask.data && i > 0 ? mask_bits(i - 1) : nullptr;
    uint64_t *x0 = l.crossed[0].data(), *x1 = l.crossed[1].data(), *x2 = l.crossed[2].data();
    int64_t* rank = l.rank.data();
    int64_t total = 0;
    for (int64_t j = 0; j < ny_; ++j) {
      const uint64_t* row = a + j * rw;
      for (int64_t w = 0; w < words_; ++w) {
        const int64_t p = j * rw + w;
        uint64_t c0 = b ? row[w] ^ b[p] : 0;
        uint64_t c1 = j + 1 < ny_ ? row[w] ^ row[w + rw] : 0;
        uint64_t c2 = (row[w] ^ bits::next_points(row, w)) & bits::low_bits(nz_ - 1 - w * kWordBits);
        if (grid_.mask.data) {
          // Edge along axis 0 from (i, j, k): cubes (i, j - dj, k - dk); along axis 1: cubes
          // (i - di, j, k - dk); along axis 2: cubes (i - di, j - dj, k). Rows of cubes off the grid
          // are zero, and so are the words before the first.
          auto at = [&](const uint64_t* m, int64_t jj, int64_t ww) -> uint64_t {
            return m && jj >= 0 && ww >= 0 ? m[jj * rw + ww] : 0;
          };
          auto with_previous_point = [&](uint64_t here, uint64_t before) { return here | (here << 1) | (before >> 63); };
          c0 &= with_previous_point(at(m_here, j, w) | at(m_here, j - 1, w), at(m_here, j, w - 1) | at(m_here, j - 1, w - 1));
          c1 &= with_previous_point(at(m_here, j, w) | at(m_back, j, w), at(m_here, j, w - 1) | at(m_back, j, w - 1));
          c2 &= at(m_here, j, w) | at(m_here, j - 1, w) | at(m_back, j, w) | at(m_back, j - 1, w);
        }
        if constexpr (!Check) {
          x0[p] = c0;
          x1[p] = c1;
          x2[p] = c2;
          rank[p] = total;
        }
        total += bits::popcount<Fast>(c0) + bits::popcount<Fast>(c1) + bits::popcount<Fast>(c2);
      }
    }
    l.total = total;
    return l;
  }

  int64_t count_vertices(int64_t i) { return layer_edges<true>(i).total; }

  // Triangles and centre vertices of cube layer i.
  void count_triangles(int64_t i, int64_t* triangles, int64_t* centres) {
    const Tables& tab = tables();
    int64_t n = 0, c = 0;
    for_each_active_cube<true>(i, [&](int64_t, int64_t, int key) {
      n += tab.num_triangles[key];
      c += tab.centre_edges[key] != 0;
    });
    *triangles = n;
    *centres = c;
  }

  // Calls visit(j, k, key) for every cube of cube layer i that the surface crosses and the mask keeps.
  template <bool Check, typename Visit>
  void for_each_active_cube(int64_t i, Visit&& visit) {
    const Tables& tab = tables();
    const uint64_t* a0 = above<Check>(i);
    const uint64_t* a1 = above<Check>(i + 1);
    const uint64_t* mask = grid_.mask.data ? mask_bits(i) : nullptr;
    const int64_t rw = row_words_;
    // The count pass compares layer i + 2 next: fetching it now keeps memory busy while this layer's
    // cubes are counted (they need no samples), rather than idle, and the compare then finds it cached.
    const T* ahead = Check && !cache_reading() && i + 2 < grid_.shape[0] && grid_.stride[2] == 1
                         ? data_ + (i + 2) * grid_.stride[0] : nullptr;
    for (int64_t j = 0; j + 1 < ny_; ++j) {
      if (ahead) {
        prefetch_samples(ahead + j * grid_.stride[1]);
        if (j + 2 == ny_) prefetch_samples(ahead + (j + 1) * grid_.stride[1]);
      }
      // Corner rows (i, j), (i + 1, j), (i, j + 1), (i + 1, j + 1): corner bits 0..3 of a cube's index.
      const uint64_t *p0 = a0 + j * rw, *p1 = a1 + j * rw, *p2 = p0 + rw, *p3 = p1 + rw;
      // Bit k: the four points of column k are not all on one side.
      auto split = [&](int64_t w) { return (p0[w] ^ p1[w]) | (p0[w] ^ p2[w]) | (p0[w] ^ p3[w]); };
      uint64_t here = split(0);
      for (int64_t w = 0; w < words_; ++w) {
        const uint64_t next = split(w + 1);
        uint64_t cut = here | (here >> 1) | (next << 63) | (p0[w] ^ bits::next_points(p0, w));
        cut &= bits::low_bits(nz_ - 1 - w * kWordBits);
        if (mask) cut &= mask[j * rw + w];
        here = next;
        if (!cut) continue;
        // Bit o of corners[c]: corner c of the cube at point w * 64 + o.
        const uint64_t corners[8] = {p0[w], p1[w], p2[w], p3[w], bits::next_points(p0, w), bits::next_points(p1, w),
                                     bits::next_points(p2, w), bits::next_points(p3, w)};
        for (; cut; cut &= cut - 1) {
          const int o = bits::lowest_bit(cut);
          const int64_t k = w * kWordBits + o;
          int cube = 0;
          for (int c = 0; c < 8; ++c) cube |= static_cast<int>((corners[c] >> o) & 1) << c;
          int face = 0;
          if (const int amb = tab.ambiguous_faces[cube]) {
            double rel[8];
            for (int c = 0; c < 8; ++c)
              rel[c] = static_cast<double>(value(i + corner_offset(c, 0), j + corner_offset(c, 1),
                                                 k + corner_offset(c, 2))) - level_;
            face = face_bits(cube, amb, rel);
          }
          visit(j, k, (face << 8) | cube);
        }
      }
    }
  }

  // Global id of the vertex on the edge from point (j, k) of layer l along `axis`.
  int64_t vertex_id(const LayerEdges& l, int64_t first, int64_t j, int64_t k, int axis) const {
    const int64_t p = j * row_words_ + static_cast<int64_t>(static_cast<uint64_t>(k) / kWordBits);
    const int o = static_cast<int>(static_cast<uint64_t>(k) % kWordBits);
    const uint64_t below = bits::low_bits(o);
    const uint64_t x0 = l.crossed[0][p], x1 = l.crossed[1][p];
    int64_t id = first + l.rank[p] + bits::popcount<Fast>(x0 & below) + bits::popcount<Fast>(x1 & below) +
                 bits::popcount<Fast>(l.crossed[2][p] & below);
    if (axis > 0) id += (x0 >> o) & 1;
    if (axis > 1) id += (x1 >> o) & 1;
    return id;
  }

  // Writes the vertices of point layer i; returns false if one would land outside the buffer.
  bool emit_vertices(int64_t i, const FillArgs& args, const int64_t* vertex_offsets) {
    const LayerEdges& l = layer_edges<false>(i);
    int64_t out = vertex_offsets[i] - args.vertex_base;
    // The samples next to the surface are scattered, and the count pass read them long ago: ask for
    // those of a row a few rows ahead (its first and last crossed points per word, in layers i and
    // i + 1), so that they arrive while this row is written.
    constexpr int64_t kAhead = 6;
    auto prefetch_row = [&](int64_t j) {
      if (j >= ny_) return;
      for (int64_t w = 0; w < words_; ++w) {
        const int64_t p = j * row_words_ + w;
        const uint64_t any = l.crossed[0][p] | l.crossed[1][p] | l.crossed[2][p];
        // A point every 16 or more along the row: a cache line of float32 samples at most.
        for (uint64_t m = any; m;) {
          const int o = bits::lowest_bit(m);
          m = o + 16 < kWordBits ? m & (~uint64_t{0} << (o + 16)) : 0;
          const T* at = data_ + i * grid_.stride[0] + j * grid_.stride[1] + (w * kWordBits + o) * grid_.stride[2];
          bits::prefetch(at);
          if (l.crossed[0][p]) bits::prefetch(at + grid_.stride[0]);
          if (l.crossed[1][p]) bits::prefetch(at + grid_.stride[1]);
        }
      }
    };
    for (int64_t j = 0; j < kAhead; ++j) prefetch_row(j);
    for (int64_t j = 0; j < ny_; ++j) {
      prefetch_row(j + kAhead);
      for (int64_t w = 0; w < words_; ++w) {
        const int64_t p = j * row_words_ + w;
        const uint64_t x[3] = {l.crossed[0][p], l.crossed[1][p], l.crossed[2][p]};
        for (uint64_t any = x[0] | x[1] | x[2]; any; any &= any - 1) {
          const int o = bits::lowest_bit(any);
          const int64_t k = w * kWordBits + o;
          const double v0 = static_cast<double>(value(i, j, k));
          const int64_t idx[3] = {i, j, k};
          for (int axis = 0; axis < 3; ++axis) {
            if (!((x[axis] >> o) & 1)) continue;
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
    }
    return true;
  }

  // Writes the triangles of cube layer i and its centre vertices; false if a buffer is too small.
  bool emit_triangles(int64_t i, const FillArgs& args, const int64_t* vertex_offsets,
                      const int64_t* triangle_offsets, const int64_t* centre_offsets) {
    const Tables& tab = tables();
    const EdgeGeometry& geometry = edge_geometry();
    const LayerEdges* layers[2] = {&layer_edges<false>(i), &layer_edges<false>(i + 1)};
    int64_t out = triangle_offsets[i];
    int64_t centre = centre_offsets[i];
    bool ok = true;
    for_each_active_cube<false>(i, [&](int64_t j, int64_t k, int key) {
      if (!ok) return;
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
      // Each edge's id once, however many triangles share it: the triangles use the cube's crossed
      // edges and its centre vertex.
      int64_t ids[kNumEdges + 1];
      ids[kCentre] = centre;
      for (unsigned m = geometry.crossed[key & 255]; m; m &= m - 1) {
        const int e = bits::lowest_bit(m);
        const int dx = geometry.start[e][0];
        ids[e] = vertex_id(*layers[dx], vertex_offsets[i + dx], j + geometry.start[e][1], k + geometry.start[e][2],
                           edge_axis(e));
      }
      const uint8_t* edges = tab.triangle_edges[key].data();
      int64_t* dst = args.faces + 3 * out;
      for (int v = 0; v < 3 * n; ++v) dst[v] = ids[edges[v]];
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
  int64_t ny_, nz_, words_, row_words_;
  uint64_t* cache_;
  int64_t cache_begin_, cache_end_;
  std::vector<uint64_t> above_[3];
  int64_t above_layer_[3] = {-1, -1, -1};
  const uint64_t* above_ptr_[3] = {nullptr, nullptr, nullptr};
  std::vector<uint64_t> mask_[3];
  int64_t mask_layer_[3] = {-1, -1, -1};
  LayerEdges edges_[2];
  bool nonfinite_ = false;
};

template <typename T, bool Fast, typename Body>
void run_slab(const T* data, const Grid& grid, double level, uint64_t* cache, bool fill_cache, Body& body,
              int64_t begin, int64_t end) {
  Sweep<T, Fast> sweep(data, grid, level, cache, fill_cache ? begin : 0, fill_cache ? end : 0);
  body(sweep, begin, end);
}

#if defined(FASTSDF_MC_FAST_TARGET)
// run_slab<T, true> with everything it calls inlined, so that all of it is compiled for the fast
// target (an OpenMP region's body would not inherit the attribute: each thread calls this).
template <typename T, typename Body>
FASTSDF_MC_FAST_TARGET __attribute__((flatten)) void run_slab_fast(const T* data, const Grid& grid, double level,
                                                                   uint64_t* cache, bool fill_cache, Body& body,
                                                                   int64_t begin, int64_t end) {
  run_slab<T, true>(data, grid, level, cache, fill_cache, body, begin, end);
}
#endif

// Runs body(sweep, begin, end) on contiguous ranges of point layers, one per thread, each with its
// own sweep (of the fast kind where cpu_path() allows); rethrows the first exception any thread raised.
// `cache` as for Sweep: each thread fills the layers of its own range.
template <typename T, typename Body>
void parallel_over_layers(const T* data, const Grid& grid, double level, uint64_t* cache, bool fill_cache,
                          Body&& body) {
  [[maybe_unused]] const bool fast = cpu_path() == CpuPath::kAvx2;
  parallel_ranges(grid.shape[0], [&](int64_t begin, int64_t end) {
#if defined(FASTSDF_MC_FAST_TARGET)
    if (fast) return run_slab_fast(data, grid, level, cache, fill_cache, body, begin, end);
#endif
    run_slab<T, false>(data, grid, level, cache, fill_cache, body, begin, end);
  });
}

}  // namespace

CpuPath cpu_path() {
  static const CpuPath path = [] {
#if defined(FASTSDF_MC_FAST_TARGET)
    if (cpu_isa() != CpuIsa::kBaseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
        __builtin_cpu_supports("popcnt"))
      return CpuPath::kAvx2;
#endif
    return CpuPath::kBaseline;
  }();
  return path;
}

template <typename T>
bool count_cpu(const T* data, const Grid& grid, double level, int64_t* vertex_counts,
               int64_t* triangle_counts, int64_t* centre_counts, uint64_t* above_cache) {
  std::vector<uint8_t> nonfinite(static_cast<size_t>(grid.shape[0]), 0);
  parallel_over_layers(data, grid, level, above_cache, true, [&](auto& sweep, int64_t begin, int64_t end) {
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
              const int64_t* triangle_offsets, const int64_t* centre_offsets, const uint64_t* above_cache) {
  const int64_t cube_layers = grid.shape[0] - 1;
  // Read only: no layer is the sweeps' to fill.
  parallel_over_layers(data, grid, args.level, const_cast<uint64_t*>(above_cache), false, [&](auto& sweep, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (args.vertex_layers.contains(i) && !sweep.emit_vertices(i, args, vertex_offsets))
        throw std::out_of_range("marching cubes: vertex buffer smaller than the counts promise");
      if (i < cube_layers && args.cube_layers.contains(i) &&
          !sweep.emit_triangles(i, args, vertex_offsets, triangle_offsets, centre_offsets))
        throw std::out_of_range("marching cubes: output buffers smaller than the counts promise");
    }
  });
}

double above_cache_words(const int64_t shape[3]) {
  return static_cast<double>(shape[0]) * static_cast<double>(shape[1]) * static_cast<double>(bits::words_for(shape[2]) + 1);
}

double scratch_bytes_cpu(const int64_t shape[3]) {
  // Per thread (see Sweep), in 8-byte words per row: three "above" layers, three cube-mask layers
  // and two layers of crossed edges (three words) and ranks (one); per layer: a finiteness byte.
  const double row_words = static_cast<double>(bits::words_for(shape[2]) + 1);
  const double per_thread = 8.0 * static_cast<double>(shape[1]) * row_words * (3 + 3 + 2 * 4);
  return static_cast<double>(busy_threads(shape[0])) * per_thread + static_cast<double>(shape[0]);
}

template bool count_cpu<float>(const float*, const Grid&, double, int64_t*, int64_t*, int64_t*, uint64_t*);
template bool count_cpu<double>(const double*, const Grid&, double, int64_t*, int64_t*, int64_t*, uint64_t*);
template void fill_cpu<float>(const float*, const Grid&, const FillArgs&, const int64_t*, const int64_t*,
                              const int64_t*, const uint64_t*);
template void fill_cpu<double>(const double*, const Grid&, const FillArgs&, const int64_t*, const int64_t*,
                               const int64_t*, const uint64_t*);

}  // namespace fastsdf::mc
