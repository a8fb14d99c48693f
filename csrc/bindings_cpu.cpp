// fastsdf._C: the CPU kernels. NumPy buffers in and out, no torch, the GIL released while working.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <tuple>

#include "common/buffers.h"
#include "marching_cubes/marching_cubes.h"
#include "marching_squares/marching_squares.h"
#include "mesh_sdf/bvh_build.h"
#include "mesh_sdf/mesh_sdf.h"
#include "siren/siren.h"

namespace py = pybind11;
using fastsdf::mc::FillArgs;
using fastsdf::mc::Grid;

namespace {

// The volume's grid and, unless cube_mask is None, the mask of its cubes: 1-byte (bool or uint8),
// one less than the volume along every axis, any strides.
Grid grid_of(const py::array& volume, const py::object& cube_mask = py::none()) {
  const auto s = fastsdf::shape_and_strides_3d(volume, "volume");
  Grid g{};
  for (int d = 0; d < 3; ++d) {
    g.shape[d] = s[d];
    g.stride[d] = s[3 + d];
  }
  if (g.shape[0] < 2 || g.shape[1] < 2 || g.shape[2] < 2)
    throw std::invalid_argument("volume needs at least 2 samples along every axis");
  // Loads of T through a misaligned pointer are undefined behaviour: the caller realigns.
  if (reinterpret_cast<uintptr_t>(volume.data()) % static_cast<uintptr_t>(volume.itemsize()) != 0)
    throw std::invalid_argument("volume data is not aligned to its dtype: pass an aligned copy");
  if (!cube_mask.is_none()) {
    const auto mask = cube_mask.cast<py::array>();
    const auto m = fastsdf::shape_and_strides_3d(mask, "cube_mask");
    if (mask.itemsize() != 1 || (mask.dtype().kind() != 'b' && mask.dtype().kind() != 'u'))
      throw std::invalid_argument("cube_mask must be bool or uint8");
    for (int d = 0; d < 3; ++d) {
      if (m[d] != g.shape[d] - 1) throw std::invalid_argument("cube_mask must have one cube per axis less than volume");
      g.mask.stride[d] = m[3 + d];
    }
    g.mask.data = static_cast<const uint8_t*>(mask.data());
  }
  return g;
}

// A writeable float32 array of `rows` x `cols` (cols 1: a vector), or null for None.
float* optional_output(py::object out, int64_t rows, int64_t cols, const char* name) {
  if (out.is_none()) return nullptr;
  auto a = out.cast<py::array>();
  if (cols == 1) {
    if (!a.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
    return const_cast<float*>(fastsdf::vector_data<float>(a, rows, name));
  }
  return fastsdf::contiguous_data<float>(a, rows, cols, name);
}

template <typename Fn>
auto dispatch_dtype(const py::array& volume, Fn&& fn) {
  if (py::isinstance<py::array_t<float>>(volume)) return fn(static_cast<const float*>(volume.data()));
  if (py::isinstance<py::array_t<double>>(volume)) return fn(static_cast<const double*>(volume.data()));
  throw std::invalid_argument("volume must be float32 or float64");
}

// The above-bits cache of a volume of grid g (see count_cpu), or null for None: a writeable,
// contiguous uint64 vector of exactly above_cache_words(shape) words.
uint64_t* above_cache_of(const py::object& cache, const Grid& g) {
  if (cache.is_none()) return nullptr;
  auto a = cache.cast<py::array>();
  if (!a.writeable()) throw std::invalid_argument("above_bits must be writeable");
  const auto words = static_cast<int64_t>(fastsdf::mc::above_cache_words(g.shape));
  return const_cast<uint64_t*>(fastsdf::vector_data<uint64_t>(a, words, "above_bits"));
}

py::tuple mc_count(const py::array& volume, double level, const py::object& cube_mask,
                   const py::object& above_bits) {
  const Grid g = grid_of(volume, cube_mask);
  uint64_t* cache = above_cache_of(above_bits, g);
  py::array_t<int64_t> vertex_counts(g.shape[0]);
  py::array_t<int64_t> triangle_counts(g.shape[0] - 1);
  py::array_t<int64_t> centre_counts(g.shape[0] - 1);
  int64_t* vc = vertex_counts.mutable_data();
  int64_t* tc = triangle_counts.mutable_data();
  int64_t* cc = centre_counts.mutable_data();
  const bool finite = dispatch_dtype(volume, [&](auto data) {
    py::gil_scoped_release release;
    return fastsdf::mc::count_cpu(data, g, level, vc, tc, cc, cache);
  });
  return py::make_tuple(vertex_counts, triangle_counts, centre_counts, finite);
}

void mc_fill(const py::array& volume, double level, const py::array& vertex_offsets,
             const py::array& triangle_offsets, const py::array& centre_offsets,
             std::pair<int64_t, int64_t> vertex_layers,
             std::pair<int64_t, int64_t> cube_layers, int64_t vertex_base,
             std::array<int64_t, 3> index_offset, std::array<double, 3> origin,
             std::array<double, 3> spacing, py::array verts, py::array faces, py::object normals,
             py::object values, const py::object& cube_mask, const py::object& above_bits) {
  const Grid g = grid_of(volume, cube_mask);
  const uint64_t* cache = above_cache_of(above_bits, g);
  FillArgs a = fastsdf::mc::make_fill_args(level, index_offset, origin, spacing, vertex_layers,
                                               cube_layers, vertex_base);
  a.vertex_capacity = verts.ndim() == 2 ? verts.shape(0) : 0;
  a.triangle_capacity = faces.ndim() == 2 ? faces.shape(0) : 0;
  a.verts = fastsdf::contiguous_data<float>(verts, a.vertex_capacity, 3, "verts");
  a.faces = fastsdf::contiguous_data<int64_t>(faces, a.triangle_capacity, 3, "faces");
  a.normals = optional_output(normals, a.vertex_capacity, 3, "normals");
  a.values = optional_output(values, a.vertex_capacity, 1, "values");
  const int64_t* vo = fastsdf::vector_data<int64_t>(vertex_offsets, g.shape[0], "vertex_offsets");
  const int64_t* to = fastsdf::vector_data<int64_t>(triangle_offsets, g.shape[0] - 1, "triangle_offsets");
  const int64_t* co = fastsdf::vector_data<int64_t>(centre_offsets, g.shape[0] - 1, "centre_offsets");
  dispatch_dtype(volume, [&](auto data) {
    py::gil_scoped_release release;
    fastsdf::mc::fill_cpu(data, g, a, vo, to, co, cache);
    return 0;
  });
}

// The 2-D grid of marching squares: at least 2 samples per axis, aligned, whole-element strides.
fastsdf::ms::Grid grid_2d(const py::array& grid) {
  if (grid.ndim() != 2) throw std::invalid_argument("grid must be 2-D");
  fastsdf::ms::Grid g{};
  const auto item = static_cast<int64_t>(grid.itemsize());
  for (int d = 0; d < 2; ++d) {
    g.shape[d] = static_cast<int64_t>(grid.shape(d));
    if (grid.strides(d) % item != 0) throw std::invalid_argument("grid has strides that are not whole elements");
    g.stride[d] = static_cast<int64_t>(grid.strides(d)) / item;
  }
  if (g.shape[0] < 2 || g.shape[1] < 2) throw std::invalid_argument("grid needs at least 2 samples along every axis");
  if (reinterpret_cast<uintptr_t>(grid.data()) % static_cast<uintptr_t>(grid.itemsize()) != 0)
    throw std::invalid_argument("grid data is not aligned to its dtype: pass an aligned copy");
  return g;
}

py::tuple ms_count(const py::array& grid, double level) {
  const auto g = grid_2d(grid);
  py::array_t<int64_t> vertex_counts(g.shape[0]);
  py::array_t<int64_t> segment_counts(g.shape[0] - 1);
  int64_t* vc = vertex_counts.mutable_data();
  int64_t* sc = segment_counts.mutable_data();
  const bool finite = dispatch_dtype(grid, [&](auto data) {
    py::gil_scoped_release release;
    return fastsdf::ms::count_cpu(data, g, level, vc, sc);
  });
  return py::make_tuple(vertex_counts, segment_counts, finite);
}

void ms_fill(const py::array& grid, double level, std::array<double, 2> origin, std::array<double, 2> spacing,
             const py::array& vertex_offsets, const py::array& segment_offsets, py::array verts, py::array segments) {
  const auto g = grid_2d(grid);
  const int64_t nv = verts.ndim() == 2 ? verts.shape(0) : 0;
  const int64_t ns = segments.ndim() == 2 ? segments.shape(0) : 0;
  float* vp = fastsdf::contiguous_data<float>(verts, nv, 2, "verts");
  int64_t* sp = fastsdf::contiguous_data<int64_t>(segments, ns, 2, "segments");
  const int64_t* vo = fastsdf::vector_data<int64_t>(vertex_offsets, g.shape[0], "vertex_offsets");
  const int64_t* so = fastsdf::vector_data<int64_t>(segment_offsets, g.shape[0] - 1, "segment_offsets");
  dispatch_dtype(grid, [&](auto data) {
    py::gil_scoped_release release;
    fastsdf::ms::fill_cpu(data, g, level, origin.data(), spacing.data(), vo, so, vp, nv, sp, ns);
    return 0;
  });
}

template <typename T>
py::array_t<T> to_array(std::vector<T>&& data, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(data));
  py::capsule free(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), free);
}

