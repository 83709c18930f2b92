#include "backends/cpu/activation_pool.h"

#include <sys/mman.h>

#include <cstdlib>
#include <list>
#include <mutex>
#include <string>

#include "core/error.h"

namespace diffuse::cpu {

namespace {

constexpr size_t kMinBytes = size_t{1} << 20;
constexpr size_t kHugePage = size_t{2} << 20;
// Enough for the UNet step's reuse distance at 512x512 (its largest
// activations are 42-84 MB, GEGLU); far below the sum of the VAE's sizes.
// DIFFUSE_POOL_MB overrides it (measurements).
size_t max_cached_bytes() {
  static const size_t bytes = [] {
    const char* v = std::getenv("DIFFUSE_POOL_MB");
    return (v ? static_cast<size_t>(std::strtoull(v, nullptr, 10)) : size_t{384}) << 20;
  }();
  return bytes;
}

// Anonymous mappings rounded to 2 MiB with transparent huge pages asked for
// (enabled=madvise here): a fresh 268 MB block costs 134 faults, not 65536.
void* map_block(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

// Whole 2 MiB pages for large blocks (huge pages), 64 KiB steps below 32 MiB.
size_t round_up(size_t bytes) {
  const size_t step = bytes >= (size_t{32} << 20) ? kHugePage : size_t{64} << 10;
  return (bytes + step - 1) / step * step;
}

class Pool {
 public:
  struct Block {
    void* data;
    size_t bytes;
  };

  Block take(size_t request) {
    const size_t bytes = round_up(request);
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->bytes >= bytes && it->bytes - bytes <= bytes / 8 && (best == free_.end() || it->bytes < best->bytes))
          best = it;
      }
      if (best != free_.end()) {
        Block b = *best;
        cached_ -= b.bytes;
        free_.erase(best);
        return b;
      }
    }
    void* p = map_block(bytes);
    if (!p) {
      purge();
      p = map_block(bytes);
    }
    if (!p)
      throw_error(ErrorCode::kOutOfMemory, "[cpu] cannot allocate " + std::to_string(request) + " bytes for an activation");
    return Block{p, bytes};
  }

  void give(Block b) {
    std::list<Block> drop;
    {
      std::lock_guard<std::mutex> lk(mu_);
      free_.push_front(b);  // most recently freed first; the oldest go first
      cached_ += b.bytes;
      while (cached_ > max_cached_bytes() && !free_.empty()) {
        cached_ -= free_.back().bytes;
        drop.splice(drop.begin(), free_, std::prev(free_.end()));
      }
    }
    for (const Block& d : drop) munmap(d.data, d.bytes);
  }

  void purge() {
    std::list<Block> drop;
    {
      std::lock_guard<std::mutex> lk(mu_);
      drop.swap(free_);
      cached_ = 0;
    }
    for (const Block& d : drop) munmap(d.data, d.bytes);
  }

  size_t cached() {
    std::lock_guard<std::mutex> lk(mu_);
    return cached_;
  }

 private:
  std::mutex mu_;
  std::list<Block> free_;
  size_t cached_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool;  // leaked: tensors may die during static destruction
  return *p;
}

}  // namespace

Tensor new_tensor(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  if (bytes < kMinBytes) return Tensor::empty(shape, dtype);
  Pool::Block b = pool().take(bytes);
  std::shared_ptr<void> owner(b.data, [b](void*) { pool().give(b); });
  return Tensor::from_blob(b.data, shape, dtype, std::move(owner));
}

size_t pool_cached_bytes() { return pool().cached(); }

}  // namespace diffuse::cpu
