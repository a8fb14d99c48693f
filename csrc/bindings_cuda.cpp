// fastsdf._cuda: the CUDA kernels. Device pointers, a CUDA stream handle and the index of the device
// they belong to in, as integers, so the module needs neither torch nor a GPU to build; the caller
// owns every allocation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/cuda_device.h"
#include "marching_cubes/marching_cubes.h"
#include "marching_cubes/tables.h"
#include "mesh_sdf/mesh_sdf.h"

// The toolkit's CUDART_VERSION (e.g. 12040 for 12.4) as text in the binary, where fastsdf finds it
// when the module cannot even load (fastsdf/_cuda_driver.py).
#define FASTSDF_STRINGIFY(x) #x
#define FASTSDF_TEXT(x) FASTSDF_STRINGIFY(x)
constexpr char kToolkitTag[] = "fastsdf-cuda-toolkit=" FASTSDF_TEXT(CUDART_VERSION);

namespace py = pybind11;
using fastsdf::mc::FillArgs;
using fastsdf::mc::Grid;

namespace {

// A mask address of 0 means every cube.
Grid grid_of(std::array<int64_t, 3> shape, std::array<int64_t, 3> strides, uintptr_t cube_mask = 0,
             std::array<int64_t, 3> mask_strides = {0, 0, 0}) {
  Grid g{};
  for (int d = 0; d < 3; ++d) {
    if (shape[d] < 2) throw std::invalid_argument("volume needs at least 2 samples along every axis");
    g.shape[d] = shape[d];
    g.stride[d] = strides[d];
    g.mask.stride[d] = mask_strides[d];
  }
  g.mask.data = reinterpret_cast<const uint8_t*>(cube_mask);
  return g;
}

template <typename Fn>
void dispatch_dtype(int dtype, uintptr_t data, Fn&& fn) {
  if (dtype == 0) return fn(reinterpret_cast<const float*>(data));
  if (dtype == 1) return fn(reinterpret_cast<const double*>(data));
  throw std::invalid_argument("dtype code must be 0 (float32) or 1 (float64)");
}

void* as_stream(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

// Every launch: without the GIL, with the tensors' device current (the stream is that device's).
template <typename Fn>
void launch_on(int device, Fn&& launch) {
  py::gil_scoped_release release;
  fastsdf::DeviceGuard guard(device);
  launch();
  guard.restore();
}

template <typename T>
const T* ptr(uintptr_t address) {
  return reinterpret_cast<const T*>(address);
}

// The mesh, read by name (see mesh_sdf/bvh.h) from any object that has these attributes: each
// array's device address, and the frame's five values (fastsdf.geometry.mesh_bvh.BvhArrays.addresses()).
fastsdf::msdf::MeshView mesh_view(const py::object& mesh, int64_t num_slots, int64_t num_nodes,
                                  int64_t boundary_groups) {
  auto address = [&](const char* name) { return mesh.attr(name).cast<uintptr_t>(); };
  fastsdf::msdf::MeshView m{};
  m.num_nodes = num_nodes;
  m.num_slots = num_slots;
  m.node_box = ptr<float>(address("node_box"));
  m.node_link = ptr<int32_t>(address("node_link"));
  m.node_dipole = ptr<float>(address("node_dipole"));
  m.closing_start = ptr<int64_t>(address("closing_start"));
  m.closing_edges = ptr<double>(address("closing_edges"));
  m.packs = ptr<float>(address("packs"));
  m.triangles = ptr<double>(address("triangles"));
  m.distance_only = ptr<uint8_t>(address("distance_only"));
  m.pseudonormal = ptr<double>(address("pseudonormal"));
  m.boundary = ptr<float>(address("boundary"));
  m.boundary_groups = boundary_groups;
  fastsdf::msdf::set_frame(&m, mesh.attr("frame").cast<std::array<double, 5>>().data());
  return m;
}

// Query points of dtype 0 (float32) or 1 (float64) must be aligned to their item size.
void check_points_aligned(uintptr_t points, int dtype) {
  if (points % (dtype ? sizeof(double) : sizeof(float)) != 0)
    throw std::invalid_argument("points must be aligned to their item size");
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastsdf CUDA kernels (raw device pointers, no torch)";
  m.attr("cuda_toolkit") = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
  m.attr("toolkit_tag") = kToolkitTag;
  m.def(
      "runtime_status",
      [] {
        int devices = 0;
        const cudaError_t err = cudaGetDeviceCount(&devices);
        static_cast<void>(cudaGetLastError());  // so that no later launch check reports it again
        return py::make_tuple(static_cast<int>(err), std::string(cudaGetErrorName(err)), devices);
      },
      "(error code, error name, device count) of the first CUDA runtime call: cudaErrorInsufficientDriver "
      "(35) when the driver is older than the toolkit this module was built with needs.");
  m.attr("segment") = fastsdf::mc::kSegment;
  m.def("segments_per_row", &fastsdf::mc::segments_per_row, py::arg("n"));
  m.def("mc_tables", [] {
    const auto flat = fastsdf::mc::flat_tables();
    return py::array_t<uint8_t>(static_cast<py::ssize_t>(flat.size()), flat.data());
  }, "The marching cubes tables, to copy once to each device.");
  m.def(
      "mc_count",
      [](uintptr_t data, int dtype, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides,
         double level, uintptr_t tables, uintptr_t counts, uintptr_t nonfinite, uintptr_t stream,
         int device, uintptr_t cube_mask, std::array<int64_t, 3> mask_strides) {
        const Grid g = grid_of(shape, strides, cube_mask, mask_strides);
        dispatch_dtype(dtype, data, [&](auto ptr) {
          launch_on(device, [&] {
            fastsdf::mc::count_cuda(ptr, g, level, reinterpret_cast<const uint8_t*>(tables),
                                    reinterpret_cast<int32_t*>(counts), reinterpret_cast<int32_t*>(nonfinite),
                                    as_stream(stream));
          });
        });
      },
      py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("strides"), py::arg("level"),
      py::arg("tables"), py::arg("counts"), py::arg("nonfinite"), py::arg("stream"), py::arg("device"), py::arg("cube_mask") = 0,
      py::arg("mask_strides") = std::array<int64_t, 3>{0, 0, 0},
      "Per segment counts (3, segments) int32: edge vertices, triangles, centre vertices.");
  m.def(
      "mc_fill",
      [](uintptr_t data, int dtype, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides,
         double level, uintptr_t tables, uintptr_t counts, uintptr_t offsets,
         std::pair<int64_t, int64_t> vertex_layers,
         std::pair<int64_t, int64_t> cube_layers, int64_t vertex_base, std::array<int64_t, 3> index_offset,
         std::array<double, 3> origin, std::array<double, 3> spacing, uintptr_t verts,
         int64_t vertex_capacity, uintptr_t faces, int64_t triangle_capacity, uintptr_t stream,
         int device, uintptr_t normals, uintptr_t values, uintptr_t cube_mask, std::array<int64_t, 3> mask_strides) {
        const Grid g = grid_of(shape, strides, cube_mask, mask_strides);
        FillArgs a = fastsdf::mc::make_fill_args(level, index_offset, origin, spacing, vertex_layers,
                                                     cube_layers, vertex_base);
        a.vertex_capacity = vertex_capacity;
        a.triangle_capacity = triangle_capacity;
        a.verts = reinterpret_cast<float*>(verts);
        a.faces = reinterpret_cast<int64_t*>(faces);
        a.normals = reinterpret_cast<float*>(normals);
        a.values = reinterpret_cast<float*>(values);
        dispatch_dtype(dtype, data, [&](auto ptr) {
          launch_on(device, [&] {
            fastsdf::mc::fill_cuda(ptr, g, a, reinterpret_cast<const uint8_t*>(tables),
                                   reinterpret_cast<const int32_t*>(counts),
                                   reinterpret_cast<const int64_t*>(offsets), as_stream(stream));
          });
        });
      },
      py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("strides"), py::arg("level"),
      py::arg("tables"), py::arg("counts"), py::arg("offsets"), py::arg("vertex_layers"), py::arg("cube_layers"), py::arg("vertex_base"),
      py::arg("index_offset"), py::arg("origin"), py::arg("spacing"), py::arg("verts"),
      py::arg("vertex_capacity"), py::arg("faces"), py::arg("triangle_capacity"), py::arg("stream"), py::arg("device"),
      py::arg("normals") = 0, py::arg("values") = 0, py::arg("cube_mask") = 0,
      py::arg("mask_strides") = std::array<int64_t, 3>{0, 0, 0},
      "Writes vertices and faces and, where their addresses are not 0, unit gradients (V, 3) and values (V,) "
      "float32; cube_mask (1 byte per cube, mask_strides in elements) drops cubes where it is 0.");
  m.def(
      "msdf_query",
      [](const py::object& mesh, uintptr_t order, int64_t num_slots, int64_t num_nodes, int64_t boundary_groups,
         uintptr_t points, int dtype, int64_t n, int sign, double beta, uintptr_t distance, uintptr_t closest,
         uintptr_t face, uintptr_t barycentric, uintptr_t stream, int device) {
        check_points_aligned(points, dtype);
        const fastsdf::msdf::MeshView view = mesh_view(mesh, num_slots, num_nodes, boundary_groups);
        const fastsdf::msdf::QueryOut out{reinterpret_cast<double*>(distance), reinterpret_cast<double*>(closest),
                                          reinterpret_cast<int64_t*>(face), reinterpret_cast<double*>(barycentric)};
        dispatch_dtype(dtype, points, [&](auto p) {
          launch_on(device, [&] {
            fastsdf::msdf::query_cuda(view, ptr<int64_t>(order), p, n, static_cast<fastsdf::msdf::Sign>(sign), beta,
                                      out, as_stream(stream));
          });
        });
      },
      py::arg("mesh"), py::arg("order"), py::arg("num_slots"), py::arg("num_nodes"),
      py::arg("boundary_groups"), py::arg("points"),
      py::arg("dtype"), py::arg("n"), py::arg("sign"), py::arg("beta"), py::arg("distance"), py::arg("closest"),
      py::arg("face"), py::arg("barycentric"), py::arg("stream"), py::arg("device"),
      "Distances (float64) and, where the addresses are not 0, closest points, face ids and barycentrics.");
  m.def(
      "msdf_winding",
      [](const py::object& mesh, int64_t num_slots, int64_t num_nodes, int64_t boundary_groups, uintptr_t points,
         int dtype, int64_t n, bool exact, double beta, uintptr_t out, uintptr_t stream, int device) {
        check_points_aligned(points, dtype);
        const fastsdf::msdf::MeshView view = mesh_view(mesh, num_slots, num_nodes, boundary_groups);
        dispatch_dtype(dtype, points, [&](auto p) {
          launch_on(device, [&] {
            fastsdf::msdf::winding_cuda(view, p, n, exact, beta, reinterpret_cast<double*>(out), as_stream(stream));
          });
        });
      },
      py::arg("mesh"), py::arg("num_slots"), py::arg("num_nodes"), py::arg("boundary_groups"),
      py::arg("points"), py::arg("dtype"),
      py::arg("n"), py::arg("exact"), py::arg("beta"), py::arg("out"), py::arg("stream"), py::arg("device"));
}
