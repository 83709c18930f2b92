#include "sys/nvml_api.h"

#include <dlfcn.h>

namespace diffuse::sys {
namespace {

template <typename Fn>
bool resolve(void* handle, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(handle, name));
  return *out != nullptr;
}

}  // namespace

std::shared_ptr<NvmlApi> NvmlApi::load(const std::string& library, std::string* reason) {
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* err = dlerror();
    if (reason) *reason = "NVML not found (" + library + "): " + (err ? err : "dlopen failed");
    return nullptr;
  }
  std::shared_ptr<NvmlApi> api(new NvmlApi());
  api->handle_ = handle;
  NvmlReturn (*init)() = nullptr;
  bool ok = resolve(handle, "nvmlInit_v2", &init) && resolve(handle, "nvmlShutdown", &api->shutdown_) &&
            resolve(handle, "nvmlDeviceGetCount_v2", &api->device_get_count) &&
            resolve(handle, "nvmlDeviceGetHandleByIndex_v2", &api->device_get_handle_by_index) &&
            resolve(handle, "nvmlDeviceGetName", &api->device_get_name) &&
            resolve(handle, "nvmlDeviceGetUtilizationRates", &api->device_get_utilization_rates) &&
            resolve(handle, "nvmlDeviceGetMemoryInfo", &api->device_get_memory_info) &&
            resolve(handle, "nvmlDeviceGetTemperature", &api->device_get_temperature);
  if (!ok) {
    if (reason) *reason = "NVML (" + library + ") lacks a required symbol: driver too old";
    return nullptr;  // destructor dlcloses; nvmlInit was not called
  }
  // Optional: missing on old drivers or some boards; readings become NaN/0.
  resolve(handle, "nvmlErrorString", &api->error_string_);
  resolve(handle, "nvmlSystemGetDriverVersion", &api->system_get_driver_version_);
  resolve(handle, "nvmlDeviceGetHandleByPciBusId_v2", &api->device_get_handle_by_pci_bus_id);
  resolve(handle, "nvmlDeviceGetPowerUsage", &api->device_get_power_usage);
  resolve(handle, "nvmlDeviceGetEnforcedPowerLimit", &api->device_get_enforced_power_limit);
  resolve(handle, "nvmlDeviceGetClockInfo", &api->device_get_clock_info);
  NvmlReturn r = init();
  if (r != 0) {
    if (reason) *reason = "nvmlInit_v2 failed: " + api->error_string(r);
    return nullptr;
  }
  api->initialised_ = true;
  return api;
}

NvmlApi::~NvmlApi() {
  if (initialised_ && shutdown_) shutdown_();
  if (handle_) dlclose(handle_);
}

std::string NvmlApi::error_string(NvmlReturn r) const {
  if (error_string_) {
    const char* s = error_string_(r);
    if (s) return s;
  }
  return "NVML error " + std::to_string(r);
}

std::string NvmlApi::driver_version() const {
  if (!system_get_driver_version_) return "";
  char buf[96] = {};
  if (system_get_driver_version_(buf, sizeof(buf)) != 0) return "";
  return buf;
}

}  // namespace diffuse::sys
