// A fixed pool of worker threads for the CPU backend's own kernels.
// Sized to the machine (hardware_concurrency) unless set_num_threads() is called
// (the CLI's --threads). oneDNN is configured to use the same count.
#pragma once
#include <cstdint>
#include <functional>

namespace diffuse {

int num_threads();
void set_num_threads(int n);  // n <= 0 restores the default

// Runs fn(begin, end) over [0, n) split into contiguous chunks of at least
// `grain` items, on the pool (the calling thread takes part). Blocks until done.
// fn must not throw.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace diffuse
