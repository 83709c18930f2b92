// Live GPU readings from NVML (libnvidia-ml.so.1, loaded with dlopen) plus CPU
// utilisation and memory from /proc, for `diffuse monitor` and the server's
// status panel. Opening never fails: without NVML gpu_available() is false
// and gpu_unavailable_reason() says why.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace diffuse::sys {

class NvmlApi;

struct GpuSample {
  int index = 0;               // NVML index (PCI order; not remapped by CUDA_VISIBLE_DEVICES)
  std::string name;
  double gpu_util = 0;         // % of time a kernel ran in the last NVML window (not SM occupancy)
  double mem_util = 0;         // % of time device memory was read or written
  uint64_t mem_used = 0;       // bytes
  uint64_t mem_total = 0;      // bytes
  double power_w = 0;          // NaN when the board does not report it
  double power_limit_w = 0;    // NaN when unknown
  double temperature_c = 0;    // NaN when unknown
  int sm_clock_mhz = 0;        // 0 when unknown
};

struct CpuSample {
  double cpu_util = 0;         // % busy across all CPUs since the previous sample_cpu() (or open())
  uint64_t ram_used = 0;       // bytes: MemTotal - MemAvailable
  uint64_t ram_total = 0;      // bytes
  uint64_t process_rss = 0;    // bytes, this process
};

class Telemetry {
 public:
  // Never throws. `nvml_library` is a parameter so tests can force absence.
  static std::unique_ptr<Telemetry> open(const std::string& nvml_library = "libnvidia-ml.so.1");
  ~Telemetry();

  bool gpu_available() const { return nvml_ != nullptr; }
  const std::string& gpu_unavailable_reason() const { return reason_; }
  std::string driver_version() const;

  // One reading per NVML device; empty without NVML. Fields a board cannot
  // report are NaN (power, temperature) or 0, never an exception.
  std::vector<GpuSample> sample();
  CpuSample sample_cpu();

 private:
  Telemetry() = default;
  std::shared_ptr<NvmlApi> nvml_;
  std::string reason_;
  uint64_t prev_busy_ = 0;
  uint64_t prev_total_ = 0;
};

// /proc/stat "cpu" line: busy and total jiffies. Exposed for tests.
bool read_cpu_jiffies(uint64_t* busy, uint64_t* total, const std::string& path = "/proc/stat");
// Resident set size of this process in bytes (/proc/self/statm).
uint64_t process_rss_bytes();

}  // namespace diffuse::sys
