// The one host allocator. Every CPU tensor (Tensor::empty on the CPU, the CPU
// backend's op outputs) and the CPU backend's per-thread scratch buffers take
// their memory here, so its counters are the one statistics source for host
// memory that `diffuse bench` and the tests read.
//
// Policy:
// - Below 1 MiB: malloc (aligned), freed at once.
// - 1 MiB and up: anonymous mappings (transparent huge pages asked for above
//   32 MiB: a fresh 268 MB block costs 134 faults, not 65536). Freed blocks
//   are kept in a pool and handed to the next request that needs about as
//   much (best fit, within 1/8): diffusion repeats the same activation shapes
//   every step, so the step loop runs without page faults.
// - The pool holds at most max_cached_bytes (RuntimeOptions pool_mb, default
//   384 MiB), oldest dropped first, so a phase with new sizes (the VAE decoder
//   at full resolution, 67-268 MB per activation) does not keep every size it
//   ever saw on top of the live blocks: peak RSS stays near the live bytes.
// - When the system refuses a mapping, the pool is emptied and the request
//   tried once more before kOutOfMemory.
#pragma once
#include <cstddef>
#include <memory>

#include "core/tensor.h"

namespace diffuse {

struct HostBlock {
  void* data = nullptr;
  size_t bytes = 0;  // the size given to host_free (rounded up from the request)
};

// At least `bytes` bytes, 64-byte aligned. Throws Error(kOutOfMemory).
HostBlock host_alloc(size_t bytes);
void host_free(HostBlock block);

// A CPU Storage of `nbytes` whose deleter returns its block.
std::shared_ptr<Storage> host_storage(size_t nbytes);

DeviceMemoryStats host_memory_stats();
void host_reset_peak_memory_stats();
// Free bytes the pool holds now.
size_t host_cached_bytes();
// Unmaps every pooled block.
void host_empty_cache();

}  // namespace diffuse
