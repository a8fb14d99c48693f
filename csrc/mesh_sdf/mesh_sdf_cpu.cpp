// BVH construction and the CPU (OpenMP) queries.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "mesh_sdf/mesh_sdf.h"
#include "mesh_sdf/query.h"

namespace fastsdf::msdf {
namespace {

constexpr int64_t kLeafSize = 4;
// Below this depth splits follow the surface area heuristic, deeper ones the median, so the tree is
// at most kSahDepth + log2(faces) deep and fits the traversal stacks (kStackSize in bvh.h).
constexpr int kSahDepth = 32;
static_assert(kSahDepth + 31 < kStackSize, "the deepest tree must fit the traversal stacks");

// An undirected edge with the net number of times the node's triangles run along it from lo to hi
// (negative: from hi to lo). Edges whose count is zero are interior and dropped.
struct BoundaryEdge {
  int64_t lo, hi;
  int64_t count;
  bool operator<(const BoundaryEdge& o) const { return lo != o.lo ? lo < o.lo : hi < o.hi; }
};

// Sums the counts of equal edges in a sorted list and drops the edges that cancel out.
void compact(std::vector<BoundaryEdge>* edges) {
  size_t n = 0;
  for (size_t i = 0; i < edges->size();) {
    BoundaryEdge e = (*edges)[i++];
    while (i < edges->size() && !(e < (*edges)[i])) e.count += (*edges)[i++].count;
    if (e.count != 0) (*edges)[n++] = e;
  }
  edges->resize(n);
}

// Two compacted lists as one.
std::vector<BoundaryEdge> merge_boundaries(const std::vector<BoundaryEdge>& a, const std::vector<BoundaryEdge>& b) {
  std::vector<BoundaryEdge> out;
  out.reserve(a.size() + b.size());
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    BoundaryEdge e;
    if (j == b.size() || (i < a.size() && a[i] < b[j])) {
      e = a[i++];
    } else if (i == a.size() || b[j] < a[i]) {
      e = b[j++];
    } else {
      e = a[i++];
      e.count += b[j++].count;
    }
    if (e.count != 0) out.push_back(e);
  }
  return out;
}

class Builder {
 public:
  Builder(const double* vertices, const int64_t* faces, int64_t num_faces, const uint8_t* distance_only)
      : v_(vertices), f_(faces), distance_only_(distance_only), area_(static_cast<size_t>(num_faces)),
        centroid_(3 * static_cast<size_t>(num_faces)), normal_(3 * static_cast<size_t>(num_faces)) {
    out_.order.resize(static_cast<size_t>(num_faces));
    std::iota(out_.order.begin(), out_.order.end(), int64_t{0});
    for (int64_t t = 0; t < num_faces; ++t) {
      const Vec3 a = vertex(t, 0), b = vertex(t, 1), c = vertex(t, 2);
      const Vec3 n = 0.5 * cross(b - a, c - a);
      const Vec3 m = (1.0 / 3.0) * (a + b + c);
      const bool keep = !distance_only_[t];
      area_[t] = keep ? norm(n) : 0.0;
      for (int d = 0; d < 3; ++d) {
        centroid_[3 * t + d] = (&m.x)[d];
        normal_[3 * t + d] = keep ? (&n.x)[d] : 0.0;
      }
    }
  }

  Bvh run() {
    std::vector<BoundaryEdge> boundary;
    build(0, static_cast<int64_t>(out_.order.size()), &boundary, 0);
    out_.closing_start.push_back(0);
    for (const auto& edges : closing_) {
      for (const BoundaryEdge& e : edges) {
        const int64_t from = e.count > 0 ? e.lo : e.hi, to = e.count > 0 ? e.hi : e.lo;
        for (int64_t k = 0; k < std::llabs(e.count); ++k) {
          for (int d = 0; d < 3; ++d) out_.closing_edges.push_back(v_[3 * from + d]);
          for (int d = 0; d < 3; ++d) out_.closing_edges.push_back(v_[3 * to + d]);
        }
      }
      out_.closing_start.push_back(static_cast<int64_t>(out_.closing_edges.size() / 6));
    }
    return std::move(out_);
  }

 private:
  Vec3 vertex(int64_t t, int k) const { return load3(v_ + 3 * f_[3 * t + k]); }

