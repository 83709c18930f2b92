// Shared oneDNN plumbing for the CPU backend: one engine, a per-thread
// stream, thread-count sync, and a small primitive cache keyed by shape.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/dtype.h"

namespace diffuse::cpu::onednn {

dnnl::engine& engine();
dnnl::stream& stream();

// oneDNN here runs on OpenMP, whose thread count is a per-calling-thread
// setting: apply num_threads() to the current thread before each execute.
void sync_threads();

// True when the primitive is oneDNN's slow reference implementation (e.g.
// bf16 on a CPU without AVX-512): callers then fall back to f32.
bool is_reference(const char* impl_info);

// Whether oneDNN has a real (non-reference) bf16 matmul/conv kernel on this CPU.
bool native_bf16();

inline dnnl::memory::data_type dt_of(DType t) {
  switch (t) {
    case DType::kBF16: return dnnl::memory::data_type::bf16;
    case DType::kF16: return dnnl::memory::data_type::f16;
    default: return dnnl::memory::data_type::f32;
  }
}

// A bounded map from a shape key to a built primitive; building a primitive
// descriptor costs tens of microseconds, executing a cached one nothing extra.
template <class Entry>
class PrimitiveCache {
 public:
  std::shared_ptr<Entry> get(const std::string& key, const std::function<std::shared_ptr<Entry>()>& make) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    auto e = make();
    std::lock_guard<std::mutex> lk(mu_);
    if (map_.size() >= kCapacity) map_.clear();
    map_[key] = e;
    return e;
  }

 private:
  static constexpr size_t kCapacity = 512;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Entry>> map_;
};

}  // namespace diffuse::cpu::onednn
