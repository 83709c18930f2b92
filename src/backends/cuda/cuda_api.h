// Public extras of the CUDA backend beyond backend_registry.h: allocator
// statistics (tests check that steady-state steps never call cudaMalloc),
// stream synchronisation, and CUDA-graph capture of a whole step.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace diffuse {

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
