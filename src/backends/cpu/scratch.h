// Per-thread scratch buffers of the CPU backend, reused from call to call
// (blocks of the host allocator, core/host_allocator.h).
//
// Diffusion repeats the same shapes every step, so a buffer sized by the
// first step serves all later ones: no allocation, no page faults in the step
// loop. A slot keeps its block while it is big enough. Used for weights
// widened per call (bf16/f16 weights on CPUs without native kernels), for
// the row bands of large convolutions, and for the scratchpads of
// oneDNN primitives (kOneDnn, see onednn.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace diffuse::cpu {

enum class ScratchSlot { kConvWeights, kConvSrc, kConvDst, kLinearWeights, kOneDnn, kCount };

// At least `bytes` bytes, 64-byte aligned, owned by the calling thread and
// valid until its next call with the same slot. Grows, never shrinks.
// Throws Error(kOutOfMemory) when the memory cannot be had.
void* scratch(ScratchSlot slot, size_t bytes);

// Bytes held by the calling thread's scratch buffers (for reports and tests).
size_t scratch_bytes();

// Converts n values from src (f32, bf16 or f16) to f32 in dst, on the thread pool.
void widen_to_f32(const void* src, DType src_type, float* dst, int64_t n);

}  // namespace diffuse::cpu