// The built arrays by the names of bvh_build.h's Bvh, the frame as (origin xyz, scale).
py::dict msdf_build(const py::array& vertices, const py::array& faces, const py::array& distance_only) {
  const int64_t nv = vertices.ndim() == 2 ? vertices.shape(0) : -1;
  const int64_t nf = faces.ndim() == 2 ? faces.shape(0) : -1;
  if (nv < 0 || nf < 0) throw std::invalid_argument("vertices and faces must be 2-D");
  const double* v = fastsdf::array_data<double>(vertices, {nv, 3}, "vertices");
  const int64_t* f = fastsdf::array_data<int64_t>(faces, {nf, 3}, "faces");
  const uint8_t* d = fastsdf::vector_data<uint8_t>(distance_only, nf, "distance_only");
  fastsdf::msdf::Bvh bvh;
  {
    py::gil_scoped_release release;
    bvh = fastsdf::msdf::build_bvh(v, nv, f, nf, d);
  }
  constexpr py::ssize_t w = fastsdf::msdf::kWidth;
  const auto nodes = static_cast<py::ssize_t>(bvh.node_link.size() / (3 * w));
  const auto edges = static_cast<py::ssize_t>(bvh.closing_edges.size() / 6);
  const auto slots = static_cast<py::ssize_t>(bvh.order.size());
  std::vector<double> frame{bvh.origin[0], bvh.origin[1], bvh.origin[2], bvh.scale};
  const auto groups = static_cast<py::ssize_t>(bvh.boundary.size() / (5 * w));
  py::dict out;
  out["node_box"] = to_array(std::move(bvh.node_box), {nodes, fastsdf::msdf::kBoxRows, w});
  out["node_link"] = to_array(std::move(bvh.node_link), {nodes, 3, w});
  out["node_dipole"] = to_array(std::move(bvh.node_dipole), {nodes, 16, w});
  out["closing_start"] = to_array(std::move(bvh.closing_start), {w * nodes + 1});
  out["closing_edges"] = to_array(std::move(bvh.closing_edges), {edges, 6});
  out["packs"] = to_array(std::move(bvh.packs), {slots / w, fastsdf::msdf::kPackRows, w});
  out["order"] = to_array(std::move(bvh.order), {slots});
  out["boundary"] = to_array(std::move(bvh.boundary), {groups, 5, w});
  out["frame"] = to_array(std::move(frame), {4});
  return out;
}

