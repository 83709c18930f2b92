// The CUDA-driver and NVML paths, exercised without a GPU: the test builds a
// stand-in libcuda/libnvidia-ml (same symbol names and C signatures as cuda.h
// and nvml.h) with the system C compiler and points the loaders at it. NVML
// enumerates the two boards in the opposite order from CUDA, so the PCI bus id
// matching is checked too. Skipped when no C compiler is installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "sys/cuda_devices.h"
#include "sys/devices.h"
#include "sys/monitor.h"
#include "sys/telemetry.h"
#include "test_util.h"

using namespace diffuse::sys;

namespace {

constexpr const char* kFakeDriver = R"C(
#include <stddef.h>
#include <string.h>
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned long long total, free, used; } mem_t;
static int inited = 0;
int cuInit(unsigned int flags) { (void)flags; inited = 1; return FAKE_INIT_RESULT; }
int cuDriverGetVersion(int* v) { *v = 12080; return 0; }
int cuDeviceGetCount(int* n) { if (!inited) return 3; *n = 2; return 0; }
int cuDeviceGet(int* d, int i) { *d = i; return 0; }
int cuDeviceGetName(char* s, int len, int d) { strncpy(s, d == 0 ? "Fake H100" : "Fake L4", len); return 0; }
int cuDeviceTotalMem_v2(size_t* b, int d) { *b = d == 0 ? 85520809984ull : 23034970112ull; return 0; }
int cuDeviceGetAttribute(int* v, int a, int d) {
  switch (a) {
    case 16: *v = d == 0 ? 132 : 58; return 0;
    case 75: *v = d == 0 ? 9 : 8; return 0;
    case 76: *v = d == 0 ? 0 : 9; return 0;
  }
  return 1;
}
int cuDeviceGetPCIBusId(char* s, int len, int d) { strncpy(s, d == 0 ? "0000:65:00.0" : "0000:B3:00.0", len); return 0; }
int cuGetErrorName(int r, const char** s) { (void)r; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
const char* nvmlErrorString(int r) { (void)r; return "fake"; }
int nvmlSystemGetDriverVersion(char* s, unsigned n) { strncpy(s, "580.159.04", n); return 0; }
int nvmlDeviceGetCount_v2(unsigned* n) { *n = 2; return 0; }
/* NVML index 0 is the L4 (bus B3), index 1 the H100 (bus 65): not CUDA's order. */
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void** h) { *h = (void*)(size_t)(i + 1); return 0; }
int nvmlDeviceGetHandleByPciBusId_v2(const char* bus, void** h) {
  if (!strcmp(bus, "0000:B3:00.0")) { *h = (void*)1; return 0; }
  if (!strcmp(bus, "0000:65:00.0")) { *h = (void*)2; return 0; }
  return 6;
}
int nvmlDeviceGetName(void* h, char* s, unsigned n) { strncpy(s, h == (void*)1 ? "Fake L4" : "Fake H100", n); return 0; }
int nvmlDeviceGetUtilizationRates(void* h, util_t* u) { u->gpu = h == (void*)1 ? 7 : 93; u->memory = h == (void*)1 ? 3 : 41; return 0; }
int nvmlDeviceGetMemoryInfo(void* h, mem_t* m) {
  if (h == (void*)1) { m->total = 23034970112ull; m->used = 1073741824ull; }
  else { m->total = 85520809984ull; m->used = 10737418240ull; }
  m->free = m->total - m->used;
  return 0;
}
int nvmlDeviceGetTemperature(void* h, int sensor, unsigned* t) { if (sensor != 0) return 2; *t = h == (void*)1 ? 40 : 65; return 0; }
int nvmlDeviceGetPowerUsage(void* h, unsigned* mw) { if (h == (void*)1) return 3; *mw = 312500; return 0; }
int nvmlDeviceGetEnforcedPowerLimit(void* h, unsigned* mw) { (void)h; *mw = 700000; return 0; }
int nvmlDeviceGetClockInfo(void* h, int type, unsigned* c) { (void)h; if (type != 1) return 2; *c = 1980; return 0; }
)C";

// Builds the stand-in once per process; "" when there is no C compiler.
std::string fake_library(bool init_fails) {
  static std::string dir = diffuse::testing::temp_dir();
  std::string name = init_fails ? "/libfake_noinit.so" : "/libfake_driver.so";
  std::string so = dir + name;
  if (std::ifstream(so).good()) return so;
  std::ofstream(dir + "/fake.c") << kFakeDriver;
  std::string cmd = "cc -shared -fPIC -O0 -DFAKE_INIT_RESULT=" + std::string(init_fails ? "100" : "0") + " -o " + so +
                    " " + dir + "/fake.c 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return "";
  return so;
}

#define REQUIRE_FAKE(var, fails)                                       \
  std::string var = fake_library(fails);                               \
  if (var.empty()) GTEST_SKIP() << "no C compiler to build the stand-in driver"

}  // namespace

