// Helpers for reading NumPy arrays passed to the CPU bindings without copying them.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
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

template <typename T>
T* contiguous_data(py::array& a, int64_t rows, int64_t cols, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style) || !a.writeable() ||
      a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
    throw std::invalid_argument(std::string(name) + " must be a writeable C-contiguous (" +
                                std::to_string(rows) + ", " + std::to_string(cols) + ") array");
  return static_cast<T*>(a.mutable_data());
}

template <typename T>
const T* vector_data(const py::array& a, int64_t n, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style) || a.ndim() != 1 ||
      a.shape(0) != n)
    throw std::invalid_argument(std::string(name) + " must be a contiguous vector of length " +
                                std::to_string(n));
  return static_cast<const T*>(a.data());
}

}  // namespace fastsdf