  int32_t build(int64_t begin, int64_t end, std::vector<BoundaryEdge>* boundary, int depth) {
    const auto node = static_cast<int32_t>(closing_.size());
    closing_.emplace_back();
    out_.node_box.resize(out_.node_box.size() + 6);
    out_.node_link.resize(out_.node_link.size() + 3);
    out_.node_dipole.resize(out_.node_dipole.size() + 16);
    int64_t* order = out_.order.data();

    double box[6] = {INFINITY, INFINITY, INFINITY, -INFINITY, -INFINITY, -INFINITY};
    double cbox[6] = {INFINITY, INFINITY, INFINITY, -INFINITY, -INFINITY, -INFINITY};
    double area = 0.0, weighted[3] = {0, 0, 0}, normal[3] = {0, 0, 0};
    for (int64_t s = begin; s < end; ++s) {
      const int64_t t = order[s];
      for (int k = 0; k < 3; ++k) {
        const double* p = v_ + 3 * f_[3 * t + k];
        for (int d = 0; d < 3; ++d) {
          box[d] = std::min(box[d], p[d]);
          box[3 + d] = std::max(box[3 + d], p[d]);
        }
      }
      for (int d = 0; d < 3; ++d) {
        cbox[d] = std::min(cbox[d], centroid_[3 * t + d]);
        cbox[3 + d] = std::max(cbox[3 + d], centroid_[3 * t + d]);
        weighted[d] += area_[t] * centroid_[3 * t + d];
        normal[d] += normal_[3 * t + d];
      }
      area += area_[t];
    }
    double* dip = &out_.node_dipole[16 * static_cast<size_t>(node)];
    for (int d = 0; d < 3; ++d) {
      out_.node_box[6 * static_cast<size_t>(node) + d] = box[d];
      out_.node_box[6 * static_cast<size_t>(node) + 3 + d] = box[3 + d];
      dip[d] = area > 0.0 ? weighted[d] / area : 0.5 * (box[d] + box[3 + d]);
      dip[3 + d] = normal[d];
    }
    double radius2 = 0.0;
    for (int64_t s = begin; s < end; ++s) {
      const int64_t t = order[s];
      for (int k = 0; k < 3; ++k) {
        const Vec3 r = vertex(t, k) - load3(dip);
        radius2 = std::max(radius2, dot(r, r));
      }
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) dip[7 + 3 * i + j] += (centroid_[3 * t + i] - dip[i]) * normal_[3 * t + j];
    }
    dip[6] = std::sqrt(radius2);

    const int64_t count = end - begin;
    int32_t* link = &out_.node_link[3 * static_cast<size_t>(node)];
    link[2] = static_cast<int32_t>(count);
    if (count <= kLeafSize) {
      link[0] = static_cast<int32_t>(begin);
      link[1] = static_cast<int32_t>(count);
      for (int64_t s = begin; s < end; ++s) {
        const int64_t t = order[s];
        if (distance_only_[t]) continue;
        for (int k = 0; k < 3; ++k) {
          const int64_t a = f_[3 * t + k], b = f_[3 * t + (k + 1) % 3];
          boundary->push_back(a < b ? BoundaryEdge{a, b, 1} : BoundaryEdge{b, a, -1});
        }
      }
      std::sort(boundary->begin(), boundary->end());
      compact(boundary);
    } else {
      int axis = 0;
      for (int d = 1; d < 3; ++d)
        if (cbox[3 + d] - cbox[d] > cbox[3 + axis] - cbox[axis]) axis = d;
      const int64_t mid = split(begin, end, axis, cbox, depth < kSahDepth);
      std::vector<BoundaryEdge> left, right;
      build(begin, mid, &left, depth + 1);
      const int32_t right_node = build(mid, end, &right, depth + 1);
      link = &out_.node_link[3 * static_cast<size_t>(node)];  // the vector may have grown
      link[0] = right_node;
      link[1] = 0;
      *boundary = merge_boundaries(left, right);
    }
    closing_[node] = *boundary;
    return node;
  }

