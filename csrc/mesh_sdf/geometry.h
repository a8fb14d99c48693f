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

FASTSDF_HD double largest_component(Vec3 a) { return fmax(fmax(fabs(a.x), fabs(a.y)), fabs(a.z)); }

// The power of two that takes `largest`, the largest |component| of some differences, into
// [0.5, 1) (capped at 2^1020, below float64's largest): products of the differences times it stay in
// float64's range where theirs would underflow, and the scaling is exact, so every decision made
// on them is unchanged where nothing underflowed.
FASTSDF_HD double unit_scale(double largest) {
  int exponent;
  frexp(largest, &exponent);
  return ldexp(1.0, exponent > -1020 ? -exponent : 1020);
}

// |a - b|, exact also where its square underflows (below about 1e-150 mesh units).
FASTSDF_HD double distance(Vec3 a, Vec3 b) {
  const Vec3 r = a - b;
  const double d2 = dot(r, r);
  if (d2 >= 0x1p-900) return sqrt(d2);
  const double s = unit_scale(largest_component(r));
  return norm(s * r) / s;
}

// Closest point to q on the segment from vertex i (p0) to vertex j (p1) of a triangle.
FASTSDF_HD TrianglePoint on_edge(Vec3 q, Vec3 p0, Vec3 p1, int i, int j) {
  const Vec3 d = p1 - p0, p0q = q - p0;
  const double s = unit_scale(fmax(largest_component(d), largest_component(p0q)));
  const Vec3 sd = s * d;
  const double len2 = dot(sd, sd);
  double t = len2 > 0.0 ? dot(s * p0q, sd) / len2 : 0.0;
  t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
  TrianglePoint r{p0 + t * d, {0.0, 0.0, 0.0}, 0};
  r.bary[i] = 1.0 - t;
  r.bary[j] += t;
  // Edge k joins vertices k and k + 1; i, j are such a pair in either order.
  const int k = (j == (i + 1) % 3) ? i : j;
  r.feature = t <= 0.0 ? kVertex0 + i : (t >= 1.0 ? kVertex0 + j : kEdge0 + k);
  return r;
}

// Closest point to q on the three edges of triangle (a, b, c).
FASTSDF_HD TrianglePoint closest_on_edges(Vec3 q, Vec3 a, Vec3 b, Vec3 c) {
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

// Closest point on triangle (a, b, c) to q, by Voronoi regions (Ericson, Real-Time Collision
// Detection, 5.1.5).
FASTSDF_HD TrianglePoint voronoi_closest(Vec3 q, Vec3 a, Vec3 b, Vec3 c) {
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
  // Only a point some 1e146 triangle sizes away can underflow all three to 0; every point of the
  // triangle is then as close to float64 precision, and the edges give one without dividing by 0.
  const double area2 = va + vb + vc;
  if (!(area2 > 0.0)) return closest_on_edges(q, a, b, c);
  const double denom = 1.0 / area2;
  const double v = vb * denom, w = vc * denom;
  return {a + v * ab + w * ac, {1.0 - v - w, v, w}, kFace};
}

// Below this size (largest |edge component|, mesh units) a triangle's tests run at unit scale.
constexpr double kSmallTriangle = 0x1p-100;

// Closest point on triangle (a, b, c) to q. With `as_edges` (for zero-area triangles) it is the
// closest point on the three edges instead.
FASTSDF_HD TrianglePoint closest_on_triangle(Vec3 q, Vec3 a, Vec3 b, Vec3 c, bool as_edges) {
  if (as_edges) return closest_on_edges(q, a, b, c);
  const Vec3 ab = b - a, ac = c - a;
  const double size = fmax(largest_component(ab), largest_component(ac));
  if (size >= kSmallTriangle) return voronoi_closest(q, a, b, c);
  // The tests multiply four coordinate differences: for a triangle 2^-100 across, products near
  // 2^-400 (a triangle 1e-77 of the mesh's size across reaches subnormals). So the triangle and q
  // are moved to a at the origin and scaled by unit_scale, and the result taken back.
  const double s = unit_scale(fmax(size, largest_component(q - a)));
  TrianglePoint r = voronoi_closest(s * (q - a), Vec3{0.0, 0.0, 0.0}, s * ab, s * ac);
  const Vec3 corner[3] = {a, b, c};
  r.point = r.feature >= kVertex0 ? corner[r.feature - kVertex0] : a + r.bary[1] * ab + r.bary[2] * ac;
  return r;
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