// The mesh arrays, read by name (see mesh_sdf/bvh.h) from any object that has them as attributes:
// fastsdf.geometry.mesh_bvh.BvhArrays of NumPy arrays.
fastsdf::msdf::MeshView mesh_view(const py::object& arrays) {
  using fastsdf::msdf::kPackRows;
  using fastsdf::msdf::kWidth;
  auto get = [&](const char* name) { return arrays.attr(name).cast<py::array>(); };
  const py::array node_link = get("node_link"), triangles = get("triangles"), boundary = get("boundary");
  fastsdf::msdf::MeshView m{};
  m.num_nodes = node_link.ndim() == 3 ? node_link.shape(0) : 0;
  m.num_slots = triangles.ndim() == 2 ? triangles.shape(0) : 0;
  if (m.num_nodes < 1 || m.num_slots < 1 || m.num_slots % kWidth) throw std::invalid_argument("mesh arrays: bad tree");
  m.node_box = fastsdf::array_data<float>(get("node_box"), {m.num_nodes, fastsdf::msdf::kBoxRows, kWidth}, "node_box");
  m.node_link = fastsdf::array_data<int32_t>(node_link, {m.num_nodes, 3, kWidth}, "node_link");
  m.node_dipole = fastsdf::array_data<float>(get("node_dipole"), {m.num_nodes, 16, kWidth}, "node_dipole");
  m.closing_start = fastsdf::vector_data<int64_t>(get("closing_start"), kWidth * m.num_nodes + 1, "closing_start");
  const int64_t edges = m.closing_start[kWidth * m.num_nodes];
  m.closing_edges = fastsdf::array_data<double>(get("closing_edges"), {edges, 6}, "closing_edges");
  m.packs = fastsdf::array_data<float>(get("packs"), {m.num_slots / kWidth, kPackRows, kWidth}, "packs");
  m.triangles = fastsdf::array_data<double>(triangles, {m.num_slots, 9}, "triangles");
  m.distance_only = fastsdf::vector_data<uint8_t>(get("distance_only"), m.num_slots, "distance_only");
  m.pseudonormal = fastsdf::array_data<double>(get("pseudonormal"), {m.num_slots, 21}, "pseudonormal");
  m.boundary_groups = boundary.ndim() == 3 ? boundary.shape(0) : -1;
  m.boundary = fastsdf::array_data<float>(boundary, {m.boundary_groups, 5, kWidth}, "boundary");
  fastsdf::msdf::set_frame(&m, fastsdf::vector_data<double>(get("frame"), 5, "frame"));
  return m;
}

