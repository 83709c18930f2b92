#include "sys/devices.h"

#include <cstdio>
#include <sstream>

namespace diffuse::sys {
namespace {

// The text view names only extensions that change which kernels run; the
// baseline SSE4/AVX bits are implied by AVX2 and stay in the JSON.
bool shown_in_text(const std::string& isa) { return isa != "sse4_1" && isa != "sse4_2" && isa != "avx"; }

}  // namespace

std::string format_gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string format_devices(const CpuInfo& cpu, const GpuQuery& gpus) {
  std::ostringstream out;
  out << "Platform #0: CPU (oneDNN)\n";
  out << " `-- Device #0: " << cpu.model << " (" << cpu.cores << (cpu.cores == 1 ? " core, " : " cores, ")
      << cpu.threads << (cpu.threads == 1 ? " thread)" : " threads)");
  for (const auto& isa : cpu.isa)
    if (shown_in_text(isa)) out << ' ' << isa;
  out << ", " << format_gib(cpu.mem_total);
  if (cpu.mem_available > 0) out << " (" << format_gib(cpu.mem_available) << " available)";
  out << "\n";

  out << "Platform #1: NVIDIA CUDA";
  if (!gpus.cuda_version.empty()) out << " " << gpus.cuda_version;
  out << "\n";
  if (gpus.gpus.empty()) {
    out << " `-- (no devices: " << gpus.status << ")\n";
    return out.str();
  }
  for (size_t i = 0; i < gpus.gpus.size(); ++i) {
    const GpuInfo& g = gpus.gpus[i];
    out << (i + 1 == gpus.gpus.size() ? " `-- " : " +-- ") << "Device #" << g.index << ": " << g.name << ", "
        << format_gib(g.mem_total);
    if (g.mem_free > 0) out << " (" << format_gib(g.mem_free) << " free)";
    out << ", compute " << g.cc_major << "." << g.cc_minor << ", " << g.sm_count << " SMs";
    if (!g.driver.empty()) out << ", driver " << g.driver;
    out << "\n";
  }
  return out.str();
}

nlohmann::json devices_json(const CpuInfo& cpu, const GpuQuery& gpus) {
  nlohmann::json j;
  j["cpu"] = {{"model", cpu.model},         {"cores", cpu.cores},
              {"threads", cpu.threads},     {"isa", cpu.isa},
              {"mem_total", cpu.mem_total}, {"mem_available", cpu.mem_available}};
  nlohmann::json devs = nlohmann::json::array();
  for (const GpuInfo& g : gpus.gpus) {
    devs.push_back({{"index", g.index},
                    {"name", g.name},
                    {"mem_total", g.mem_total},
                    {"mem_free", g.mem_free},
                    {"compute_capability", std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor)},
                    {"sm_count", g.sm_count},
                    {"driver", g.driver},
                    {"pci_bus_id", g.pci_bus_id}});
  }
  j["cuda"] = {{"status", gpus.status}, {"cuda_version", gpus.cuda_version}, {"devices", devs}};
  return j;
}

std::string format_devices_json(const CpuInfo& cpu, const GpuQuery& gpus) { return devices_json(cpu, gpus).dump(2); }

}  // namespace diffuse::sys