TEST(FakeDriver, CudaDevicesReadsEveryField) {
  REQUIRE_FAKE(lib, false);
  GpuQuery q = cuda_devices(lib, lib);
  ASSERT_EQ(q.gpus.size(), 2u) << q.status;
  EXPECT_EQ(q.cuda_version, "12.8");
  EXPECT_EQ(q.status, "2 CUDA devices (driver API 12.8)");
  const GpuInfo& h100 = q.gpus[0];
  EXPECT_EQ(h100.index, 0);
  EXPECT_EQ(h100.name, "Fake H100");
  EXPECT_EQ(h100.mem_total, 85520809984ull);
  EXPECT_EQ(h100.mem_free, 85520809984ull - 10737418240ull);  // NVML handle found by bus id, not by index
  EXPECT_EQ(h100.cc_major, 9);
  EXPECT_EQ(h100.cc_minor, 0);
  EXPECT_EQ(h100.sm_count, 132);
  EXPECT_EQ(h100.pci_bus_id, "0000:65:00.0");
  EXPECT_EQ(h100.driver, "580.159.04");
  EXPECT_EQ(q.gpus[1].mem_free, 23034970112ull - 1073741824ull);
  EXPECT_EQ(q.gpus[1].cc_minor, 9);

  std::string text = format_devices(cpu_info(), q);
  EXPECT_NE(text.find("Platform #1: NVIDIA CUDA 12.8\n +-- Device #0: Fake H100, 79.6 GiB (69.6 GiB free), compute 9.0, "
                      "132 SMs, driver 580.159.04\n `-- Device #1: Fake L4, 21.5 GiB (20.5 GiB free), compute 8.9, 58 SMs"),
            std::string::npos)
      << text;

  // Without NVML the driver version falls back to the CUDA API version.
  GpuQuery no_nvml = cuda_devices(lib, "/nonexistent/libnvidia-ml.so.1");
  ASSERT_EQ(no_nvml.gpus.size(), 2u);
  EXPECT_EQ(no_nvml.gpus[0].driver, "CUDA 12.8");
}

TEST(FakeDriver, FailedInitIsReported) {
  REQUIRE_FAKE(lib, true);
  GpuQuery q = cuda_devices(lib, lib);
  EXPECT_TRUE(q.gpus.empty());
  EXPECT_EQ(q.status.rfind("cuInit failed: CUDA_ERROR_NO_DEVICE", 0), 0u) << q.status;
  EXPECT_EQ(q.cuda_version, "12.8");
}

TEST(FakeDriver, TelemetrySamples) {
  REQUIRE_FAKE(lib, false);
  auto t = Telemetry::open(lib);
  ASSERT_TRUE(t->gpu_available()) << t->gpu_unavailable_reason();
  EXPECT_EQ(t->driver_version(), "580.159.04");
  std::vector<GpuSample> s = t->sample();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].name, "Fake L4");
  EXPECT_EQ(s[0].gpu_util, 7);
  EXPECT_TRUE(std::isnan(s[0].power_w));  // NOT_SUPPORTED is a gap, not an error
  EXPECT_EQ(s[1].index, 1);
  EXPECT_EQ(s[1].name, "Fake H100");
  EXPECT_EQ(s[1].gpu_util, 93);
  EXPECT_EQ(s[1].mem_util, 41);
  EXPECT_EQ(s[1].mem_used, 10737418240ull);
  EXPECT_EQ(s[1].mem_total, 85520809984ull);
  EXPECT_DOUBLE_EQ(s[1].power_w, 312.5);
  EXPECT_DOUBLE_EQ(s[1].power_limit_w, 700.0);
  EXPECT_DOUBLE_EQ(s[1].temperature_c, 65.0);
  EXPECT_EQ(s[1].sm_clock_mhz, 1980);
}

TEST(FakeDriver, MonitorCsvAndJson) {
  REQUIRE_FAKE(lib, false);
  MonitorOptions o;
  o.interval_s = 0.1;
  o.count = 2;
  o.nvml_library = lib;
  std::ostringstream csv;
  run_monitor(o, csv, nullptr);
  std::vector<std::string> lines;
  std::istringstream ss(csv.str());
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 5u) << csv.str();  // header + 2 samples x 2 devices
  EXPECT_EQ(lines[0], kGpuCsvHeader);
  EXPECT_EQ(lines[1].substr(12), ",    0, 7.00, 3.00, 1024.00, N/A, 40.00");
  EXPECT_EQ(lines[2].substr(12), ",    1, 93.00, 41.00, 10240.00, 312.50, 65.00");
  EXPECT_EQ(lines[4].substr(12), lines[2].substr(12));

  o.format = MonitorFormat::kJson;
  std::ostringstream json;
  run_monitor(o, json, nullptr);
  std::istringstream js(json.str());
  int n = 0;
  for (std::string l; std::getline(js, l); ++n) {
    nlohmann::json j = nlohmann::json::parse(l);
    EXPECT_EQ(j["type"], "gpu");
    if (j["device"] == 0) {
      EXPECT_TRUE(j["power_w"].is_null());
    }
    if (j["device"] == 1) {
      EXPECT_EQ(j["power_w"], 312.5);
      EXPECT_EQ(j["sm_clock_mhz"], 1980);
      EXPECT_EQ(j["name"], "Fake H100");
    }
  }
  EXPECT_EQ(n, 4);
}
