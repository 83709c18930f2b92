// Telemetry and `diffuse monitor` output, on this machine (no NVML here) and
// with NVML forced absent so the result does not depend on the host.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "sys/monitor.h"
#include "sys/telemetry.h"
#include "test_util.h"

using namespace diffuse::sys;

namespace {

constexpr const char* kNoNvml = "/nonexistent/libnvidia-ml.so.1";

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) lines.push_back(line);
  return lines;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream ss(line);
  std::string f;
  while (std::getline(ss, f, ',')) fields.push_back(f);
  return fields;
}

}  // namespace

TEST(Telemetry, AbsentNvmlIsNotAnError) {
  std::unique_ptr<Telemetry> t;
  ASSERT_NO_THROW(t = Telemetry::open(kNoNvml));
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->gpu_available());
  EXPECT_NE(t->gpu_unavailable_reason().find("NVML not found"), std::string::npos) << t->gpu_unavailable_reason();
  EXPECT_TRUE(t->sample().empty());
  EXPECT_EQ(t->driver_version(), "");
}

TEST(Telemetry, DefaultOpenNeverThrows) {
  std::unique_ptr<Telemetry> t;
  ASSERT_NO_THROW(t = Telemetry::open());
  if (!t->gpu_available()) {
    EXPECT_FALSE(t->gpu_unavailable_reason().empty());
    return;
  }
  for (const GpuSample& s : t->sample()) {
    EXPECT_GT(s.mem_total, 0u);
    EXPECT_LE(s.mem_used, s.mem_total);
  }
}

TEST(Telemetry, CpuSampleSeesBusyWork) {
  auto t = Telemetry::open(kNoNvml);
  t->sample_cpu();
  // Spin for 300 ms: utilisation over the window must be above zero.
  volatile double sink = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) sink = sink + 1.0;
  CpuSample s = t->sample_cpu();
  EXPECT_GT(s.cpu_util, 0.0);
  EXPECT_LE(s.cpu_util, 100.0);
  EXPECT_GT(s.ram_total, 0u);
  EXPECT_GT(s.ram_used, 0u);
  EXPECT_LE(s.ram_used, s.ram_total);
  EXPECT_GT(s.process_rss, 1u << 20);
}

TEST(Telemetry, ProcStatParser) {
  std::string dir = diffuse::testing::temp_dir();
  std::ofstream(dir + "/stat") << "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
  uint64_t busy = 0, total = 0;
  ASSERT_TRUE(read_cpu_jiffies(&busy, &total, dir + "/stat"));
  EXPECT_EQ(total, 100u + 5 + 50 + 800 + 20 + 1 + 2 + 3);
  EXPECT_EQ(busy, total - 800 - 20);
  EXPECT_FALSE(read_cpu_jiffies(&busy, &total, dir + "/missing"));
}

TEST(Monitor, CsvWithoutGpuPrintsNoteHeaderAndCpuLines) {
  MonitorOptions o;
  o.interval_s = 0.1;
  o.count = 2;
  o.nvml_library = kNoNvml;
  std::ostringstream out;
  auto start = std::chrono::steady_clock::now();
  run_monitor(o, out, [] { return false; });
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(elapsed, 0.19);
  EXPECT_LT(elapsed, 2.0);
  auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  EXPECT_EQ(lines[0].rfind("# no GPU telemetry (NVML not found", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1], kCpuCsvHeader);
  for (int i = 2; i < 4; ++i) {
    auto f = split_csv(lines[i]);
    ASSERT_EQ(f.size(), 5u) << lines[i];
    EXPECT_EQ(f[0].size(), 12u) << f[0];  // HH:MM:SS.mmm
    EXPECT_EQ(f[0][2], ':');
    double util = std::stod(f[1]);
    EXPECT_GE(util, 0.0);
    EXPECT_LE(util, 100.0);
    EXPECT_GT(std::stod(f[3]), 0.0);                   // RAM total MiB
    EXPECT_LE(std::stod(f[2]), std::stod(f[3]));       // used <= total
  }
}

TEST(Monitor, JsonLinesWithoutGpu) {
  MonitorOptions o;
  o.interval_s = 0.1;
  o.count = 2;
  o.format = parse_monitor_format("json");
  o.nvml_library = kNoNvml;
  std::ostringstream out;
  run_monitor(o, out, nullptr);
  auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), 3u) << out.str();
  nlohmann::json note = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(note["type"], "note");
  for (int i = 1; i < 3; ++i) {
    nlohmann::json j = nlohmann::json::parse(lines[i]);
    EXPECT_EQ(j["type"], "cpu");
    EXPECT_TRUE(j["cpu_util"].is_number());
    EXPECT_GT(j["ram_total_mib"].get<double>(), 0.0);
    EXPECT_GT(j["unix_ms"].get<int64_t>(), 1600000000000LL);
  }
}

TEST(Monitor, DefaultLibraryGivesHeaderAndTwoSamplesPerDevice) {
  MonitorOptions o;
  o.interval_s = 0.1;
  o.count = 2;
  std::ostringstream out;
  run_monitor(o, out, nullptr);
  auto lines = lines_of(out.str());
  auto telemetry = Telemetry::open();
  if (!telemetry->gpu_available()) {
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_EQ(lines[1], kCpuCsvHeader);
    return;
  }
  size_t devices = telemetry->sample().size();
  ASSERT_EQ(lines.size(), 1 + 2 * devices);
  EXPECT_EQ(lines[0], kGpuCsvHeader);
  EXPECT_EQ(split_csv(lines[1]).size(), 7u);
}

TEST(Monitor, StopsWhenAsked) {
  MonitorOptions o;
  o.interval_s = 10;
  o.count = 0;  // forever
  o.nvml_library = kNoNvml;
  std::ostringstream out;
  auto start = std::chrono::steady_clock::now();
  run_monitor(o, out, [&] { return std::chrono::steady_clock::now() - start > std::chrono::milliseconds(150); });
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_EQ(lines_of(out.str()).size(), 2u);  // note + header, no sample yet
}

TEST(Monitor, BadOptionsAreRejected) {
  MonitorOptions o;
  o.interval_s = 0;
  std::ostringstream out;
  try {
    run_monitor(o, out, nullptr);
    FAIL() << "interval 0 accepted";
  } catch (const diffuse::Error& e) {
    EXPECT_EQ(e.code(), diffuse::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("--interval"), std::string::npos);
  }
  EXPECT_THROW(parse_monitor_format("xml"), diffuse::Error);
  EXPECT_EQ(parse_monitor_format("csv"), MonitorFormat::kCsv);
}
