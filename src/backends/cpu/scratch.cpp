#include "backends/cpu/scratch.h"

#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"

namespace diffuse::cpu {

namespace {

struct Buffer {
  void* data = nullptr;
  size_t capacity = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data); }
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
  if (bytes <= b.capacity && b.data) return b.data;
  std::free(b.data);  // the old contents are not needed: every user refills it
  b.data = nullptr;
  b.capacity = 0;
  const size_t rounded = (std::max<size_t>(bytes, 64) + 4095) / 4096 * 4096;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw_error(ErrorCode::kOutOfMemory, "[cpu scratch] cannot allocate " + std::to_string(rounded) + " bytes");
  b.data = p;
  b.capacity = rounded;
  return p;
}

size_t scratch_bytes() {
  size_t total = 0;
  for (const Buffer& b : thread_scratch().slots) total += b.capacity;
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
