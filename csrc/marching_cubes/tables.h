// Triangulation tables for marching cubes, derived at start-up from the cube geometry rather than
// typed in: on every face the iso-contour is a set of oriented segments (ambiguous faces resolved by
// the face bits of the key), the segments of the six faces close into loops, and each loop becomes a
// triangle fan. Neighbouring cubes see the same face segments, so the mesh is watertight and
// manifold; the orientation makes triangle normals point towards values above the level.
#pragma once

#include <array>
#include <cstdint>

#include "marching_cubes/cube.h"

namespace fastsdf::mc {

struct Tables {
  // Triangles per key and their edges, three per triangle.
  std::array<uint8_t, kNumKeys> num_triangles{};
  std::array<std::array<uint8_t, 3 * kMaxTriangles>, kNumKeys> triangle_edges{};
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

// Builds one key's triangles. A face edge crossed going (counter-clockwise) from an above corner to a
// below one starts a segment; one crossed from below to above ends it. With the above region on the
// segment's left as seen from outside, the loops wind so that their normals point to it.
inline int triangulate(int cube, int face_bits, uint8_t* out) {
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
    for (int t = 1; t + 1 < n; ++t) {
      out[3 * count + 0] = static_cast<uint8_t>(loop[0]);
      out[3 * count + 1] = static_cast<uint8_t>(loop[t]);
      out[3 * count + 2] = static_cast<uint8_t>(loop[t + 1]);
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
      t.num_triangles[key] =
          static_cast<uint8_t>(triangulate(cube, face_bits & faces, t.triangle_edges[key].data()));
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
    for (int e = 0; e < 3 * kMaxTriangles; ++e)
      flat[kFlatEdges + key * 3 * kMaxTriangles + e] = t.triangle_edges[key][e];
  }
  for (int cube = 0; cube < 256; ++cube) flat[kFlatAmbiguous + cube] = t.ambiguous_faces[cube];
  return flat;
}

}  // namespace fastsdf::mc
