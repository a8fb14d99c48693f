// Builds the BVH that the CPU and CUDA queries share (bvh_build.h), on the CPU: a binary tree by the
// surface area heuristic, collapsed into the 4-wide nodes of bvh.h.
#include "mesh_sdf/bvh_build.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastsdf::msdf {
namespace {

// Below this depth splits follow the surface area heuristic, deeper ones the median, so the binary
// tree is at most kSahDepth + 29 deep (leaves of 4 triangles, at most 2^30 faces) and the 4-wide
// tree, half as deep, fits the traversal stacks (kMaxDepth in bvh.h).
constexpr int kSahDepth = 32;
static_assert((kSahDepth + 29) / 2 + 1 <= kMaxDepth, "the deepest tree must fit the traversal stacks");

// The smallest scale of local coordinates, in mesh units (bvh.h): 2^-60.
constexpr double kMinScale = 0x1p-60;
static_assert(kPullIn + 1 + 60 < 127, "query points must have float32 local coordinates");

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

// A binary tree node as built, before the tree is collapsed into 4-wide nodes.
struct BinaryNode {
  double box[6];
  double dipole[16];  // as node_dipole's rows, in the mesh's coordinates
  int32_t left = -1, right = -1;  // children, -1 for a leaf
  int64_t begin, end;  // the triangles below, order[begin:end]
  std::vector<BoundaryEdge> boundary;
};

// The nearest float32 at or below x, one step further down: a margin over the rounding of the
// float64 arithmetic that computed x (and likewise upwards).
float below(double x) {
  float f = static_cast<float>(x);
  if (f > x) f = std::nextafter(f, -INFINITY);
  return std::nextafter(f, -INFINITY);
}

float above(double x) {
  float f = static_cast<float>(x);
  if (f < x) f = std::nextafter(f, INFINITY);
  return std::nextafter(f, INFINITY);
}

class Builder {
 public:
  Builder(const double* vertices, int64_t num_vertices, const int64_t* faces, int64_t num_faces,
          const uint8_t* distance_only)
      : v_(vertices), f_(faces), distance_only_(distance_only), order_(static_cast<size_t>(num_faces)),
        area_(static_cast<size_t>(num_faces)), centroid_(3 * static_cast<size_t>(num_faces)),
        normal_(3 * static_cast<size_t>(num_faces)) {
    std::iota(order_.begin(), order_.end(), int64_t{0});
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
    // Local coordinates: the vertices' bounding box centred and scaled into [-1, 1]^3.
    double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int64_t i = 0; i < num_vertices; ++i) {
      for (int d = 0; d < 3; ++d) {
        lo[d] = std::min(lo[d], v_[3 * i + d]);
        hi[d] = std::max(hi[d], v_[3 * i + d]);
      }
    }
    double scale = 0.0;
    for (int d = 0; d < 3; ++d) {
      out_.origin[d] = 0.5 * (lo[d] + hi[d]);
      scale = std::max(scale, 0.5 * (hi[d] - lo[d]));
    }
    // (At least kMinScale: query points, within 2^(kPullIn + 1) mesh units, then have float32
    // local coordinates. Only a mesh far smaller than float64 resolves at its largest coordinate
    // (tiny and flat across that axis, near the others) is below it: its float32 data, all but
    // collapsed, lets everything through to the float64 tests.)
    out_.scale = scale > 0.0 ? std::max(scale, kMinScale) : 1.0;
  }

