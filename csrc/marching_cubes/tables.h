// Triangulation tables for marching cubes, derived at start-up from the cube geometry rather than
// typed in: on every face the iso-contour is a set of oriented segments (ambiguous faces resolved by
// the face bits of the key), the segments of the six faces close into loops, and each loop is
// triangulated without diagonals in the cube's faces. A diagonal in a face could be drawn by the
// neighbouring cube as well, leaving an edge with four triangles; the few loops (tunnels through
// two or more joined ambiguous faces) that cannot avoid one are fanned around a vertex at the mean
// of their edge vertices instead, as scikit-image's Lewiner tables do. Neighbouring cubes see the same face segments, so the mesh is watertight and
// manifold; the orientation makes triangle normals point towards values above the level.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>

#include "marching_cubes/cube.h"

namespace fastsdf::mc {

struct Tables {
  // Triangles per key and their edges, three per triangle.
  std::array<uint8_t, kNumKeys> num_triangles{};
  std::array<std::array<uint8_t, 3 * kMaxTriangles>, kNumKeys> triangle_edges{};
  // Per key: the edges whose vertices the centre vertex averages, 0 when there is none.
  std::array<uint16_t, kNumKeys> centre_edges{};
  // Per cube index: bit f set when face f is ambiguous and the key's face bit f matters.
  std::array<uint8_t, 256> ambiguous_faces{};
};

namespace detail {

inline int edge_between(int c0, int c1) {
  const int diff = c0 ^ c1;
  const int axis = diff == 1 ? 0 : (diff == 2 ? 1 : 2);
  const int start = c0 < c1 ? c0 : c1;
  // n is the start corner with the `axis` bit squeezed out.
  const int low = start & ((1 << axis) - 1);
  const int high = (start >> (axis + 1)) << axis;
  return 4 * axis + (high | low);
}

// Twice the midpoint of edge e, so that squared distances between midpoints are integers.
inline void edge_midpoint2(int e, int out[3]) {
  const int c = edge_start_corner(e);
  for (int d = 0; d < 3; ++d) out[d] = 2 * corner_offset(c, d) + (d == edge_axis(e) ? 1 : 0);
}

inline bool edges_share_face(int a, int b) {
  for (int f = 0; f < kNumFaces; ++f) {
    bool has_a = false, has_b = false;
    for (int m = 0; m < 4; ++m) {
      const int e = edge_between(face_corner(f, m), face_corner(f, (m + 1) % 4));
      has_a |= e == a;
      has_b |= e == b;
    }
    if (has_a && has_b) return true;
  }
  return false;
}

// Triangulates one loop (edge ids in loop order) into out, as the polygon triangulation with the
// smallest sum of squared diagonal lengths among those whose diagonals never lie in a cube face
// (ties go to the smallest split vertex); returns -1 if there is none.
inline int triangulate_loop(const int* loop, int n, uint8_t* out) {
  constexpr int kForbidden = 1 << 20;
  int diag[kNumEdges][kNumEdges];
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      if (j == i + 1 || i == j + 1 || (i == 0 && j == n - 1) || (j == 0 && i == n - 1)) {
        diag[i][j] = 0;
      } else if (edges_share_face(loop[i], loop[j])) {
        diag[i][j] = kForbidden;
      } else {
        int a[3], b[3];
        edge_midpoint2(loop[i], a);
        edge_midpoint2(loop[j], b);
        diag[i][j] = (a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]);
      }
    }
  // cost[i][j], split[i][j]: best triangulation of the sub-polygon i..j closed by (i, j).
  int cost[kNumEdges][kNumEdges] = {};
  int split[kNumEdges][kNumEdges] = {};
  for (int len = 2; len < n; ++len)
    for (int i = 0; i + len < n; ++i) {
      const int j = i + len;
      cost[i][j] = -1;
      for (int k = i + 1; k < j; ++k) {
        const int c = cost[i][k] + cost[k][j] + diag[i][k] + diag[k][j];
        if (cost[i][j] < 0 || c < cost[i][j]) {
          cost[i][j] = c;
          split[i][j] = k;
        }
      }
    }
  if (cost[0][n - 1] >= kForbidden) return -1;
  // Pre-order: a sub-polygon's triangle, then its left part, then its right part.
  int stack[2 * kNumEdges][2];
  int top = 0, count = 0;
  stack[top][0] = 0;
  stack[top++][1] = n - 1;
  while (top > 0) {
    --top;
    const int i = stack[top][0], j = stack[top][1];
    if (j - i < 2) continue;
    const int k = split[i][j];
    out[3 * count + 0] = static_cast<uint8_t>(loop[i]);
    out[3 * count + 1] = static_cast<uint8_t>(loop[k]);
    out[3 * count + 2] = static_cast<uint8_t>(loop[j]);
    ++count;
    stack[top][0] = k;
    stack[top++][1] = j;
    stack[top][0] = i;
    stack[top++][1] = k;
  }
  return count;
}