template <typename Fn>
auto dispatch_points(const py::array& points, Fn&& fn) {
  if (points.ndim() != 2 || points.shape(1) != 3 || !(points.flags() & py::array::c_style))
    throw std::invalid_argument("points must be a C-contiguous (N, 3) array");
  const int64_t n = points.shape(0);
  // (A C-contiguous NumPy array need not be aligned, e.g. a view at an odd offset into a byte
  // buffer; the Python layer copies those.)
  if (reinterpret_cast<uintptr_t>(points.data()) % points.itemsize() != 0)
    throw std::invalid_argument("points must be aligned to their item size");
  if (py::isinstance<py::array_t<float>>(points)) return fn(static_cast<const float*>(points.data()), n);
  if (py::isinstance<py::array_t<double>>(points)) return fn(static_cast<const double*>(points.data()), n);
  throw std::invalid_argument("points must be float32 or float64");
}

py::tuple msdf_query(const py::object& arrays, const py::array& order, const py::array& points, int sign,
                     double beta, bool with_closest) {
  const fastsdf::msdf::MeshView m = mesh_view(arrays);
  const int64_t* ord = fastsdf::vector_data<int64_t>(order, m.num_slots, "order");
  const int64_t n = points.ndim() == 2 ? points.shape(0) : 0;
  py::array_t<double> distance(n);
  py::object closest = py::none(), face = py::none(), bary = py::none();
  fastsdf::msdf::QueryOut out{distance.mutable_data(), nullptr, nullptr, nullptr};
  if (with_closest) {
    py::array_t<double> c({n, int64_t{3}}), b({n, int64_t{3}});
    py::array_t<int64_t> f(n);
    out.closest = c.mutable_data();
    out.barycentric = b.mutable_data();
    out.face = f.mutable_data();
    closest = c;
    bary = b;
    face = f;
  }
  dispatch_points(points, [&](auto p, int64_t count) {
    py::gil_scoped_release release;
    fastsdf::msdf::query_cpu(m, ord, p, count, static_cast<fastsdf::msdf::Sign>(sign), beta, out);
    return 0;
  });
  return py::make_tuple(distance, closest, face, bary);
}