  Bvh run() {
    build(0, static_cast<int64_t>(order_.size()), 0);
    emit(0, 1);
    boundary_groups(nodes_[0].boundary);
    out_.closing_start.push_back(0);
    for (const std::vector<BoundaryEdge>* edges : slot_edges_) {
      for (size_t i = 0; edges && i < edges->size(); ++i) {
        const BoundaryEdge& e = (*edges)[i];
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

  double local(double x, int d) const { return (x - out_.origin[d]) / out_.scale; }

  // Builds the binary node for order_[begin:end]; returns its index in nodes_.
  int32_t build(int64_t begin, int64_t end, int depth) {
    const auto index = static_cast<int32_t>(nodes_.size());
    nodes_.emplace_back();
    BinaryNode node;
    node.begin = begin;
    node.end = end;
    double cbox[6] = {INFINITY, INFINITY, INFINITY, -INFINITY, -INFINITY, -INFINITY};
    double area = 0.0, weighted[3] = {0, 0, 0}, normal[3] = {0, 0, 0};
    for (int d = 0; d < 3; ++d) {
      node.box[d] = INFINITY;
      node.box[3 + d] = -INFINITY;
    }
    for (int64_t s = begin; s < end; ++s) {
      const int64_t t = order_[s];
      for (int k = 0; k < 3; ++k) {
        const double* p = v_ + 3 * f_[3 * t + k];
        for (int d = 0; d < 3; ++d) {
          node.box[d] = std::min(node.box[d], p[d]);
          node.box[3 + d] = std::max(node.box[3 + d], p[d]);
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
    double* dip = node.dipole;
    std::fill(dip, dip + 16, 0.0);
    for (int d = 0; d < 3; ++d) {
      dip[d] = area > 0.0 ? weighted[d] / area : 0.5 * (node.box[d] + node.box[3 + d]);
      dip[3 + d] = normal[d];
    }
    double radius2 = 0.0;
    for (int64_t s = begin; s < end; ++s) {
      const int64_t t = order_[s];
      for (int k = 0; k < 3; ++k) {
        const Vec3 r = vertex(t, k) - load3(dip);
        radius2 = std::max(radius2, dot(r, r));
      }
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) dip[7 + 3 * i + j] += (centroid_[3 * t + i] - dip[i]) * normal_[3 * t + j];
    }
    dip[6] = std::sqrt(radius2);

    if (end - begin <= kWidth) {
      for (int64_t s = begin; s < end; ++s) {
        const int64_t t = order_[s];
        if (distance_only_[t]) continue;
        for (int k = 0; k < 3; ++k) {
          const int64_t a = f_[3 * t + k], b = f_[3 * t + (k + 1) % 3];
          node.boundary.push_back(a < b ? BoundaryEdge{a, b, 1} : BoundaryEdge{b, a, -1});
        }
      }
      std::sort(node.boundary.begin(), node.boundary.end());
      compact(&node.boundary);
    } else {
      int axis = 0;
      for (int d = 1; d < 3; ++d)
        if (cbox[3 + d] - cbox[d] > cbox[3 + axis] - cbox[axis]) axis = d;
      const int64_t mid = split(begin, end, axis, cbox, depth < kSahDepth);
      node.left = build(begin, mid, depth + 1);
      node.right = build(mid, end, depth + 1);
      node.boundary = merge_boundaries(nodes_[node.left].boundary, nodes_[node.right].boundary);
    }
    nodes_[index] = std::move(node);
    return index;
  }

  bool leaf(int32_t b) const { return nodes_[b].left < 0; }

  // Emits the 4-wide node whose children are binary node b's grandchildren (its children where
  // those are leaves; b itself where it is a leaf, which only the root can be), so that 4-wide
  // nodes are at most half as deep as the binary tree. Returns its index.
  int32_t emit(int32_t b, int depth) {
    if (depth > kMaxDepth) throw std::logic_error("mesh sdf: the tree is deeper than the traversal stacks allow");
    const auto node = static_cast<int32_t>(out_.node_link.size() / (3 * kWidth));
    out_.node_box.resize(out_.node_box.size() + kBoxRows * kWidth, 0.0f);
    out_.node_link.resize(out_.node_link.size() + 3 * kWidth, 0);
    out_.node_dipole.resize(out_.node_dipole.size() + 16 * kWidth, 0.0f);
    slot_edges_.resize(slot_edges_.size() + kWidth, nullptr);
    for (int k = 0; k < kWidth; ++k) {
      for (int d = 0; d < 3; ++d) {
        out_.node_box[kBoxRows * kWidth * node + d * kWidth + k] = INFINITY;
        out_.node_box[kBoxRows * kWidth * node + (3 + d) * kWidth + k] = -INFINITY;
      }
    }
    int32_t children[kWidth];
    int count = 0;
    if (leaf(b)) {
      children[count++] = b;
    } else {
      for (int32_t c : {nodes_[b].left, nodes_[b].right}) {
        if (leaf(c)) {
          children[count++] = c;
        } else {
          children[count++] = nodes_[c].left;
          children[count++] = nodes_[c].right;
        }
      }
    }
    for (int k = 0; k < count; ++k) {
      const BinaryNode& x = nodes_[children[k]];
      float* box = &out_.node_box[kBoxRows * kWidth * node];
      float* dip = &out_.node_dipole[16 * kWidth * node];
      slab(x, box + k);
      for (int d = 0; d < 3; ++d) {
        box[d * kWidth + k] = below(local(x.box[d], d));
        box[(3 + d) * kWidth + k] = above(local(x.box[3 + d], d));
        dip[d * kWidth + k] = static_cast<float>(local(x.dipole[d], d));
        dip[(3 + d) * kWidth + k] = static_cast<float>(x.dipole[3 + d] / (out_.scale * out_.scale));
      }
      dip[6 * kWidth + k] = static_cast<float>(x.dipole[6] / out_.scale);
      for (int i = 0; i < 9; ++i)
        dip[(7 + i) * kWidth + k] = static_cast<float>(x.dipole[7 + i] / (out_.scale * out_.scale * out_.scale));
      slot_edges_[kWidth * node + k] = &x.boundary;
      const int32_t first = leaf(children[k]) ? leaf_slots(x) : emit(children[k], depth + 1);
      int32_t* link = &out_.node_link[3 * kWidth * node];  // after emit, which grows the vector
      link[k] = first;
      link[kWidth + k] = leaf(children[k]) ? static_cast<int32_t>(x.end - x.begin) : 0;
      link[2 * kWidth + k] = static_cast<int32_t>(x.end - x.begin);
    }
    return node;
  }

  // The slab of binary node x, into the lane of node_box rows 6-10 at `lane`: across the mean normal
  // of its triangles (zero when they cancel), around all of them (see bvh.h).
  void slab(const BinaryNode& x, float* lane) const {
    const Vec3 sum = load3(x.dipole + 3);
    const double length = norm(sum);
    float n[3];
    for (int d = 0; d < 3; ++d) {
      n[d] = length > 0.0 ? static_cast<float>((&sum.x)[d] / length) : 0.0f;
      lane[(6 + d) * kWidth] = n[d];
    }
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t s = x.begin; s < x.end; ++s) {
      for (int i = 0; i < 3; ++i) {
        double offset = 0.0;
        for (int d = 0; d < 3; ++d) offset += static_cast<double>(n[d]) * local(v_[3 * f_[3 * order_[s] + i] + d], d);
        lo = std::min(lo, offset);
        hi = std::max(hi, offset);
      }
    }
    lane[9 * kWidth] = below(lo);
    lane[10 * kWidth] = above(hi);
  }

  // The mesh boundary (the root's), in groups of kWidth edges, each edge as often as its count.
  void boundary_groups(const std::vector<BoundaryEdge>& edges) {
    std::vector<std::pair<Vec3, Vec3>> directed;
    for (const BoundaryEdge& e : edges)
      for (int64_t k = 0; k < std::llabs(e.count); ++k) directed.emplace_back(load3(v_ + 3 * e.lo), load3(v_ + 3 * e.hi));
    const size_t groups = (directed.size() + kWidth - 1) / kWidth;
    out_.boundary.assign(5 * kWidth * groups, 0.0f);
    for (size_t i = 0; i < groups * kWidth; ++i) {
      float* lane = &out_.boundary[5 * kWidth * (i / kWidth) + i % kWidth];
      if (i >= directed.size()) {
        for (int d = 0; d < 3; ++d) lane[d * kWidth] = INFINITY;
        continue;
      }
      const Vec3 a = (1.0 / out_.scale) * (directed[i].first - load3(out_.origin));
      const Vec3 b = (1.0 / out_.scale) * (directed[i].second - load3(out_.origin));
      const Vec3 mid = 0.5 * (a + b);
      const double length = norm(b - a);
      for (int d = 0; d < 3; ++d) lane[d * kWidth] = static_cast<float>((&mid.x)[d]);
      lane[3 * kWidth] = above(0.5 * length);
      lane[4 * kWidth] = above(length);
    }
  }

  // Gives a leaf's triangles the next pack of slots; returns its first slot.
  int32_t leaf_slots(const BinaryNode& x) {
    const auto first = static_cast<int32_t>(out_.order.size());
    out_.order.resize(out_.order.size() + kWidth, -1);
    out_.packs.resize(out_.packs.size() + kPackRows * kWidth, 0.0f);
    float* pack = &out_.packs[kPackRows * static_cast<size_t>(first)];
    for (int64_t s = x.begin; s < x.end; ++s) {
      const int64_t t = order_[s];
      const int k = static_cast<int>(s - x.begin);
      out_.order[first + k] = t;
      Vec3 v[3];
      for (int i = 0; i < 3; ++i) v[i] = (1.0 / out_.scale) * (vertex(t, i) - load3(out_.origin));
      const Vec3 n = area_[t] > 0.0 ? (1.0 / area_[t]) * load3(&normal_[3 * t]) : Vec3{0.0, 0.0, 0.0};
      auto row = [&](int r, Vec3 x) {
        for (int d = 0; d < 3; ++d) pack[(r + d) * kWidth + k] = static_cast<float>((&x.x)[d]);
      };
      row(0, v[0]);
      row(24, n);
      for (int i = 0; i < 3; ++i) {
        const Vec3 e = v[(i + 1) % 3] - v[i];
        const double e2 = dot(e, e);
        row(3 + 3 * i, e);
        // (Capped: an edge too short for float32 gets a large finite factor, not inf, so that t
        // in pack_distance2 is never inf * 0.)
        pack[(12 + i) * kWidth + k] = e2 > 0.0 ? static_cast<float>(std::min(1.0 / e2, double{FLT_MAX})) : 0.0f;
        row(15 + 3 * i, cross(n, e));
      }
      pack[27 * kWidth + k] = distance_only_[t] ? 0.0f : 1.0f;
    }
    return first;
  }

  // Where to split [begin, end) along `axis`: with `sah`, the binned surface area heuristic (the
  // boundary minimising count times box area summed over the two sides); the median without it or
  // when the heuristic cannot separate the centroids.
  int64_t split(int64_t begin, int64_t end, int axis, const double* cbox, bool sah) {
    constexpr int kBins = 16;
    int64_t* order = order_.data();
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
  std::vector<int64_t> order_;
  std::vector<double> area_, centroid_, normal_;
  std::vector<BinaryNode> nodes_;
  std::vector<const std::vector<BoundaryEdge>*> slot_edges_;  // per child slot of the 4-wide nodes
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
  return Builder(vertices, num_vertices, faces, num_faces, distance_only).run();
}

}  // namespace fastsdf::msdf