// Builds one key's triangles. A face edge crossed going (counter-clockwise) from an above corner to a
// below one starts a segment; one crossed from below to above ends it. With the above region on the
// segment's left as seen from outside, the loops wind so that their normals point to it.
inline int triangulate(int cube, int face_bits, uint8_t* out, uint16_t* centre_edges) {
  int next[kNumEdges];
  for (int& n : next) n = -1;
  for (int f = 0; f < kNumFaces; ++f) {
    int corner[4];
    bool above[4];
    for (int m = 0; m < 4; ++m) {
      corner[m] = face_corner(f, m);
      above[m] = (cube >> corner[m]) & 1;
    }
    int edge[4];
    int crossings = 0;
    for (int m = 0; m < 4; ++m) {
      edge[m] = edge_between(corner[m], corner[(m + 1) % 4]);
      crossings += above[m] != above[(m + 1) % 4];
    }
    if (crossings == 2) {
      int start = -1, end = -1;
      for (int m = 0; m < 4; ++m) {
        if (above[m] && !above[(m + 1) % 4]) start = edge[m];
        if (!above[m] && above[(m + 1) % 4]) end = edge[m];
      }
      next[start] = end;
    } else if (crossings == 4) {
      const bool connected = (face_bits >> f) & 1;
      for (int m = 0; m < 4; ++m) {
        const int prev = (m + 3) % 4;
        if (!connected && above[m]) next[edge[m]] = edge[prev];       // cut off above corner m
        if (connected && !above[m]) next[edge[prev]] = edge[m];       // cut off below corner m
      }
    }
  }
  int count = 0;
  bool used[kNumEdges] = {};
  for (int first = 0; first < kNumEdges; ++first) {
    if (next[first] < 0 || used[first]) continue;
    int loop[kNumEdges];
    int n = 0;
    for (int e = first; !used[e]; e = next[e]) {
      used[e] = true;
      loop[n++] = e;
    }
    const int made = triangulate_loop(loop, n, out + 3 * count);
    if (made >= 0) {
      count += made;
      continue;
    }
    if (*centre_edges) throw std::logic_error("marching cubes tables: two loops of one cube need a centre");
    for (int m = 0; m < n; ++m) {
      *centre_edges = static_cast<uint16_t>(*centre_edges | (1 << loop[m]));
      out[3 * count + 0] = static_cast<uint8_t>(kCentre);
      out[3 * count + 1] = static_cast<uint8_t>(loop[m]);
      out[3 * count + 2] = static_cast<uint8_t>(loop[(m + 1) % n]);
      ++count;
    }
  }
  return count;
}

inline Tables build_tables() {
  Tables t;
  for (int cube = 0; cube < 256; ++cube) {
    uint8_t faces = 0;
    for (int f = 0; f < kNumFaces; ++f) {
      const int a = (cube >> face_corner(f, 0)) & 1, b = (cube >> face_corner(f, 1)) & 1;
      const int c = (cube >> face_corner(f, 2)) & 1, d = (cube >> face_corner(f, 3)) & 1;
      if (a == c && b == d && a != b) faces |= static_cast<uint8_t>(1 << f);
    }
    t.ambiguous_faces[cube] = faces;
    for (int face_bits = 0; face_bits < (1 << kNumFaces); ++face_bits) {
      const int key = (face_bits << 8) | cube;
      t.num_triangles[key] = static_cast<uint8_t>(
          triangulate(cube, face_bits & faces, t.triangle_edges[key].data(), &t.centre_edges[key]));
    }
  }
  return t;
}

}  // namespace detail

inline const Tables& tables() {
  static const Tables instance = detail::build_tables();
  return instance;
}

// The layout of kFlat* in cube.h, for copying to a device.
inline std::array<uint8_t, kFlatBytes> flat_tables() {
  const Tables& t = tables();
  std::array<uint8_t, kFlatBytes> flat{};
  for (int key = 0; key < kNumKeys; ++key) {
    flat[key] = t.num_triangles[key];
    flat[kFlatCentre + 2 * key] = static_cast<uint8_t>(t.centre_edges[key] & 0xff);
    flat[kFlatCentre + 2 * key + 1] = static_cast<uint8_t>(t.centre_edges[key] >> 8);
    for (int e = 0; e < 3 * kMaxTriangles; ++e)
      flat[kFlatEdges + key * 3 * kMaxTriangles + e] = t.triangle_edges[key][e];
  }
  for (int cube = 0; cube < 256; ++cube) flat[kFlatAmbiguous + cube] = t.ambiguous_faces[cube];
  return flat;
}

}  // namespace fastsdf::mc
