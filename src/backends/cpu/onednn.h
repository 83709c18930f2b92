// Shared oneDNN plumbing for the CPU backend: one engine, a per-thread
// stream, thread-count sync, and a small primitive cache keyed by shape.
//
// Thread safety (issue 17). Cached primitives are executed by many threads at
// once (the server runs jobs on several threads). With oneDNN's default,
// library-managed scratchpad, implementations that declare a "global"
// scratchpad (the AVX-512/AMX brgemm matmul and convolution among them) keep
// their temporaries in one buffer that belongs to the thread which CREATED the
// primitive (Debian's libdnnl2 is built without ONEDNN_ENABLE_CONCURRENT_EXEC).
// A cached primitive is created once and then run by every thread, so two
// threads executing it at once wrote their tiles into the same buffer and read
// each other's partial sums: wrong pixels, in most runs of the stress tests
// (tests/core/test_concurrency.cpp) on a Zen 4. AVX2 kernels need no such
// scratchpad for our shapes, which is why AVX2-only machines never showed it.
// Every primitive is therefore
// built with scratchpad_mode::user (attr()) and executed through execute(),
// which hands it a scratchpad owned by the calling thread.
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

// Primitive attributes with a user-managed scratchpad: every primitive built
// here must start from these, and run through execute().
dnnl::primitive_attr attr();

// Runs `prim` (built from `scratchpad` = its pd's scratchpad_desc()) on this
// thread's stream with a scratchpad owned by this thread, and waits.
void execute(const dnnl::primitive& prim, const dnnl::memory::desc& scratchpad,
             std::unordered_map<int, dnnl::memory> args);

// A reorder (layout or dtype conversion) from `from` to `to`, run with execute().
void reorder(const dnnl::memory& from, const dnnl::memory& to);

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
