// The backends this binary was built with: the one file outside
// src/backends/cuda/ that knows whether CUDA is compiled in. A new backend
// adds its hooks here (and its Device value in core/tensor.h).
#include "backends/backend_registry.h"

#if defined(DIFFUSE_HAVE_CUDA)
#include "backends/cuda/cuda_api.h"
#endif

namespace diffuse {

const DeviceBackendHooks* device_backend_hooks(Device device) {
#if defined(DIFFUSE_HAVE_CUDA)
  static const DeviceBackendHooks cuda{&cuda_backend, &cuda_start, &cuda_select_device, &cuda_library_versions};
  if (device == Device::kCUDA) return &cuda;
#endif
  (void)device;
  return nullptr;
}

}  // namespace diffuse
