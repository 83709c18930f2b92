// What `diffuse devices` says about the host CPU: model, core/thread counts,
// the SIMD/matrix extensions the kernels can use (read from CPUID, gated on the
// OS enabling the register state through XGETBV) and system memory.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse::sys {

struct CpuInfo {
  std::string model;                // CPUID brand string, else /proc/cpuinfo "model name"
  int cores = 1;                    // physical cores (unique physical id/core id pairs)
  int threads = 1;                  // logical CPUs online
  std::vector<std::string> isa;     // Linux /proc/cpuinfo names: sse4_2 avx avx2 fma f16c avx512f ...
  uint64_t mem_total = 0;           // bytes, /proc/meminfo MemTotal
  uint64_t mem_available = 0;       // bytes, /proc/meminfo MemAvailable
};

CpuInfo cpu_info();

// Names of the extensions this build knows how to detect, in display order.
const std::vector<std::string>& known_isa_names();

// /proc/meminfo values in bytes (0 when a key is absent). Shared with the monitor.
struct MemInfo {
  uint64_t total = 0;
  uint64_t available = 0;
};
MemInfo read_meminfo(const std::string& path = "/proc/meminfo");

}  // namespace diffuse::sys
