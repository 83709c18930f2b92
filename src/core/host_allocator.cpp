#include "core/host_allocator.h"
#include "core/runtime_options.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <list>
#include <mutex>
#include <string>

#include "core/error.h"

namespace diffuse {
namespace {

constexpr size_t kPoolMinBytes = size_t{1} << 20;
constexpr size_t kHugePage = size_t{2} << 20;

// Enough for the UNet step's reuse distance at 512x512 (its largest
// activations are 42-84 MB, GEGLU); far below the sum of the VAE's sizes.
// DIFFUSE_POOL_MB overrides it (measurements).
size_t max_cached_bytes() {
  static const size_t bytes = static_cast<size_t>(runtime_options().pool_mb) << 20;
  return bytes;
}

// Whole 2 MiB pages for large blocks (huge pages), 64 KiB steps from 1 MiB,
// 64 bytes below.
size_t round_up(size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  const size_t step = bytes >= (size_t{32} << 20) ? kHugePage : bytes >= kPoolMinBytes ? size_t{64} << 10 : 64;
  return (bytes + step - 1) / step * step;
}

void* map_block(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

class Allocator {
 public:
  HostBlock alloc(size_t request) {
    const size_t bytes = round_up(request);
    alloc_calls_.fetch_add(1, std::memory_order_relaxed);
    if (bytes < kPoolMinBytes) {
      void* p = std::aligned_alloc(64, bytes);
      if (!p) fail(request);
      malloc_calls_.fetch_add(1, std::memory_order_relaxed);
      account(static_cast<int64_t>(bytes), static_cast<int64_t>(bytes));
      return {p, bytes};
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->bytes >= bytes && it->bytes - bytes <= bytes / 8 && (best == free_.end() || it->bytes < best->bytes))
          best = it;
      }
      if (best != free_.end()) {
        HostBlock b = *best;
        cached_ -= b.bytes;
        free_.erase(best);
        account(static_cast<int64_t>(b.bytes), 0);
        return b;
      }
    }
    void* p = map_block(bytes);
    if (!p) {
      empty_cache();
      p = map_block(bytes);
    }
    if (!p) fail(request);
    malloc_calls_.fetch_add(1, std::memory_order_relaxed);
    account(static_cast<int64_t>(bytes), static_cast<int64_t>(bytes));
    return {p, bytes};
  }

  void free(HostBlock b) {
    if (!b.data) return;
    if (b.bytes < kPoolMinBytes) {
      std::free(b.data);
      account(-static_cast<int64_t>(b.bytes), -static_cast<int64_t>(b.bytes));
      return;
    }
    std::list<HostBlock> drop;
    {
      std::lock_guard<std::mutex> lk(mu_);
      free_.push_front(b);  // most recently freed first; the oldest go first
      cached_ += b.bytes;
      size_t dropped = 0;
      while (cached_ > max_cached_bytes() && !free_.empty()) {
        cached_ -= free_.back().bytes;
        dropped += free_.back().bytes;
        drop.splice(drop.begin(), free_, std::prev(free_.end()));
      }
      account(-static_cast<int64_t>(b.bytes), -static_cast<int64_t>(dropped));
    }
    for (const HostBlock& d : drop) munmap(d.data, d.bytes);
  }

  void empty_cache() {
    std::list<HostBlock> drop;
    {
      std::lock_guard<std::mutex> lk(mu_);
      drop.swap(free_);
      account(0, -static_cast<int64_t>(cached_));
      cached_ = 0;
    }
    for (const HostBlock& d : drop) munmap(d.data, d.bytes);
  }

  DeviceMemoryStats stats() {
    DeviceMemoryStats s;
    s.malloc_calls = malloc_calls_.load();
    s.alloc_calls = alloc_calls_.load();
    s.reserved_bytes = static_cast<size_t>(reserved_.load());
    s.in_use_bytes = static_cast<size_t>(in_use_.load());
    s.peak_reserved_bytes = static_cast<size_t>(peak_reserved_.load());
    s.peak_in_use_bytes = static_cast<size_t>(peak_in_use_.load());
    return s;
  }

  void reset_peaks() {
    peak_reserved_ = reserved_.load();
    peak_in_use_ = in_use_.load();
  }

  size_t cached() {
    std::lock_guard<std::mutex> lk(mu_);
    return cached_;
  }

 private:
  [[noreturn]] static void fail(size_t request) {
    throw_error(ErrorCode::kOutOfMemory, "[host allocator] cannot allocate " + std::to_string(request) + " bytes");
  }
  // Lock-free: small blocks (every op's little tensors) take no lock.
  static void raise_peak(std::atomic<int64_t>& peak, int64_t value) {
    int64_t prev = peak.load(std::memory_order_relaxed);
    while (value > prev && !peak.compare_exchange_weak(prev, value, std::memory_order_relaxed)) {
    }
  }
  void account(int64_t in_use, int64_t reserved) {
    raise_peak(peak_in_use_, in_use_.fetch_add(in_use, std::memory_order_relaxed) + in_use);
    raise_peak(peak_reserved_, reserved_.fetch_add(reserved, std::memory_order_relaxed) + reserved);
  }

  std::mutex mu_;  // guards the pool: free_ and cached_
  std::list<HostBlock> free_;
  size_t cached_ = 0;
  std::atomic<int64_t> in_use_{0}, reserved_{0}, peak_in_use_{0}, peak_reserved_{0};
  std::atomic<uint64_t> malloc_calls_{0}, alloc_calls_{0};
};

Allocator& allocator() {
  static Allocator* a = new Allocator;  // leaked: tensors may die during static destruction
  return *a;
}

}  // namespace

HostBlock host_alloc(size_t bytes) { return allocator().alloc(bytes); }
void host_free(HostBlock block) { allocator().free(block); }

std::shared_ptr<Storage> host_storage(size_t nbytes) {
  const HostBlock b = host_alloc(nbytes);
  auto s = std::make_shared<Storage>();
  s->data = b.data;
  s->nbytes = nbytes;
  s->device = Device::kCPU;
  s->deleter = [b](void*) { host_free(b); };
  return s;
}

DeviceMemoryStats host_memory_stats() { return allocator().stats(); }
void host_reset_peak_memory_stats() { allocator().reset_peaks(); }
size_t host_cached_bytes() { return allocator().cached(); }
void host_empty_cache() { allocator().empty_cache(); }

}  // namespace diffuse
