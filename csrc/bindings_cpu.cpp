// fastsdf._C: the CPU kernels. NumPy buffers in and out, no torch, the GIL released while working.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <tuple>

#include "common/buffers.h"
#include "marching_cubes/marching_cubes.h"

namespace py = pybind11;
using fastsdf::mc::FillArgs;
using fastsdf::mc::Grid;

namespace {

Grid grid_of(const py::array& volume) {
  const auto s = fastsdf::shape_and_strides_3d(volume, "volume");
  Grid g{};
  for (int d = 0; d < 3; ++d) {
    g.shape[d] = s[d];
    g.stride[d] = s[3 + d];
  }
  if (g.shape[0] < 2 || g.shape[1] < 2 || g.shape[2] < 2)
    throw std::invalid_argument("volume needs at least 2 samples along every axis");
  return g;
}

template <typename Fn>
auto dispatch_dtype(const py::array& volume, Fn&& fn) {
  if (py::isinstance<py::array_t<float>>(volume)) return fn(static_cast<const float*>(volume.data()));
  if (py::isinstance<py::array_t<double>>(volume)) return fn(static_cast<const double*>(volume.data()));
  throw std::invalid_argument("volume must be float32 or float64");
}

py::tuple mc_count(const py::array& volume, double level) {
  const Grid g = grid_of(volume);
  py::array_t<int64_t> vertex_counts(g.shape[0]);
  py::array_t<int64_t> triangle_counts(g.shape[0] - 1);
  py::array_t<int64_t> centre_counts(g.shape[0] - 1);
  int64_t* vc = vertex_counts.mutable_data();
  int64_t* tc = triangle_counts.mutable_data();
  int64_t* cc = centre_counts.mutable_data();
  const bool finite = dispatch_dtype(volume, [&](auto data) {
    py::gil_scoped_release release;
    return fastsdf::mc::count_cpu(data, g, level, vc, tc, cc);
  });
  return py::make_tuple(vertex_counts, triangle_counts, centre_counts, finite);
}

void mc_fill(const py::array& volume, double level, const py::array& vertex_offsets,
             const py::array& triangle_offsets, const py::array& centre_offsets,
             std::pair<int64_t, int64_t> vertex_layers,
             std::pair<int64_t, int64_t> cube_layers, int64_t vertex_base,
             std::array<int64_t, 3> index_offset, std::array<double, 3> origin,
             std::array<double, 3> spacing, py::array verts, py::array faces) {
  const Grid g = grid_of(volume);
  FillArgs a = fastsdf::mc::make_fill_args(level, index_offset, origin, spacing, vertex_layers,
                                               cube_layers, vertex_base);
  a.vertex_capacity = verts.ndim() == 2 ? verts.shape(0) : 0;
  a.triangle_capacity = faces.ndim() == 2 ? faces.shape(0) : 0;
  a.verts = fastsdf::contiguous_data<float>(verts, a.vertex_capacity, 3, "verts");
  a.faces = fastsdf::contiguous_data<int64_t>(faces, a.triangle_capacity, 3, "faces");
  const int64_t* vo = fastsdf::vector_data<int64_t>(vertex_offsets, g.shape[0], "vertex_offsets");
  const int64_t* to = fastsdf::vector_data<int64_t>(triangle_offsets, g.shape[0] - 1, "triangle_offsets");
  const int64_t* co = fastsdf::vector_data<int64_t>(centre_offsets, g.shape[0] - 1, "centre_offsets");
  dispatch_dtype(volume, [&](auto data) {
    py::gil_scoped_release release;
    fastsdf::mc::fill_cpu(data, g, a, vo, to, co);
    return 0;
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastsdf CPU kernels (C++17, OpenMP)";
  m.def("mc_count", &mc_count, py::arg("volume"), py::arg("level"),
        "Edge vertices per point layer, triangles and centre vertices per cube layer, and whether all values are finite.");
  m.def("mc_fill", &mc_fill, py::arg("volume"), py::arg("level"), py::arg("vertex_offsets"),
        py::arg("triangle_offsets"), py::arg("centre_offsets"), py::arg("vertex_layers"), py::arg("cube_layers"),
        py::arg("vertex_base"), py::arg("index_offset"), py::arg("origin"), py::arg("spacing"),
        py::arg("verts"), py::arg("faces"), "Writes the vertices and faces counted by mc_count.");
#ifdef _OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
}
