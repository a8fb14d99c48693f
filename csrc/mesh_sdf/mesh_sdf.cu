// CUDA queries: one thread per point, running the same traversal code as the CPU (query.h), without
// what the CPU hands from point to point (each thread starts afresh).
#include <cuda_runtime.h>

#include "common/cuda_device.h"
#include "mesh_sdf/mesh_sdf.h"
#include "mesh_sdf/query.h"

namespace fastsdf::msdf {
namespace {

constexpr int kThreads = 128;

template <typename P>
__global__ void __launch_bounds__(kThreads)
    query_kernel(MeshView mesh, const int64_t* order, const P* points, int64_t n, Sign sign, double beta, QueryOut out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    query_point(mesh, order, points, i, sign, beta, out, Neighbour{});
}

template <typename P>
__global__ void __launch_bounds__(kThreads)
    winding_kernel(MeshView mesh, const P* points, int64_t n, bool exact, double beta, double* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = winding_point(mesh, points, i, exact, beta);
}

unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : (int64_t{1} << 20));
}

}  // namespace

template <typename P>
void query_cuda(const MeshView& mesh, const int64_t* order, const P* points, int64_t n, Sign sign, double beta,
                const QueryOut& out, void* stream) {
  if (n == 0) return;
  query_kernel<P><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(mesh, order, points, n, sign,
                                                                                      beta, out);
  check_launch("mesh sdf: query kernel");
}

template <typename P>
void winding_cuda(const MeshView& mesh, const P* points, int64_t n, bool exact, double beta, double* out,
                  void* stream) {
  if (n == 0) return;
  winding_kernel<P><<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(mesh, points, n, exact, beta,
                                                                                        out);
  check_launch("mesh sdf: winding kernel");
}

template void query_cuda<float>(const MeshView&, const int64_t*, const float*, int64_t, Sign, double, const QueryOut&, void*);
template void query_cuda<double>(const MeshView&, const int64_t*, const double*, int64_t, Sign, double, const QueryOut&, void*);
template void winding_cuda<float>(const MeshView&, const float*, int64_t, bool, double, double*, void*);
template void winding_cuda<double>(const MeshView&, const double*, int64_t, bool, double, double*, void*);

}  // namespace fastsdf::msdf
