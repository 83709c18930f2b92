#include "backends/cpu/onednn.h"

#include <dlfcn.h>

#include <cstring>

#include "backends/cpu/scratch.h"
#include "core/thread_pool.h"

namespace diffuse::cpu::onednn {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

void sync_threads() {
  // libgomp is loaded with libdnnl; find omp_set_num_threads at run time so
  // the build needs no -fopenmp.
  using SetFn = void (*)(int);
  static SetFn set_fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  thread_local int applied = -1;
  int n = num_threads();
  if (set_fn && applied != n) {
    set_fn(n);
    applied = n;
  }
}

dnnl::primitive_attr attr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

void execute(const dnnl::primitive& prim, const dnnl::memory::desc& scratchpad,
             std::unordered_map<int, dnnl::memory> args) {
  sync_threads();
  const size_t bytes = scratchpad.get_size();
  if (bytes > 0) args[DNNL_ARG_SCRATCHPAD] = dnnl::memory(scratchpad, engine(), scratch(ScratchSlot::kOneDnn, bytes));
  prim.execute(stream(), args);
  stream().wait();
}

void reorder(const dnnl::memory& from, const dnnl::memory& to) {
  const dnnl::reorder::primitive_desc pd(engine(), from.get_desc(), engine(), to.get_desc(), attr());
  execute(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

bool is_reference(const char* impl_info) { return impl_info && std::strstr(impl_info, "ref") != nullptr; }

}  // namespace diffuse::cpu::onednn
