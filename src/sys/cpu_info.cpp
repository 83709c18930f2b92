#include "sys/cpu_info.h"

#include <cpuid.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

namespace diffuse::sys {
namespace {

struct Regs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf = 0) {
  Regs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return Regs{};
  return r;
}

uint64_t xgetbv0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  s = s.substr(b, e - b + 1);
  // Some brand strings pad with runs of spaces ("Intel(R) Xeon(R)   CPU"): squeeze them.
  std::string out;
  for (char c : s) {
    if (c == ' ' && !out.empty() && out.back() == ' ') continue;
    out += c;
  }
  return out;
}

std::string brand_string() {
  Regs top = cpuid(0x80000000u);
  if (top.eax < 0x80000004u) return "";
  char brand[49] = {};
  for (unsigned i = 0; i < 3; ++i) {
    Regs r = cpuid(0x80000002u + i);
    unsigned words[4] = {r.eax, r.ebx, r.ecx, r.edx};
    for (int w = 0; w < 4; ++w)
      for (int b = 0; b < 4; ++b) brand[i * 16 + w * 4 + b] = static_cast<char>((words[w] >> (8 * b)) & 0xff);
  }
  return trim(brand);
}

// Feature bits follow the Intel SDM vol. 2A, CPUID leaf 1 and leaf 7. The
// AVX family is reported only when the OS saves the wider registers (XCR0),
// as the kernel does when it lists the flags in /proc/cpuinfo.
std::vector<std::string> detect_isa() {
  std::vector<std::string> isa;
  Regs l0 = cpuid(0);
  unsigned max_leaf = l0.eax;
  if (max_leaf < 1) return isa;
  Regs l1 = cpuid(1);
  Regs l7{}, l7s1{};
  if (max_leaf >= 7) {
    l7 = cpuid(7, 0);
    if (l7.eax >= 1) l7s1 = cpuid(7, 1);
  }
  const bool osxsave = (l1.ecx >> 27) & 1;
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_ok = (xcr0 & 0x6) == 0x6;             // XMM | YMM state
  const bool zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  // opmask | ZMM_Hi256 | Hi16_ZMM
  const bool amx_ok = (xcr0 & 0x60000) == 0x60000;     // XTILECFG | XTILEDATA
  auto bit = [](unsigned reg, int b) { return ((reg >> b) & 1u) != 0; };

  auto add = [&](bool present, const char* name) {
    if (present) isa.emplace_back(name);
  };
  add(bit(l1.ecx, 19), "sse4_1");
  add(bit(l1.ecx, 20), "sse4_2");
  add(ymm_ok && bit(l1.ecx, 28), "avx");
  add(ymm_ok && bit(l7.ebx, 5), "avx2");
  add(ymm_ok && bit(l1.ecx, 12), "fma");
  add(ymm_ok && bit(l1.ecx, 29), "f16c");
  add(ymm_ok && bit(l7s1.eax, 4), "avx_vnni");
  add(zmm_ok && bit(l7.ebx, 16), "avx512f");
  add(zmm_ok && bit(l7.ebx, 17), "avx512dq");
  add(zmm_ok && bit(l7.ebx, 30), "avx512bw");
  add(zmm_ok && bit(l7.ebx, 31), "avx512vl");
  add(zmm_ok && bit(l7.ecx, 11), "avx512_vnni");
  add(zmm_ok && bit(l7s1.eax, 5), "avx512_bf16");
  add(zmm_ok && bit(l7.edx, 23), "avx512_fp16");
  add(amx_ok && bit(l7.edx, 22), "amx_bf16");
  add(amx_ok && bit(l7.edx, 24), "amx_tile");
  add(amx_ok && bit(l7.edx, 25), "amx_int8");
  return isa;
}

// Physical cores: unique (physical id, core id) pairs; falls back to the
// thread count when /proc/cpuinfo lacks topology (some VMs, containers).
std::pair<std::string, int> read_proc_cpuinfo() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model;
  std::set<std::pair<std::string, std::string>> cores;
  std::string phys = "0";
  while (std::getline(f, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = trim(line.substr(0, colon));
    std::string value = trim(line.substr(colon + 1));
    if (key == "model name" && model.empty()) model = value;
    if (key == "physical id") phys = value;
    if (key == "core id") cores.emplace(phys, value);
  }
  return {model, static_cast<int>(cores.size())};
}

}  // namespace

const std::vector<std::string>& known_isa_names() {
  static const std::vector<std::string> names = {
      "sse4_1",   "sse4_2",    "avx",         "avx2",        "fma",         "f16c",
      "avx_vnni", "avx512f",   "avx512dq",    "avx512bw",    "avx512vl",    "avx512_vnni",
      "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"};
  return names;
}

MemInfo read_meminfo(const std::string& path) {
  MemInfo m;
  std::ifstream f(path);
  std::string key;
  uint64_t value = 0;
  std::string unit;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    if (!(ss >> key >> value)) continue;
    ss >> unit;
    uint64_t bytes = unit == "kB" ? value * 1024 : value;
    if (key == "MemTotal:") m.total = bytes;
    if (key == "MemAvailable:") m.available = bytes;
  }
  return m;
}

CpuInfo cpu_info() {
  CpuInfo info;
  auto [proc_model, proc_cores] = read_proc_cpuinfo();
  info.model = brand_string();
  if (info.model.empty()) info.model = proc_model.empty() ? "unknown CPU" : proc_model;
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  info.threads = online > 0 ? static_cast<int>(online) : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  info.cores = proc_cores > 0 ? std::min(proc_cores, info.threads) : info.threads;
  info.isa = detect_isa();
  MemInfo mem = read_meminfo();
  info.mem_total = mem.total;
  info.mem_available = mem.available;
  return info;
}

}  // namespace diffuse::sys
