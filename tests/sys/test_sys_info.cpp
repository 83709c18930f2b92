// cpu_info / cuda_devices / format_devices: real readings on this machine,
// compared with what the kernel itself reports in /proc.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "sys/cpu_info.h"
#include "sys/cuda_devices.h"
#include "sys/devices.h"
#include "test_util.h"

using namespace diffuse::sys;

namespace {

std::set<std::string> proc_cpu_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) == 0) {
      std::istringstream ss(line.substr(line.find(':') + 1));
      std::set<std::string> flags;
      std::string flag;
      while (ss >> flag) flags.insert(flag);
      return flags;
    }
  }
  return {};
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

}  // namespace

TEST(CpuInfo, CountsAndMemoryAreSane) {
  CpuInfo cpu = cpu_info();
  EXPECT_FALSE(cpu.model.empty());
  EXPECT_GE(cpu.cores, 1);
  EXPECT_GE(cpu.threads, cpu.cores);
  EXPECT_GT(cpu.mem_total, 64ull << 20);
  EXPECT_GT(cpu.mem_available, 0u);
  EXPECT_LE(cpu.mem_available, cpu.mem_total);
}

TEST(CpuInfo, IsaMatchesKernelFlags) {
  std::set<std::string> flags = proc_cpu_flags();
  if (flags.empty()) GTEST_SKIP() << "no flags line in /proc/cpuinfo";
  CpuInfo cpu = cpu_info();
  for (const char* name : {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw"}) {
    EXPECT_EQ(has(cpu.isa, name), flags.count(name) == 1) << name;
  }
  for (const auto& isa : cpu.isa) EXPECT_TRUE(has(known_isa_names(), isa)) << isa;
}

TEST(CpuInfo, MeminfoParser) {
  std::string dir = diffuse::testing::temp_dir();
  std::ofstream(dir + "/meminfo") << "MemTotal:       16384000 kB\nMemFree:  1 kB\nMemAvailable:    8192000 kB\n";
  MemInfo m = read_meminfo(dir + "/meminfo");
  EXPECT_EQ(m.total, 16384000ull * 1024);
  EXPECT_EQ(m.available, 8192000ull * 1024);
  EXPECT_EQ(read_meminfo(dir + "/missing").total, 0u);
}

TEST(CudaDevices, MissingDriverIsReportedNotThrown) {
  GpuQuery q;
  ASSERT_NO_THROW(q = cuda_devices("/nonexistent/libcuda.so.1", "/nonexistent/libnvidia-ml.so.1"));
  EXPECT_TRUE(q.gpus.empty());
  EXPECT_NE(q.status.find("CUDA driver not found (/nonexistent/libcuda.so.1)"), std::string::npos) << q.status;
}

TEST(CudaDevices, DefaultQueryNeverThrowsAndIsConsistent) {
  GpuQuery q;
  ASSERT_NO_THROW(q = cuda_devices());
  EXPECT_FALSE(q.status.empty());
  if (q.gpus.empty()) {
    // This build machine has no NVIDIA driver: the status must say why.
    EXPECT_TRUE(q.status.find("CUDA") != std::string::npos || q.status.find("cu") != std::string::npos) << q.status;
    return;
  }
  for (size_t i = 0; i < q.gpus.size(); ++i) {
    const GpuInfo& g = q.gpus[i];
    EXPECT_EQ(g.index, static_cast<int>(i));
    EXPECT_FALSE(g.name.empty());
    EXPECT_GT(g.mem_total, 0u);
    EXPECT_LE(g.mem_free, g.mem_total);
    EXPECT_GE(g.cc_major, 3);
    EXPECT_GT(g.sm_count, 0);
  }
}

TEST(CudaDevices, LibraryWithoutCudaSymbolsIsReported) {
  // libm is a real shared object without cuInit: the loader must say so, not crash.
  GpuQuery q = cuda_devices("libm.so.6", "/nonexistent/libnvidia-ml.so.1");
  EXPECT_TRUE(q.gpus.empty());
  EXPECT_NE(q.status.find("lacks a required symbol"), std::string::npos) << q.status;
}

TEST(FormatDevices, ClinfoStyleTree) {
  CpuInfo cpu;
  cpu.model = "AMD EPYC";
  cpu.cores = 2;
  cpu.threads = 2;
  cpu.isa = {"sse4_2", "avx", "avx2", "fma", "f16c"};
  cpu.mem_total = static_cast<uint64_t>(23.4 * (1ull << 30));
  GpuQuery q;
  q.cuda_version = "12.8";
  GpuInfo g;
  g.index = 0;
  g.name = "NVIDIA H100 80GB HBM3";
  g.mem_total = static_cast<uint64_t>(79.1 * (1ull << 30));
  g.cc_major = 9;
  g.sm_count = 132;
  g.driver = "580.159.04";
  q.gpus = {g, g};
  q.gpus[1].index = 1;
  q.status = "2 CUDA devices";
  std::string text = format_devices(cpu, q);
  EXPECT_EQ(text,
            "Platform #0: CPU (oneDNN)\n"
            " `-- Device #0: AMD EPYC (2 cores, 2 threads) avx2 fma f16c, 23.4 GiB\n"
            "Platform #1: NVIDIA CUDA 12.8\n"
            " +-- Device #0: NVIDIA H100 80GB HBM3, 79.1 GiB, compute 9.0, 132 SMs, driver 580.159.04\n"
            " `-- Device #1: NVIDIA H100 80GB HBM3, 79.1 GiB, compute 9.0, 132 SMs, driver 580.159.04\n");

  nlohmann::json j = nlohmann::json::parse(format_devices_json(cpu, q));
  EXPECT_EQ(j["cpu"]["cores"], 2);
  EXPECT_EQ(j["cpu"]["isa"].size(), 5u);
  EXPECT_EQ(j["cuda"]["devices"].size(), 2u);
  EXPECT_EQ(j["cuda"]["devices"][1]["compute_capability"], "9.0");
  EXPECT_EQ(j["cuda"]["devices"][0]["sm_count"], 132);
}

TEST(FormatDevices, NoGpuShowsStatus) {
  CpuInfo cpu = cpu_info();
  GpuQuery q = cuda_devices("/nonexistent/libcuda.so.1");
  std::string text = format_devices(cpu, q);
  EXPECT_NE(text.find("Platform #0: CPU"), std::string::npos);
  EXPECT_NE(text.find(" `-- (no devices: CUDA driver not found"), std::string::npos) << text;
  nlohmann::json j = nlohmann::json::parse(format_devices_json(cpu, q));
  EXPECT_TRUE(j["cuda"]["devices"].empty());
  EXPECT_EQ(j["cuda"]["status"], q.status);
}
