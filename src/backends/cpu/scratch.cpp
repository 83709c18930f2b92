#include "backends/cpu/scratch.h"

#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/host_allocator.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

// A block of the host allocator (so scratch memory shows in its counters).
struct Buffer {
  HostBlock block;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { host_free(block); }
};

struct ThreadScratch {
  Buffer slots[static_cast<int>(ScratchSlot::kCount)];
};

ThreadScratch& thread_scratch() {
  thread_local ThreadScratch s;
  return s;
}

}  // namespace

void* scratch(ScratchSlot slot, size_t bytes) {
  Buffer& b = thread_scratch().slots[static_cast<int>(slot)];
  if (b.block.data && bytes <= b.block.bytes) return b.block.data;
  host_free(b.block);  // the old contents are not needed: every user refills it
  b.block = HostBlock{};
  b.block = host_alloc(std::max<size_t>(bytes, 64));
  return b.block.data;
}

size_t scratch_bytes() {
  size_t total = 0;
  for (const Buffer& b : thread_scratch().slots) total += b.block.bytes;
  return total;
}

void widen_to_f32(const void* src, DType src_type, float* dst, int64_t n) {
  const char* s = static_cast<const char*>(src);
  const size_t es = dtype_size(src_type);
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    convert(s + b * es, src_type, dst + b, DType::kF32, static_cast<size_t>(e - b));
  });
}

}  // namespace diffuse::cpu
