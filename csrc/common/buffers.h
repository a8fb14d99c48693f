// Helpers for reading NumPy arrays passed to the CPU bindings without copying them.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace fastsdf {

namespace py = pybind11;

// Shape and element strides of a 3-D array; its data pointer stays with the caller.
inline std::array<int64_t, 6> shape_and_strides_3d(const py::array& a, const char* name) {
  if (a.ndim() != 3) throw std::invalid_argument(std::string(name) + " must be 3-D");
  std::array<int64_t, 6> out{};
  const auto item = static_cast<int64_t>(a.itemsize());
  for (int d = 0; d < 3; ++d) {
    out[d] = static_cast<int64_t>(a.shape(d));
    if (a.strides(d) % item != 0)
      throw std::invalid_argument(std::string(name) + " has strides that are not whole elements");
    out[3 + d] = static_cast<int64_t>(a.strides(d)) / item;
  }
  return out;
}


// Data of a C-contiguous array of dtype T and exactly this shape (no copy, no conversion).
template <typename T>
const T* array_data(const py::array& a, std::initializer_list<int64_t> shape, const char* name) {
  bool ok = py::isinstance<py::array_t<T>>(a) && (a.flags() & py::array::c_style) &&
            a.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t extent : shape) ok = ok && a.shape(d++) == extent;
  if (!ok) throw std::invalid_argument(std::string(name) + " has the wrong dtype, shape or layout");
  return static_cast<const T*>(a.data());
}

template <typename T>
T* contiguous_data(py::array& a, int64_t rows, int64_t cols, const char* name) {
  if (!a.writeable()) throw std::invalid_argument(std::string(name) + " must be writeable");
  return const_cast<T*>(array_data<T>(a, {rows, cols}, name));
}

template <typename T>
const T* vector_data(const py::array& a, int64_t n, const char* name) {
  return array_data<T>(a, {n}, name);
}

}  // namespace fastsdf
