// CPU marching squares: OpenMP threads take contiguous blocks of point rows. Each thread keeps, for
// the two rows it is working on, one "above the level" byte per point, the crossed-edge flags and
// the in-row vertex ranks that turn an edge into its global vertex id: a few bytes per point of one
// row per thread, never per point of the grid.
#include <stdexcept>
#include <vector>

#include "common/parallel_ranges.h"
#include "marching_squares/marching_squares.h"

namespace fastsdf::ms {
namespace {

// Per case (corner k above: bit k) and saddle decision (1: the below corners joined), the segments
// as (start edge, end edge), and how many.
struct Table {
  int8_t count[16][2];
  int8_t edges[16][2][2][2];

  Table() : count{}, edges{} {
    for (int c = 0; c < 16; ++c) {
      for (int joined = 0; joined < 2; ++joined) {
        // Edge k crosses from below to above (walking counter-clockwise) where a segment starts,
        // from above to below where one ends: the below side is then on the segment's left.
        int starts[2], ends[2], ns = 0, ne = 0;
        for (int k = 0; k < 4; ++k) {
          const int a = (c >> k) & 1, b = (c >> ((k + 1) & 3)) & 1;
          if (!a && b) starts[ns++] = k;
          if (a && !b) ends[ne++] = k;
        }
        for (int s = 0; s < ns; ++s) {
          int end = ends[0];
          // A saddle: joined below corners put each start with the next end round the ring,
          // separated ones (each below corner cut off) with the previous one.
          if (ns == 2) end = joined ? (starts[s] + 1) & 3 : (starts[s] + 3) & 3;
          edges[c][joined][s][0] = static_cast<int8_t>(starts[s]);
          edges[c][joined][s][1] = static_cast<int8_t>(end);
        }
        count[c][joined] = static_cast<int8_t>(ns);
      }
    }
  }
};

const Table& table() {
  static const Table t;
  return t;
}

// Where along an edge from sample v0 to sample v1 the linear interpolant meets the level; in halves
// where the differences overflow (samples near float64's limit, of opposite signs).
double edge_fraction(double v0, double v1, double level) {
  const double t = (level - v0) / (v1 - v0);
  return t >= 0.0 && t <= 1.0 ? t : (level * 0.5 - v0 * 0.5) / (v1 * 0.5 - v0 * 0.5);
}

// Vertex ids of one point row: crossed-edge flags per point (bit = axis) and the rank of each
// point's first vertex within the row.
struct RowIndex {
  int64_t row = -1;
  std::vector<uint8_t> flags;
  std::vector<int64_t> rank;
  int64_t total = 0;
};

template <typename T>
class Rows {
 public:
  Rows(const T* data, const Grid& grid, double level)
      : data_(data), grid_(grid), level_(level), ny_(grid.shape[1]) {
    for (auto& a : above_) a.resize(static_cast<size_t>(ny_));
    for (auto& r : index_) {
      r.flags.resize(static_cast<size_t>(ny_));
      r.rank.resize(static_cast<size_t>(ny_));
    }
  }

  double value(int64_t i, int64_t j) const {
    return static_cast<double>(data_[i * grid_.stride[0] + j * grid_.stride[1]]);
  }

  bool saw_nonfinite() const { return nonfinite_; }

  // One byte per point of row i: 1 where the sample is above the level. Three rows are kept: a
  // cell row's segments need the indices of rows i and i + 1, and the latter reads row i + 2.
  const uint8_t* above(int64_t i) {
    auto& slot = above_[i % 3];
    if (above_row_[i % 3] == i) return slot.data();
    above_row_[i % 3] = i;
    bool bad = false;
    for (int64_t j = 0; j < ny_; ++j) {
      const double v = value(i, j);
      slot[j] = v > level_;
      bad |= !(v - v == 0.0);
    }
    nonfinite_ |= bad;
    return slot.data();
  }

  const RowIndex& index(int64_t i) {
    RowIndex& r = index_[i & 1];
    if (r.row == i) return r;
    const uint8_t* a = above(i);
    const uint8_t* b = i + 1 < grid_.shape[0] ? above(i + 1) : nullptr;
    int64_t acc = 0;
    for (int64_t j = 0; j < ny_; ++j) {
      const int f = (b && (a[j] ^ b[j])) | ((j + 1 < ny_ && (a[j] ^ a[j + 1])) << 1);
      r.flags[j] = static_cast<uint8_t>(f);
      r.rank[j] = acc;
      acc += (f & 1) + (f >> 1);
    }
    r.row = i;
    r.total = acc;
    return r;
  }

  int64_t count_vertices(int64_t i) { return index(i).total; }

  int64_t count_segments(int64_t i) {
    const Table& tab = table();
    const uint8_t* a = above(i);
    const uint8_t* b = above(i + 1);
    int64_t n = 0;
    for (int64_t j = 0; j + 1 < ny_; ++j) n += tab.count[a[j] | b[j] << 1 | b[j + 1] << 2 | a[j + 1] << 3][0];
    return n;
  }

