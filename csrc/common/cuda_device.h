// Host-side CUDA runtime helpers of the bindings and the launches: errors as exceptions, and a guard
// that runs a launch on the device of its tensors.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace fastsdf {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
}

// After a kernel launch: a launch that failed (no kernel image for this GPU, a bad configuration)
// as an exception.
inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// Makes `device` current for its lifetime and then the caller's device again. A launch runs on the
// current device, and the stream it is given belongs to the tensors' device: on any other one it
// fails with "invalid resource handle" (torch leaves device 0 current while tensors live on cuda:1).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device_ != previous_) check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  }

  // Puts the caller's device back, reporting a failure; the destructor does it otherwise.
  void restore() {
    const bool switched = device_ != previous_;
    device_ = previous_;
    if (switched) check_cuda(cudaSetDevice(previous_), "cudaSetDevice (restoring the current device)");
  }

  // Reached without restore() only while an exception is already on its way: that error is the one
  // to report, so a failure here is dropped.
  ~DeviceGuard() {
    if (device_ != previous_) static_cast<void>(cudaSetDevice(previous_));
  }

  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = 0;
};

}  // namespace fastsdf
