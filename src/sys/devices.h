// `diffuse devices`: the CPU and CUDA platforms, printed in the style of
// `clinfo -l` (one "Platform #i" per backend, a tree of "Device #j" lines),
// or as JSON for scripts and the server's /system_stats.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "sys/cpu_info.h"
#include "sys/cuda_devices.h"

namespace diffuse::sys {

// Platform #0: CPU (oneDNN)
//  `-- Device #0: AMD EPYC (2 cores, 2 threads) avx2 fma f16c, 23.4 GiB
// Platform #1: NVIDIA CUDA
//  `-- Device #0: NVIDIA H100 80GB HBM3, 79.1 GiB (78.6 GiB free), compute 9.0, 132 SMs, driver 580.159.04
// With no GPU the CUDA platform has one line giving GpuQuery::status.
std::string format_devices(const CpuInfo& cpu, const GpuQuery& gpus);

// {"cpu": {...}, "cuda": {"status", "cuda_version", "devices": [...]}}; sizes in bytes.
nlohmann::json devices_json(const CpuInfo& cpu, const GpuQuery& gpus);
std::string format_devices_json(const CpuInfo& cpu, const GpuQuery& gpus);  // devices_json().dump(2)

// "23.4 GiB" (one decimal, binary units); shared with the monitor.
std::string format_gib(uint64_t bytes);

}  // namespace diffuse::sys
