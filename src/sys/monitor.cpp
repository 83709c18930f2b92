#include "sys/monitor.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "core/error.h"
#include "sys/telemetry.h"

namespace diffuse::sys {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

struct Stamp {
  std::string clock;  // "13:34:51.000", local time, as xpu-smi prints it
  int64_t unix_ms = 0;
};

Stamp now_stamp() {
  auto now = std::chrono::system_clock::now();
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&secs, &tm);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return {buf, ms};
}

std::string num(double v) {  // fixed 2 decimals; N/A for readings the board lacks
  if (std::isnan(v)) return "N/A";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

nlohmann::json json_num(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

// Sleeps until `deadline` in short slices; false when asked to stop.
bool wait_until(std::chrono::steady_clock::time_point deadline, const std::function<bool()>& should_stop) {
  while (true) {
    if (should_stop && should_stop()) return false;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(deadline - now, std::chrono::milliseconds(50)));
  }
}

void write_gpu(std::ostream& out, MonitorFormat format, const Stamp& t, const GpuSample& s) {
  if (format == MonitorFormat::kCsv) {
    char id[16];
    std::snprintf(id, sizeof(id), "%5d", s.index);
    out << t.clock << "," << id << ", " << num(s.gpu_util) << ", " << num(s.mem_util) << ", "
        << num(static_cast<double>(s.mem_used) / kMiB) << ", " << num(s.power_w) << ", " << num(s.temperature_c) << "\n";
    return;
  }
  nlohmann::json j = {{"type", "gpu"},
                      {"timestamp", t.clock},
                      {"unix_ms", t.unix_ms},
                      {"device", s.index},
                      {"name", s.name},
                      {"gpu_util", json_num(s.gpu_util)},
                      {"mem_util", json_num(s.mem_util)},
                      {"mem_used_mib", static_cast<double>(s.mem_used) / kMiB},
                      {"mem_total_mib", static_cast<double>(s.mem_total) / kMiB},
                      {"power_w", json_num(s.power_w)},
                      {"power_limit_w", json_num(s.power_limit_w)},
                      {"temperature_c", json_num(s.temperature_c)},
                      {"sm_clock_mhz", s.sm_clock_mhz}};
  out << j.dump() << "\n";
}

void write_cpu(std::ostream& out, MonitorFormat format, const Stamp& t, const CpuSample& s) {
  if (format == MonitorFormat::kCsv) {
    out << t.clock << ", " << num(s.cpu_util) << ", " << num(static_cast<double>(s.ram_used) / kMiB) << ", "
        << num(static_cast<double>(s.ram_total) / kMiB) << ", " << num(static_cast<double>(s.process_rss) / kMiB) << "\n";
    return;
  }
  nlohmann::json j = {{"type", "cpu"},
                      {"timestamp", t.clock},
                      {"unix_ms", t.unix_ms},
                      {"cpu_util", s.cpu_util},
                      {"ram_used_mib", static_cast<double>(s.ram_used) / kMiB},
                      {"ram_total_mib", static_cast<double>(s.ram_total) / kMiB},
                      {"process_rss_mib", static_cast<double>(s.process_rss) / kMiB}};
  out << j.dump() << "\n";
}

}  // namespace

void MonitorOptions::validate() const {
  DIFFUSE_CHECK_ARG(std::isfinite(interval_s) && interval_s > 0,
                    "[monitor] --interval must be a positive number of seconds, got " + std::to_string(interval_s));
  DIFFUSE_CHECK_ARG(count >= 0, "[monitor] --count must be >= 0 (0 = until interrupted), got " + std::to_string(count));
}

MonitorFormat parse_monitor_format(const std::string& name) {
  if (name == "csv") return MonitorFormat::kCsv;
  if (name == "json") return MonitorFormat::kJson;
  throw_error(ErrorCode::kInvalidArgument, "[monitor] unknown --format '" + name + "': expected csv or json");
}

void run_monitor(const MonitorOptions& options, std::ostream& out, const std::function<bool()>& should_stop) {
  options.validate();
  std::unique_ptr<Telemetry> telemetry = Telemetry::open(options.nvml_library);
  const bool gpu = telemetry->gpu_available();
  if (gpu) {
    if (options.format == MonitorFormat::kCsv) out << kGpuCsvHeader << "\n";
  } else {
    std::string note = "no GPU telemetry (" + telemetry->gpu_unavailable_reason() + "); showing CPU and RAM";
    if (options.format == MonitorFormat::kCsv)
      out << "# " << note << "\n" << kCpuCsvHeader << "\n";
    else
      out << nlohmann::json{{"type", "note"}, {"message", note}}.dump() << "\n";
  }
  out.flush();

  const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options.interval_s));
  auto deadline = std::chrono::steady_clock::now();
  for (int i = 0; options.count == 0 || i < options.count; ++i) {
    deadline += step;
    if (!wait_until(deadline, should_stop)) break;
    Stamp t = now_stamp();
    if (gpu) {
      for (const GpuSample& s : telemetry->sample()) write_gpu(out, options.format, t, s);
    } else {
      write_cpu(out, options.format, t, telemetry->sample_cpu());
    }
    out.flush();
  }
}

}  // namespace diffuse::sys
