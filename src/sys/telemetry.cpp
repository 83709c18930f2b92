#include "sys/telemetry.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "sys/cpu_info.h"
#include "sys/nvml_api.h"

namespace diffuse::sys {

bool read_cpu_jiffies(uint64_t* busy, uint64_t* total, const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (!std::getline(f, line)) return false;
  std::istringstream ss(line);
  std::string label;
  ss >> label;
  if (label != "cpu") return false;
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  uint64_t v[8] = {};
  for (int i = 0; i < 8 && (ss >> v[i]); ++i) {
  }
  uint64_t idle = v[3] + v[4];
  uint64_t sum = 0;
  for (uint64_t x : v) sum += x;
  *total = sum;
  *busy = sum - idle;
  return true;
}

uint64_t process_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

std::unique_ptr<Telemetry> Telemetry::open(const std::string& nvml_library) {
  std::unique_ptr<Telemetry> t(new Telemetry());
  t->nvml_ = NvmlApi::load(nvml_library, &t->reason_);
  if (t->nvml_) {
    unsigned int count = 0;
    if (t->nvml_->device_get_count(&count) != 0 || count == 0) {
      t->reason_ = "NVML loaded but reports no GPUs";
      t->nvml_.reset();
    }
  }
  read_cpu_jiffies(&t->prev_busy_, &t->prev_total_);
  return t;
}

Telemetry::~Telemetry() = default;

std::string Telemetry::driver_version() const { return nvml_ ? nvml_->driver_version() : ""; }

std::vector<GpuSample> Telemetry::sample() {
  std::vector<GpuSample> out;
  if (!nvml_) return out;
  unsigned int count = 0;
  if (nvml_->device_get_count(&count) != 0) return out;
  const double nan = std::nan("");
  for (unsigned int i = 0; i < count; ++i) {
    NvmlDevice dev = nullptr;
    if (nvml_->device_get_handle_by_index(i, &dev) != 0) continue;
    GpuSample s;
    s.index = static_cast<int>(i);
    char name[96] = {};
    if (nvml_->device_get_name(dev, name, sizeof(name)) == 0) s.name = name;
    NvmlUtilization u{};
    if (nvml_->device_get_utilization_rates(dev, &u) == 0) {  // NOT_SUPPORTED under MIG
      s.gpu_util = u.gpu;
      s.mem_util = u.memory;
    } else {
      s.gpu_util = s.mem_util = nan;
    }
    NvmlMemory m{};
    if (nvml_->device_get_memory_info(dev, &m) == 0) {
      s.mem_used = m.used;
      s.mem_total = m.total;
    }
    unsigned int v = 0;
    s.temperature_c = nvml_->device_get_temperature(dev, kNvmlTemperatureGpu, &v) == 0 ? v : nan;
    s.power_w = nvml_->device_get_power_usage && nvml_->device_get_power_usage(dev, &v) == 0 ? v / 1000.0 : nan;
    s.power_limit_w =
        nvml_->device_get_enforced_power_limit && nvml_->device_get_enforced_power_limit(dev, &v) == 0 ? v / 1000.0 : nan;
    s.sm_clock_mhz =
        nvml_->device_get_clock_info && nvml_->device_get_clock_info(dev, kNvmlClockSm, &v) == 0 ? static_cast<int>(v) : 0;
    out.push_back(std::move(s));
  }
  return out;
}

CpuSample Telemetry::sample_cpu() {
  CpuSample s;
  uint64_t busy = 0, total = 0;
  if (read_cpu_jiffies(&busy, &total)) {
    uint64_t d_total = total - prev_total_;
    uint64_t d_busy = busy - prev_busy_;
    s.cpu_util = d_total > 0 && busy >= prev_busy_ ? 100.0 * static_cast<double>(d_busy) / static_cast<double>(d_total) : 0;
    prev_busy_ = busy;
    prev_total_ = total;
  }
  MemInfo mem = read_meminfo();
  s.ram_total = mem.total;
  s.ram_used = mem.total > mem.available ? mem.total - mem.available : 0;
  s.process_rss = process_rss_bytes();
  return s;
}

}  // namespace diffuse::sys
