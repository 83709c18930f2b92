#include "backends/cpu/onednn.h"

#include <dlfcn.h>

#include <cstring>

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

bool is_reference(const char* impl_info) { return impl_info && std::strstr(impl_info, "ref") != nullptr; }

}  // namespace diffuse::cpu::onednn
