// Output tensors of the CPU backend's ops, from a small pool of large blocks.
//
// Diffusion repeats the same activation shapes every step, so freed blocks
// are kept and handed to the next op that needs about as much (best fit,
// within 1/8): the step loop runs without page faults. Unlike a cache keyed
// by exact size, the pool holds at most kMaxCachedBytes of free blocks,
// oldest dropped first, so a phase with new sizes (the VAE decoder at full
// resolution, 67-268 MB per activation) does not keep every size it ever saw
// on top of the live tensors: peak RSS stays near the live bytes.
#pragma once
#include <cstddef>

#include "core/tensor.h"

namespace diffuse::cpu {

// An uninitialised contiguous CPU tensor. Below 1 MiB: Tensor::empty.
Tensor new_tensor(const Shape& shape, DType dtype);

// Free bytes the pool holds now (for reports and tests).
size_t pool_cached_bytes();

}  // namespace diffuse::cpu
