// Which NVIDIA GPUs this process could use, asked of the CUDA *driver* API
// (libcuda.so.1) through dlopen, so `diffuse devices` runs and explains itself
// on a machine with no NVIDIA driver instead of failing to start.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse::sys {

struct GpuInfo {
  int index = 0;            // CUDA ordinal (honours CUDA_VISIBLE_DEVICES)
  std::string name;         // "NVIDIA H100 80GB HBM3"
  uint64_t mem_total = 0;   // bytes
  uint64_t mem_free = 0;    // bytes; from NVML, else from a primary context; 0 when unknown
  int cc_major = 0;
  int cc_minor = 0;
  std::string driver;       // NVML driver version "580.159.04", else "CUDA 12.8"
  std::string pci_bus_id;   // "0000:65:00.0"
  int sm_count = 0;
};

struct GpuQuery {
  std::vector<GpuInfo> gpus;
  std::string cuda_version;  // driver's CUDA API version "12.8", "" when no driver
  // Always set: "2 CUDA devices" on success, else why there are none, e.g.
  // "CUDA driver not found (libcuda.so.1): no NVIDIA GPU available".
  std::string status;
};

// Never throws. The library names are parameters so tests can force absence.
GpuQuery cuda_devices(const std::string& cuda_library = "libcuda.so.1",
                      const std::string& nvml_library = "libnvidia-ml.so.1");

}  // namespace diffuse::sys