  // Where to split [begin, end) along `axis`: with `sah`, the binned surface area heuristic (the
  // boundary minimising count times box area summed over the two sides); the median without it or
  // when the heuristic cannot separate the centroids.
  int64_t split(int64_t begin, int64_t end, int axis, const double* cbox, bool sah) {
    constexpr int kBins = 16;
    int64_t* order = out_.order.data();
    auto median = [&] {
      const int64_t mid = begin + (end - begin) / 2;
      std::nth_element(order + begin, order + mid, order + end, [&](int64_t x, int64_t y) {
        return centroid_[3 * x + axis] < centroid_[3 * y + axis];
      });
      return mid;
    };
    if (!sah) return median();
    const double lo = cbox[axis], extent = cbox[3 + axis] - cbox[axis];
    auto bin_of = [&](int64_t t) {
      const int b = extent > 0 ? static_cast<int>(kBins * (centroid_[3 * t + axis] - lo) / extent) : 0;
      return b < kBins ? b : kBins - 1;
    };
    int64_t counts[kBins] = {};
    double boxes[kBins][6];
    for (auto& b : boxes) {
      for (int d = 0; d < 3; ++d) {
        b[d] = INFINITY;
        b[3 + d] = -INFINITY;
      }
    }
    for (int64_t s = begin; s < end; ++s) {
      const int64_t t = order[s];
      const int b = bin_of(t);
      ++counts[b];
      for (int k = 0; k < 3; ++k) {
        const double* p = v_ + 3 * f_[3 * t + k];
        for (int d = 0; d < 3; ++d) {
          boxes[b][d] = std::min(boxes[b][d], p[d]);
          boxes[b][3 + d] = std::max(boxes[b][3 + d], p[d]);
        }
      }
    }
    auto area = [](const double* b) {  // half the surface area; only asked of boxes holding triangles
      const double x = b[3] - b[0], y = b[4] - b[1], z = b[5] - b[2];
      return x * y + y * z + z * x;
    };
    auto grow = [](double* into, const double* b) {
      for (int d = 0; d < 3; ++d) {
        into[d] = std::min(into[d], b[d]);
        into[3 + d] = std::max(into[3 + d], b[3 + d]);
      }
    };
    // Sweep from the right to know each suffix's cost, then from the left to find the best cut.
    double suffix_cost[kBins] = {};
    double box[6] = {INFINITY, INFINITY, INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int64_t n = 0;
    for (int b = kBins - 1; b > 0; --b) {
      grow(box, boxes[b]);
      n += counts[b];
      suffix_cost[b] = n ? static_cast<double>(n) * area(box) : 0.0;
    }
    double best = INFINITY;
    int cut = -1;
    n = 0;
    for (int d = 0; d < 3; ++d) {
      box[d] = INFINITY;
      box[3 + d] = -INFINITY;
    }
    for (int b = 1; b < kBins; ++b) {
      grow(box, boxes[b - 1]);
      n += counts[b - 1];
      if (n == 0 || n == end - begin) continue;
      const double cost = static_cast<double>(n) * area(box) + suffix_cost[b];
      if (cost < best) {
        best = cost;
        cut = b;
      }
    }
    if (cut < 0) return median();
    return std::partition(order + begin, order + end, [&](int64_t t) { return bin_of(t) < cut; }) - order;
  }

  const double* v_;
  const int64_t* f_;
  const uint8_t* distance_only_;
  std::vector<double> area_, centroid_, normal_;
  std::vector<std::vector<BoundaryEdge>> closing_;
  Bvh out_;
};

}  // namespace

Bvh build_bvh(const double* vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
              const uint8_t* distance_only) {
  if (num_faces < 1) throw std::invalid_argument("the mesh has no faces");
  if (num_faces > INT32_MAX / 2) throw std::invalid_argument("meshes of more than 2^30 faces are not supported");
  for (int64_t i = 0; i < 3 * num_faces; ++i)
    if (faces[i] < 0 || faces[i] >= num_vertices)
      throw std::invalid_argument("face " + std::to_string(i / 3) + " indexes vertex " + std::to_string(faces[i]) +
                                  " of " + std::to_string(num_vertices));
  return Builder(vertices, faces, num_faces, distance_only).run();
}

template <typename P>
void query_cpu(const MeshView& mesh, const int64_t* order, const P* points, int64_t n, Sign sign, double beta,
               const QueryOut& out) {
#pragma omp parallel for schedule(dynamic, 512)
  for (int64_t i = 0; i < n; ++i) query_point(mesh, order, points, i, sign, beta, out);
}

template <typename P>
void winding_cpu(const MeshView& mesh, const P* points, int64_t n, bool exact, double beta, double* out) {
#pragma omp parallel for schedule(dynamic, 512)
  for (int64_t i = 0; i < n; ++i) out[i] = winding_point(mesh, points, i, exact, beta);
}

template void query_cpu<float>(const MeshView&, const int64_t*, const float*, int64_t, Sign, double, const QueryOut&);
template void query_cpu<double>(const MeshView&, const int64_t*, const double*, int64_t, Sign, double, const QueryOut&);
template void winding_cpu<float>(const MeshView&, const float*, int64_t, bool, double, double*);
template void winding_cpu<double>(const MeshView&, const double*, int64_t, bool, double, double*);

}  // namespace fastsdf::msdf
