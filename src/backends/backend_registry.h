// Hooks between the device-independent core and the backends.
// The CPU backend is always built; the CUDA functions exist only when the
// library is built with DIFFUSE_HAVE_CUDA (src/backends/cuda/ implements them).
#pragma once
#include <cstddef>
#include <memory>

#include "core/ops.h"

namespace diffuse {

Backend& cpu_backend();

#if defined(DIFFUSE_HAVE_CUDA)
// Throws kUnsupported when no CUDA device is present.
Backend& cuda_backend();
// True when a CUDA device can be used (never throws).
bool cuda_device_available();
// Device memory from the CUDA caching allocator; the Storage's deleter returns it.
std::shared_ptr<Storage> cuda_allocate(size_t nbytes);
// Copies bytes between host and device (or device and device); synchronous
// with respect to the host for device->host copies.
void cuda_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
#endif

}  // namespace diffuse
