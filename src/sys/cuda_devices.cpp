#include "sys/cuda_devices.h"

#include <dlfcn.h>

#include <memory>

#include "sys/nvml_api.h"

namespace diffuse::sys {
namespace {

// CUDA driver API types by value (cuda.h): CUresult is an enum, CUdevice an int.
using CuResult = int;
using CuDevice = int;
using CuContext = struct CuContextOpaque*;
constexpr int kAttrMultiprocessorCount = 16;     // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
constexpr int kAttrComputeCapabilityMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrComputeCapabilityMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

struct CudaDriver {
  void* handle = nullptr;
  CuResult (*init)(unsigned int) = nullptr;
  CuResult (*driver_get_version)(int*) = nullptr;
  CuResult (*device_get_count)(int*) = nullptr;
  CuResult (*device_get)(CuDevice*, int) = nullptr;
  CuResult (*device_get_name)(char*, int, CuDevice) = nullptr;
  CuResult (*device_total_mem)(size_t*, CuDevice) = nullptr;
  CuResult (*device_get_attribute)(int*, int, CuDevice) = nullptr;
  CuResult (*device_get_pci_bus_id)(char*, int, CuDevice) = nullptr;
  CuResult (*get_error_name)(CuResult, const char**) = nullptr;
  // Optional, for free memory when NVML is missing.
  CuResult (*primary_ctx_retain)(CuContext*, CuDevice) = nullptr;
  CuResult (*primary_ctx_release)(CuDevice) = nullptr;
  CuResult (*ctx_push)(CuContext) = nullptr;
  CuResult (*ctx_pop)(CuContext*) = nullptr;
  CuResult (*mem_get_info)(size_t*, size_t*) = nullptr;

  ~CudaDriver() {
    if (handle) dlclose(handle);
  }
  std::string error(CuResult r) const {
    const char* name = nullptr;
    if (get_error_name && get_error_name(r, &name) == 0 && name) return name;
    return "CUDA error " + std::to_string(r);
  }
};

template <typename Fn>
bool resolve(void* handle, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(handle, name));
  return *out != nullptr;
}

std::string cuda_version_string(int v) {  // 12080 -> "12.8"
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

uint64_t free_memory_via_context(const CudaDriver& cu, CuDevice dev) {
  if (!cu.primary_ctx_retain || !cu.primary_ctx_release || !cu.ctx_push || !cu.ctx_pop || !cu.mem_get_info)
    return 0;
  CuContext ctx = nullptr;
  if (cu.primary_ctx_retain(&ctx, dev) != 0) return 0;
  size_t free_b = 0, total_b = 0;
  if (cu.ctx_push(ctx) == 0) {
    if (cu.mem_get_info(&free_b, &total_b) != 0) free_b = 0;
    CuContext popped = nullptr;
    cu.ctx_pop(&popped);
  }
  cu.primary_ctx_release(dev);
  return free_b;
}

}  // namespace

GpuQuery cuda_devices(const std::string& cuda_library, const std::string& nvml_library) {
  GpuQuery q;
  CudaDriver cu;
  cu.handle = dlopen(cuda_library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!cu.handle) {
    q.status = "CUDA driver not found (" + cuda_library + "): no NVIDIA GPU available";
    return q;
  }
  bool ok = resolve(cu.handle, "cuInit", &cu.init) && resolve(cu.handle, "cuDriverGetVersion", &cu.driver_get_version) &&
            resolve(cu.handle, "cuDeviceGetCount", &cu.device_get_count) &&
            resolve(cu.handle, "cuDeviceGet", &cu.device_get) &&
            resolve(cu.handle, "cuDeviceGetName", &cu.device_get_name) &&
            resolve(cu.handle, "cuDeviceTotalMem_v2", &cu.device_total_mem) &&
            resolve(cu.handle, "cuDeviceGetAttribute", &cu.device_get_attribute) &&
            resolve(cu.handle, "cuDeviceGetPCIBusId", &cu.device_get_pci_bus_id);
  if (!ok) {
    q.status = "CUDA driver (" + cuda_library + ") lacks a required symbol: driver too old";
    return q;
  }
  resolve(cu.handle, "cuGetErrorName", &cu.get_error_name);
  resolve(cu.handle, "cuDevicePrimaryCtxRetain", &cu.primary_ctx_retain);
  resolve(cu.handle, "cuDevicePrimaryCtxRelease_v2", &cu.primary_ctx_release);
  resolve(cu.handle, "cuCtxPushCurrent_v2", &cu.ctx_push);
  resolve(cu.handle, "cuCtxPopCurrent_v2", &cu.ctx_pop);
  resolve(cu.handle, "cuMemGetInfo_v2", &cu.mem_get_info);

  int version = 0;
  if (cu.driver_get_version(&version) == 0 && version > 0) q.cuda_version = cuda_version_string(version);
  CuResult r = cu.init(0);
  if (r != 0) {
    q.status = "cuInit failed: " + cu.error(r) + " (no usable NVIDIA GPU, or the driver does not match the kernel module)";
    return q;
  }
  int count = 0;
  r = cu.device_get_count(&count);
  if (r != 0 || count == 0) {
    q.status = r != 0 ? "cuDeviceGetCount failed: " + cu.error(r) : "CUDA driver loaded but no CUDA devices are visible";
    return q;
  }

  std::string nvml_reason;
  std::shared_ptr<NvmlApi> nvml = NvmlApi::load(nvml_library, &nvml_reason);
  std::string nvml_driver = nvml ? nvml->driver_version() : "";

  for (int i = 0; i < count; ++i) {
    CuDevice dev = 0;
    if (cu.device_get(&dev, i) != 0) continue;
    GpuInfo g;
    g.index = i;
    char name[256] = {};
    if (cu.device_get_name(name, sizeof(name), dev) == 0) g.name = name;
    size_t total = 0;
    if (cu.device_total_mem(&total, dev) == 0) g.mem_total = total;
    cu.device_get_attribute(&g.cc_major, kAttrComputeCapabilityMajor, dev);
    cu.device_get_attribute(&g.cc_minor, kAttrComputeCapabilityMinor, dev);
    cu.device_get_attribute(&g.sm_count, kAttrMultiprocessorCount, dev);
    char bus[64] = {};
    if (cu.device_get_pci_bus_id(bus, sizeof(bus), dev) == 0) g.pci_bus_id = bus;
    g.driver = !nvml_driver.empty() ? nvml_driver : (q.cuda_version.empty() ? "" : "CUDA " + q.cuda_version);
    // NVML's handle is matched by PCI bus id because its order need not be CUDA's.
    bool have_free = false;
    if (nvml && nvml->device_get_handle_by_pci_bus_id && !g.pci_bus_id.empty()) {
      NvmlDevice h = nullptr;
      NvmlMemory mem{};
      if (nvml->device_get_handle_by_pci_bus_id(g.pci_bus_id.c_str(), &h) == 0 &&
          nvml->device_get_memory_info(h, &mem) == 0) {
        g.mem_free = mem.free;
        have_free = true;
      }
    }
    if (!have_free) g.mem_free = free_memory_via_context(cu, dev);
    q.gpus.push_back(std::move(g));
  }
  q.status = std::to_string(q.gpus.size()) + (q.gpus.size() == 1 ? " CUDA device" : " CUDA devices");
  if (!q.cuda_version.empty()) q.status += " (driver API " + q.cuda_version + ")";
  return q;
}

}  // namespace diffuse::sys