py::array_t<double> msdf_winding(const py::object& arrays, const py::array& points, bool exact, double beta) {
  const fastsdf::msdf::MeshView m = mesh_view(arrays);
  py::array_t<double> out(points.ndim() == 2 ? points.shape(0) : 0);
  double* o = out.mutable_data();
  dispatch_points(points, [&](auto p, int64_t count) {
    py::gil_scoped_release release;
    fastsdf::msdf::winding_cpu(m, p, count, exact, beta, o);
    return 0;
  });
  return out;
}

// Layers from per-layer weights (out, in) float32 C-contiguous, biases (out,) or None, omegas (None
// for a linear layer); the arrays stay with the lists.
std::vector<fastsdf::siren::LayerSpec> siren_layers(const py::list& weights, const py::list& biases,
                                                    const py::list& omegas) {
  if (weights.size() != biases.size() || weights.size() != omegas.size())
    throw std::invalid_argument("siren: weights, biases and omegas must have one entry per layer");
  std::vector<fastsdf::siren::LayerSpec> layers;
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto w = weights[l].cast<py::array>();
    if (w.ndim() != 2) throw std::invalid_argument("siren: weights must be 2-D");
    const int64_t out = w.shape(0), in = w.shape(1);
    fastsdf::siren::LayerSpec spec{fastsdf::array_data<float>(w, {out, in}, "weight"), nullptr, in, out,
                                   !omegas[l].is_none(), 0.0f};
    if (!biases[l].is_none()) spec.bias = fastsdf::vector_data<float>(biases[l].cast<py::array>(), out, "bias");
    if (spec.sine) spec.omega = omegas[l].cast<float>();
    layers.push_back(spec);
  }
  return layers;
}

fastsdf::siren::PackedNet siren_net(const py::list& weights, const py::list& biases, const py::list& omegas,
                                    int width) {
  return fastsdf::siren::PackedNet(siren_layers(weights, biases, omegas), width);
}

bool siren_holds(const fastsdf::siren::PackedNet& net, const py::list& weights, const py::list& biases,
                 const py::list& omegas) {
  const auto layers = siren_layers(weights, biases, omegas);
  py::gil_scoped_release release;
  return net.holds(layers);
}

// A float32 buffer of exactly `floats` elements, or null for None.
float* tape_data(const py::object& tape, int64_t floats) {
  if (tape.is_none()) return nullptr;
  auto a = tape.cast<py::array>();
  if (!a.writeable()) throw std::invalid_argument("tape must be writeable");
  return const_cast<float*>(fastsdf::vector_data<float>(a, floats, "tape"));
}

void siren_forward(const fastsdf::siren::PackedNet& net, const py::array& x, py::array y, const py::object& jacobian,
                   int64_t grad_columns, const py::object& tape) {
  const int64_t n = x.ndim() == 2 ? x.shape(0) : -1;
  if (n < 0) throw std::invalid_argument("siren: x must be 2-D");
  const float* xp = fastsdf::array_data<float>(x, {n, net.in_features()}, "x");
  float* yp = fastsdf::contiguous_data<float>(y, n, net.out_features(), "y");
  float* jp = nullptr;
  if (!jacobian.is_none()) {
    auto j = jacobian.cast<py::array>();
    if (!j.writeable()) throw std::invalid_argument("jacobian must be writeable");
    jp = const_cast<float*>(fastsdf::array_data<float>(j, {n, net.out_features(), grad_columns}, "jacobian"));
  }
  float* tp = tape_data(tape, net.tape_floats(n, jp != nullptr));
  py::gil_scoped_release release;
  net.forward(xp, n, yp, jp, grad_columns, tp);
}