  void emit_vertices(int64_t i, int64_t first, const double origin[2], const double spacing[2], float* verts,
                     int64_t capacity) {
    const RowIndex& r = index(i);
    int64_t out = first;
    for (int64_t j = 0; j < ny_; ++j) {
      for (int axis = 0; axis < 2; ++axis) {
        if (!((r.flags[j] >> axis) & 1)) continue;
        if (out < 0 || out >= capacity) throw std::out_of_range("marching squares: vertex buffer too small");
        const double v0 = value(i, j), v1 = axis ? value(i, j + 1) : value(i + 1, j);
        const double t = edge_fraction(v0, v1, level_);
        const double x = static_cast<double>(i) + (axis ? 0.0 : t);
        const double y = static_cast<double>(j) + (axis ? t : 0.0);
        verts[2 * out] = static_cast<float>(origin[0] + x * spacing[0]);
        verts[2 * out + 1] = static_cast<float>(origin[1] + y * spacing[1]);
        ++out;
      }
    }
  }

  void emit_segments(int64_t i, const int64_t* vertex_offsets, int64_t first, int64_t* segments,
                     int64_t capacity) {
    const Table& tab = table();
    const RowIndex& lo = index(i);
    const RowIndex& hi = index(i + 1);
    const uint8_t* a = above(i);
    const uint8_t* b = above(i + 1);
    int64_t out = first;
    for (int64_t j = 0; j + 1 < ny_; ++j) {
      const int c = a[j] | b[j] << 1 | b[j + 1] << 2 | a[j + 1] << 3;
      if (c == 0 || c == 15) continue;
      int joined = 0;
      if (c == 5 || c == 10) {
        const double centre = (value(i, j) + value(i + 1, j) + value(i + 1, j + 1) + value(i, j + 1)) / 4.0;
        joined = !(centre > level_);
      }
      // Edge k's vertex: e0 and e2 run along axis 0 from (i, j) and (i, j + 1), e1 and e3 along
      // axis 1 from (i + 1, j) and (i, j).
      const int64_t id[4] = {
          vertex_offsets[i] + lo.rank[j],
          vertex_offsets[i + 1] + hi.rank[j] + (hi.flags[j] & 1),
          vertex_offsets[i] + lo.rank[j + 1],
          vertex_offsets[i] + lo.rank[j] + (lo.flags[j] & 1),
      };
      for (int s = 0; s < tab.count[c][joined]; ++s) {
        if (out < 0 || out >= capacity) throw std::out_of_range("marching squares: segment buffer too small");
        segments[2 * out] = id[tab.edges[c][joined][s][0]];
        segments[2 * out + 1] = id[tab.edges[c][joined][s][1]];
        ++out;
      }
    }
  }

 private:
  const T* data_;
  Grid grid_;
  double level_;
  int64_t ny_;
  std::vector<uint8_t> above_[3];
  int64_t above_row_[3] = {-1, -1, -1};
  RowIndex index_[2];
  bool nonfinite_ = false;
};

// Runs body(rows, begin, end) on contiguous ranges of point rows, one per thread, each with its own
// rows; rethrows the first exception any thread raised.
template <typename T, typename Body>
void parallel_over_rows(const T* data, const Grid& grid, double level, Body&& body) {
  parallel_ranges(grid.shape[0], [&](int64_t begin, int64_t end) {
    Rows<T> rows(data, grid, level);
    body(rows, begin, end);
  });
}

}  // namespace

template <typename T>
bool count_cpu(const T* data, const Grid& grid, double level, int64_t* vertex_counts, int64_t* segment_counts) {
  std::vector<uint8_t> nonfinite(static_cast<size_t>(grid.shape[0]), 0);
  parallel_over_rows(data, grid, level, [&](Rows<T>& rows, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      vertex_counts[i] = rows.count_vertices(i);
      if (i + 1 < grid.shape[0]) segment_counts[i] = rows.count_segments(i);
    }
    nonfinite[begin] = rows.saw_nonfinite();
  });
  for (uint8_t bad : nonfinite)
    if (bad) return false;
  return true;
}

template <typename T>
void fill_cpu(const T* data, const Grid& grid, double level, const double origin[2], const double spacing[2],
              const int64_t* vertex_offsets, const int64_t* segment_offsets, float* verts, int64_t vertex_capacity,
              int64_t* segments, int64_t segment_capacity) {
  parallel_over_rows(data, grid, level, [&](Rows<T>& rows, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      rows.emit_vertices(i, vertex_offsets[i], origin, spacing, verts, vertex_capacity);
      if (i + 1 < grid.shape[0]) rows.emit_segments(i, vertex_offsets, segment_offsets[i], segments, segment_capacity);
    }
  });
}

double scratch_bytes_cpu(const int64_t shape[2]) {
  // Per thread (see Rows): three "above" rows and two row indices (flags, int64 ranks); per row: a
  // finiteness byte.
  const double per_thread = static_cast<double>(shape[1]) * (3 + 2 * (1 + 8));
  return static_cast<double>(busy_threads(shape[0])) * per_thread + static_cast<double>(shape[0]);
}

template bool count_cpu<float>(const float*, const Grid&, double, int64_t*, int64_t*);
template bool count_cpu<double>(const double*, const Grid&, double, int64_t*, int64_t*);
template void fill_cpu<float>(const float*, const Grid&, double, const double*, const double*, const int64_t*,
                              const int64_t*, float*, int64_t, int64_t*, int64_t);
template void fill_cpu<double>(const double*, const Grid&, double, const double*, const double*, const int64_t*,
                               const int64_t*, float*, int64_t, int64_t*, int64_t);

}  // namespace fastsdf::ms
