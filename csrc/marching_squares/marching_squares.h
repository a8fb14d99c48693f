// Marching squares on a strided 2-D grid, the plane's marching cubes: two passes, count then fill,
// so that the caller allocates outputs of exactly the right size (and can refuse sizes that do not
// fit) between the two.
//
// Axis 0 is x, axis 1 is y. Cell (i, j) has corners c0 = (i, j), c1 = (i + 1, j), c2 = (i + 1, j + 1),
// c3 = (i, j + 1), counter-clockwise, and edge k runs from corner k to corner k + 1 (mod 4). A sample
// above the level has its corner's bit set in the cell's case; one equal to the level counts as below.
//
// Vertices: one per grid edge the contour crosses, by point row (axis 0), then point (axis 1), then
// edge axis (the edge towards i + 1 first). Segments: by cell in the same order, each from one vertex
// to the next with the values below the level on its left, so contours run counter-clockwise around
// the regions below the level (around the inside of an SDF that is negative inside) and clockwise
// around holes. A saddle cell (corners above and below alternating) joins its two below corners
// when the mean of its four samples is at or below the level, else its two above corners; its two
// segments are listed by the edge they start on.
#pragma once

#include <cstdint>

namespace fastsdf::ms {

struct Grid {
  int64_t shape[2];
  int64_t stride[2];  // in elements, may be negative
};

// count_cpu fills vertex_counts[shape[0]] (vertices of each point row) and
// segment_counts[shape[0] - 1] (segments of each cell row); false if the grid holds NaN or Inf.
template <typename T>
bool count_cpu(const T* data, const Grid& grid, double level, int64_t* vertex_counts, int64_t* segment_counts);

// fill_cpu writes verts (vertex_capacity, 2) and segments (segment_capacity, 2) at the offsets that
// the exclusive prefix sums of count_cpu's counts give; it throws std::out_of_range rather than write
// past either buffer.
template <typename T>
void fill_cpu(const T* data, const Grid& grid, double level, const double origin[2], const double spacing[2],
              const int64_t* vertex_offsets, const int64_t* segment_offsets, float* verts, int64_t vertex_capacity,
              int64_t* segments, int64_t segment_capacity);

// Bytes that count_cpu and fill_cpu allocate for a grid of this shape, all threads together. A
// double: the product of a broadcast grid's sizes can pass int64.
double scratch_bytes_cpu(const int64_t shape[2]);

}  // namespace fastsdf::ms
