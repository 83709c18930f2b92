// The slice of NVML (libnvidia-ml.so.1) that Diffuse uses, resolved with
// dlopen/dlsym at run time so the binary starts on machines without an NVIDIA
// driver (the practice of nvidia-settings' NvCtrlAttributesNvml.c and nvtop).
// Types mirror nvml.h by value; only the fields we read are declared.
#pragma once
#include <memory>
#include <string>

namespace diffuse::sys {

using NvmlReturn = int;  // nvmlReturn_t; 0 == NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;

struct NvmlUtilization {  // nvmlUtilization_t
  unsigned int gpu;
  unsigned int memory;
};
struct NvmlMemory {  // nvmlMemory_t (v1)
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

constexpr int kNvmlTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU
constexpr int kNvmlClockSm = 1;         // NVML_CLOCK_SM

class NvmlApi {
 public:
  // Loads `library` and calls nvmlInit_v2. Returns null and fills `reason`
  // ("NVML not found (libnvidia-ml.so.1): ...") instead of throwing.
  static std::shared_ptr<NvmlApi> load(const std::string& library, std::string* reason);
  ~NvmlApi();  // nvmlShutdown + dlclose
  NvmlApi(const NvmlApi&) = delete;
  NvmlApi& operator=(const NvmlApi&) = delete;

  std::string error_string(NvmlReturn r) const;
  std::string driver_version() const;  // "580.159.04", or "" when unavailable

  NvmlReturn (*device_get_count)(unsigned int*) = nullptr;
  NvmlReturn (*device_get_handle_by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*device_get_handle_by_pci_bus_id)(const char*, NvmlDevice*) = nullptr;  // optional
  NvmlReturn (*device_get_name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*device_get_utilization_rates)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*device_get_memory_info)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*device_get_temperature)(NvmlDevice, int, unsigned int*) = nullptr;
  NvmlReturn (*device_get_power_usage)(NvmlDevice, unsigned int*) = nullptr;           // optional
  NvmlReturn (*device_get_enforced_power_limit)(NvmlDevice, unsigned int*) = nullptr;  // optional
  NvmlReturn (*device_get_clock_info)(NvmlDevice, int, unsigned int*) = nullptr;       // optional

 private:
  NvmlApi() = default;
  void* handle_ = nullptr;
  bool initialised_ = false;
  NvmlReturn (*shutdown_)() = nullptr;
  const char* (*error_string_)(NvmlReturn) = nullptr;
  NvmlReturn (*system_get_driver_version_)(char*, unsigned int) = nullptr;
};

}  // namespace diffuse::sys
