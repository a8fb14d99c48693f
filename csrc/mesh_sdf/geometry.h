// Point-triangle geometry in float64, shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace fastsdf::msdf {

struct Vec3 {
  double x, y, z;
};

FASTSDF_HD Vec3 load3(const double* p) { return {p[0], p[1], p[2]}; }
FASTSDF_HD Vec3 operator-(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
FASTSDF_HD Vec3 operator+(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
FASTSDF_HD Vec3 operator*(double s, Vec3 a) { return {s * a.x, s * a.y, s * a.z}; }
FASTSDF_HD double dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
FASTSDF_HD Vec3 cross(Vec3 a, Vec3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
FASTSDF_HD double norm(Vec3 a) { return sqrt(dot(a, a)); }

// Which part of a triangle a closest point lies on: its interior, edge k (from vertex k to vertex
// k + 1 mod 3), or vertex k. Pseudonormals are looked up by this.
enum Feature : int { kFace = 0, kEdge0 = 1, kVertex0 = 4 };

struct TrianglePoint {
  Vec3 point;
  double bary[3];  // point = bary[0] a + bary[1] b + bary[2] c
  int feature;
};

FASTSDF_HD TrianglePoint at_vertex(Vec3 p, int k) {
  TrianglePoint r{p, {0.0, 0.0, 0.0}, kVertex0 + k};
  r.bary[k] = 1.0;
  return r;
}

// Closest point to q on the segment from vertex i (p0) to vertex j (p1) of a triangle.
FASTSDF_HD TrianglePoint on_edge(Vec3 q, Vec3 p0, Vec3 p1, int i, int j) {
  const Vec3 d = p1 - p0;
  const double len2 = dot(d, d);
  double t = len2 > 0.0 ? dot(q - p0, d) / len2 : 0.0;
  t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
  TrianglePoint r{p0 + t * d, {0.0, 0.0, 0.0}, 0};
  r.bary[i] = 1.0 - t;
  r.bary[j] += t;
  // Edge k joins vertices k and k + 1; i, j are such a pair in either order.
  const int k = (j == (i + 1) % 3) ? i : j;
  r.feature = t <= 0.0 ? kVertex0 + i : (t >= 1.0 ? kVertex0 + j : kEdge0 + k);
  return r;
}

// Closest point on triangle (a, b, c) to q, by Voronoi regions (Ericson, Real-Time Collision
// Detection, 5.1.5). With `as_edges` (for zero-area triangles) it is the closest point on the three
// edges instead.
FASTSDF_HD TrianglePoint closest_on_triangle(Vec3 q, Vec3 a, Vec3 b, Vec3 c, bool as_edges) {
  if (as_edges) {
    TrianglePoint best = on_edge(q, a, b, 0, 1);
    double best_d = dot(q - best.point, q - best.point);
    const TrianglePoint bc = on_edge(q, b, c, 1, 2);
    const double d_bc = dot(q - bc.point, q - bc.point);
    if (d_bc < best_d) {
      best = bc;
      best_d = d_bc;
    }
    const TrianglePoint ca = on_edge(q, c, a, 2, 0);
    if (dot(q - ca.point, q - ca.point) < best_d) best = ca;
    return best;
  }
  const Vec3 ab = b - a, ac = c - a, ap = q - a;
  const double d1 = dot(ab, ap), d2 = dot(ac, ap);
  if (d1 <= 0.0 && d2 <= 0.0) return at_vertex(a, 0);
  const Vec3 bp = q - b;
  const double d3 = dot(ab, bp), d4 = dot(ac, bp);
  if (d3 >= 0.0 && d4 <= d3) return at_vertex(b, 1);
  const double vc = d1 * d4 - d3 * d2;
  if (vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0) {
    const double v = d1 / (d1 - d3);
    return {a + v * ab, {1.0 - v, v, 0.0}, kEdge0 + 0};
  }
  const Vec3 cp = q - c;
  const double d5 = dot(ab, cp), d6 = dot(ac, cp);
  if (d6 >= 0.0 && d5 <= d6) return at_vertex(c, 2);
  const double vb = d5 * d2 - d1 * d6;
  if (vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0) {
    const double w = d2 / (d2 - d6);
    return {a + w * ac, {1.0 - w, 0.0, w}, kEdge0 + 2};
  }
  const double va = d3 * d6 - d5 * d4;
  if (va <= 0.0 && (d4 - d3) >= 0.0 && (d5 - d6) >= 0.0) {
    const double w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
    return {b + w * (c - b), {0.0, 1.0 - w, w}, kEdge0 + 1};
  }
  const double denom = 1.0 / (va + vb + vc);
  const double v = vb * denom, w = vc * denom;
  return {a + v * ab + w * ac, {1.0 - v - w, v, w}, kFace};
}

// Signed solid angle of triangle (a, b, c) seen from q, over 4 pi (Van Oosterom and Strackee):
// positive when q sees the triangle counter-clockwise, i.e. lies behind its normal.
FASTSDF_HD double solid_angle_fraction(Vec3 q, Vec3 a, Vec3 b, Vec3 c) {
  const Vec3 x = a - q, y = b - q, z = c - q;
  const double lx = norm(x), ly = norm(y), lz = norm(z);
  const double num = dot(x, cross(y, z));
  const double den = lx * ly * lz + dot(x, y) * lz + dot(x, z) * ly + dot(y, z) * lx;
  return atan2(num, den) / (2.0 * 3.14159265358979323846);
}

}  // namespace fastsdf::msdf
