// `diffuse monitor [--interval S] [--count N] [--format csv|json]`: prints GPU
// readings like `xpu-smi dump -d 0 -m 0,5,18` (one CSV line per device per
// interval), or JSON lines. Without a GPU it says so once and prints CPU
// utilisation and RAM lines instead, so the command is useful everywhere.
#pragma once
#include <functional>
#include <iosfwd>
#include <string>

namespace diffuse::sys {

enum class MonitorFormat { kCsv, kJson };

struct MonitorOptions {
  double interval_s = 1.0;   // seconds between samples; > 0
  int count = 0;             // samples to print (per device); 0 = until should_stop()
  MonitorFormat format = MonitorFormat::kCsv;
  std::string nvml_library = "libnvidia-ml.so.1";  // tests point this at a missing file

  void validate() const;  // throws Error(kInvalidArgument)
};

// "csv" / "json"; throws Error(kInvalidArgument) naming the accepted values.
MonitorFormat parse_monitor_format(const std::string& name);

inline constexpr const char* kGpuCsvHeader =
    "Timestamp, DeviceId, GPU Utilization (%), GPU Memory Utilization (%), GPU Memory Used (MiB), GPU Power (W), "
    "GPU Core Temperature (Celsius Degree)";
inline constexpr const char* kCpuCsvHeader =
    "Timestamp, CPU Utilization (%), RAM Used (MiB), RAM Total (MiB), Process RSS (MiB)";

// Waits one interval before each sample (CPU utilisation is a delta), writes
// and flushes it, and returns after `count` samples or as soon as
// should_stop() returns true (polled every 50 ms).
void run_monitor(const MonitorOptions& options, std::ostream& out, const std::function<bool()>& should_stop);

}  // namespace diffuse::sys
