// Shared state of the CUDA backend: one device, one stream, one cuBLASLt and
// one cuDNN handle, and the error-check macros. Everything the backend
// enqueues goes on the one stream, so memory returned to the caching
// allocator can be reused by the next op without any synchronisation
// (stream order makes it safe), and no hot path calls cudaDeviceSynchronize.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

// Checks a CUDA runtime call (or cudaGetLastError() after a launch) and throws
// Error(kRuntime) naming the op; cudaErrorMemoryAllocation maps to kOutOfMemory.
#define DIFFUSE_CUDA_CHECK(expr, op) ::diffuse::cuda_detail::check_cuda((expr), (op), #expr)

namespace diffuse {

struct cudnnContext;

namespace cuda_detail {
void check_cuda(cudaError_t err, const char* op, const char* what);
}  // namespace cuda_detail

// Process-wide CUDA state, created on first use (cuda_backend() or cuda_allocate()).
struct CudaContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  int sm_count = 0;
  size_t max_smem_optin = 0;
};

// Throws kUnsupported when no CUDA device is usable.
CudaContext& cuda_context();

// Device pointer of element [0,...] of a CUDA tensor.
inline void* cuda_ptr(const Tensor& t) { return t.raw_data(); }

}  // namespace diffuse
