// The CUDA backend's own API, for code inside src/backends/cuda, the
// registration file and CUDA tests/benches: the Backend, allocator statistics
// (tests check that steady-state steps never call cudaMalloc), stream
// synchronisation, device choice and CUDA-graph capture. Everything else
// reaches these through the Backend interface (core/ops.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/ops.h"

namespace diffuse {

// The CUDA Backend (its hooks are registered in src/backends/registry.cpp).
// Throws kUnsupported when no CUDA device is present.
Backend& cuda_backend();
// True when a CUDA device can be used (never throws).
bool cuda_device_available();
// Device memory from the CUDA caching allocator; the Storage's deleter returns it.
std::shared_ptr<Storage> cuda_allocate(size_t nbytes);
// Copies bytes between host and device (or device and device); synchronous
// with respect to the host for device->host copies.
void cuda_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

struct CudaAllocatorStats {
  uint64_t malloc_calls = 0;  // cudaMalloc calls since start (cache misses)
  uint64_t alloc_calls = 0;   // cuda_allocate() calls
  size_t reserved_bytes = 0;  // held from the driver (in use + cached)
  size_t in_use_bytes = 0;
  size_t peak_reserved_bytes = 0;  // high-water marks since start or cuda_reset_peak_stats()
  size_t peak_in_use_bytes = 0;
};
CudaAllocatorStats cuda_allocator_stats();
// Restarts the peak counters at the current reserved / in-use bytes.
void cuda_reset_peak_stats();
// Gives cached (unused) blocks back to the driver. Synchronises the device.
void cuda_empty_cache();
// Waits for all work the backend has enqueued (host-side timing, tests).
void cuda_synchronize();

// Chooses the GPU (CUDA ordinal, as CUDA_VISIBLE_DEVICES numbers them) that
// the backend runs on; the default is 0. One process uses one GPU, so this must
// come before the backend's first use: afterwards it throws kUnsupported for
// any other ordinal. An ordinal beyond the device count fails in cuda_start().
void cuda_select_device(int ordinal);
// Starts the backend on the selected device (context, stream, a check that
// this build's kernels run on it). "" when the device is usable, else why it
// is not. Never throws; cheap once started.
std::string cuda_start();
// "CUDA runtime 13.0, cuBLASLt 13.1.0, cuDNN 9.13.0": the libraries this
// process loaded. Needs no device.
std::string cuda_library_versions();

// A captured sequence of backend ops, replayed with one launch.
// Capture runs `fn` once with the backend's stream in capture mode: nothing
// executes, kernels are recorded. Tensors allocated inside `fn` stay owned by
// the graph (their storage is kept alive) so replays write the same memory;
// `fn` must be free of host synchronisation (no .to(kCPU), no embedding with
// host-side id checks) and must not depend on data-dependent host decisions.
class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  void capture(const std::function<void()>& fn);
  void replay();  // enqueues on the backend stream; does not wait
  bool captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