void siren_backward(const fastsdf::siren::PackedNet& net, const py::array& x, const py::object& dy,
                    const py::object& dj, int64_t grad_columns, const py::list& grad_weights,
                    const py::list& grad_biases, const py::object& dx, const py::object& tape) {
  const int64_t n = x.ndim() == 2 ? x.shape(0) : -1;
  if (n < 0) throw std::invalid_argument("siren: x must be 2-D");
  const float* xp = fastsdf::array_data<float>(x, {n, net.in_features()}, "x");
  const int64_t out = net.out_features();
  const float* dyp = dy.is_none() ? nullptr : fastsdf::array_data<float>(dy.cast<py::array>(), {n, out}, "dy");
  const float* djp =
      dj.is_none() ? nullptr : fastsdf::array_data<float>(dj.cast<py::array>(), {n, out, grad_columns}, "dj");
  auto writable = [](const py::handle& h, std::initializer_list<int64_t> shape, const char* name) -> float* {
    if (h.is_none()) return nullptr;
    auto a = h.cast<py::array>();
    if (!a.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
    return const_cast<float*>(fastsdf::array_data<float>(a, shape, name));
  };
  // One gradient per layer, of its weight's and its bias's exact shapes (the kernel writes them whole).
  const auto shapes = net.layer_shapes();
  if (grad_weights.size() != shapes.size() || grad_biases.size() != shapes.size())
    throw std::invalid_argument("siren: one weight and one bias gradient (or None) per layer");
  std::vector<float*> gw, gb;
  for (size_t l = 0; l < shapes.size(); ++l) {
    const auto [out_l, in_l] = shapes[l];
    gw.push_back(writable(grad_weights[l], {out_l, in_l}, "grad_weight"));
    gb.push_back(writable(grad_biases[l], {out_l}, "grad_bias"));
  }
  float* dxp = writable(dx, {n, net.in_features()}, "dx");
  const float* tp = tape_data(tape, net.tape_floats(n, djp != nullptr));
  py::gil_scoped_release release;
  net.backward(xp, n, dyp, djp, grad_columns, gw, gb, dxp, tp);
}

void siren_sincos(const py::array& z, float omega, py::array s, const py::object& c) {
  const int64_t n = z.ndim() == 1 ? z.shape(0) : -1;
  if (n < 0) throw std::invalid_argument("siren_sincos: z must be 1-D");
  const float* zp = fastsdf::vector_data<float>(z, n, "z");
  float* sp = fastsdf::contiguous_data<float>(s, n, 1, "s");
  float* cp = nullptr;
  if (!c.is_none()) {
    auto ca = c.cast<py::array>();
    cp = fastsdf::contiguous_data<float>(ca, n, 1, "c");
  }
  py::gil_scoped_release release;
  fastsdf::siren::sincos(zp, n, omega, sp, cp);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastsdf CPU kernels (C++17, OpenMP)";
  m.def("mc_count", &mc_count, py::arg("volume"), py::arg("level"), py::arg("cube_mask") = py::none(),
        py::arg("above_bits") = py::none(),
        "Edge vertices per point layer, triangles and centre vertices per cube layer, and whether all values are "
        "finite; fills above_bits (None, or uint64 of mc_above_words(shape)) for mc_fill.");
  m.def("mc_fill", &mc_fill, py::arg("volume"), py::arg("level"), py::arg("vertex_offsets"),
        py::arg("triangle_offsets"), py::arg("centre_offsets"), py::arg("vertex_layers"), py::arg("cube_layers"),
        py::arg("vertex_base"), py::arg("index_offset"), py::arg("origin"), py::arg("spacing"),
        py::arg("verts"), py::arg("faces"), py::arg("normals") = py::none(), py::arg("values") = py::none(),
        py::arg("cube_mask") = py::none(), py::arg("above_bits") = py::none(),
        "Writes the vertices and faces counted by mc_count (and, unless None, unit gradients and values); "
        "above_bits: None, or the array mc_count filled for this volume, level and mask.");
  m.def("mc_above_words", [](std::array<int64_t, 3> shape) { return fastsdf::mc::above_cache_words(shape.data()); },
        py::arg("shape"), "Size in uint64 words of mc_count's above_bits for a volume of this shape.");
  m.def("mc_cpu_path", [] { return fastsdf::mc::cpu_path() == fastsdf::mc::CpuPath::kAvx2 ? "avx2" : "baseline"; },
        "The code mc_count and mc_fill run on this CPU: \"avx2\" (AVX2, BMI1, POPCNT) or \"baseline\".");
  m.def("mc_scratch_bytes", [](std::array<int64_t, 3> shape) { return fastsdf::mc::scratch_bytes_cpu(shape.data()); },
        py::arg("shape"), "Bytes mc_count and mc_fill allocate for a volume of this shape, all threads together.");
  m.def("ms_count", &ms_count, py::arg("grid"), py::arg("level"),
        "Vertices per point row, segments per cell row, and whether all values are finite.");
  m.def("ms_fill", &ms_fill, py::arg("grid"), py::arg("level"), py::arg("origin"), py::arg("spacing"),
        py::arg("vertex_offsets"), py::arg("segment_offsets"), py::arg("verts"), py::arg("segments"),
        "Writes the vertices (V, 2) and segments (S, 2) counted by ms_count at the given offsets.");
  m.def("ms_scratch_bytes", [](std::array<int64_t, 2> shape) { return fastsdf::ms::scratch_bytes_cpu(shape.data()); },
        py::arg("shape"), "Bytes ms_count and ms_fill allocate for a grid of this shape, all threads together.");
  m.def("msdf_build", &msdf_build, py::arg("vertices"), py::arg("faces"), py::arg("distance_only"),
        "BVH arrays by name: node_box, node_link, node_dipole, closing_start, closing_edges, packs, order, boundary, "
        "frame.");
  m.def("msdf_query", &msdf_query, py::arg("mesh"), py::arg("order"), py::arg("points"), py::arg("sign"),
        py::arg("beta"), py::arg("with_closest"),
        "(distance, closest points, face ids, barycentrics); the last three None without with_closest.");
  m.def("msdf_winding", &msdf_winding, py::arg("mesh"), py::arg("points"), py::arg("exact"), py::arg("beta"));
  py::class_<fastsdf::siren::PackedNet>(m, "SirenNet", "A SIREN's weights packed for the fused CPU kernel.")
      .def(py::init(&siren_net), py::arg("weights"), py::arg("biases"), py::arg("omegas"), py::arg("width") = 0)
      .def_property_readonly("vector_width", &fastsdf::siren::PackedNet::vector_width)
      .def_property_readonly("in_features", &fastsdf::siren::PackedNet::in_features)
      .def_property_readonly("out_features", &fastsdf::siren::PackedNet::out_features)
      .def("forward", &siren_forward, py::arg("x"), py::arg("y"), py::arg("jacobian"), py::arg("grad_columns"),
           py::arg("tape") = py::none(),
           "y (N, out) and, unless jacobian is None, dy/dx for the last grad_columns inputs (N, out, grad_columns); "
           "unless tape is None, what backward() reads instead of running the network again.")
      .def("holds", &siren_holds, py::arg("weights"), py::arg("biases"), py::arg("omegas"),
           "Whether it was packed from exactly these layers (sizes, omegas, and the weights and biases bit for bit).")
      .def("tape_floats", &fastsdf::siren::PackedNet::tape_floats, py::arg("n"), py::arg("with_jacobian"))
      .def("backward", &siren_backward, py::arg("x"), py::arg("dy"), py::arg("dj"), py::arg("grad_columns"),
           py::arg("grad_weights"), py::arg("grad_biases"), py::arg("dx"), py::arg("tape") = py::none(),
           "Parameter gradients (and dx unless None) from dy (N, out) and dj (N, out, grad_columns), either None.");
  m.def("siren_sincos", &siren_sincos, py::arg("z"), py::arg("omega"), py::arg("s"), py::arg("c"),
        "s = sin(omega z), c = omega cos(omega z) (unless None): z (N,), s and c (N, 1), float32.");
#ifdef _OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
}
