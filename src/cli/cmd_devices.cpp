// diffuse devices (like `clinfo -l`) and diffuse monitor (like `xpu-smi dump`).
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "sys/cpu_info.h"
#include "sys/cuda_devices.h"
#include "sys/devices.h"
#include "sys/monitor.h"

namespace diffuse::cli {

Action add_devices(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* c = app.add_subcommand("devices", "List compute devices (CPU features, CUDA GPUs), like clinfo -l");
  c->add_flag("--json", *json, "Print as JSON");
  return [json]() {
    sys::CpuInfo cpu = sys::cpu_info();
    sys::GpuQuery gpus = sys::cuda_devices();
    std::cout << (*json ? sys::format_devices_json(cpu, gpus) : sys::format_devices(cpu, gpus)) << std::endl;
    return kExitOk;
  };
}

Action add_monitor(CLI::App& app) {
  auto o = std::make_shared<sys::MonitorOptions>();
  auto format = std::make_shared<std::string>("csv");
  CLI::App* c = app.add_subcommand("monitor", "Dump GPU utilisation, memory, power and temperature, like xpu-smi dump");
  c->footer("Example: diffuse monitor --interval 1 --count 10 --format csv\n"
            "Without an NVIDIA GPU (NVML) it prints CPU utilisation and RAM instead.");
  c->add_option("-i,--interval", o->interval_s, "Seconds between samples (default: 1)");
  c->add_option("-n,--count", o->count, "Number of samples (default: 0 = until Ctrl-C)");
  c->add_option("--format", *format, "csv or json (JSON lines)");
  return [o, format]() {
    o->format = sys::parse_monitor_format(*format);
    o->validate();
    install_signal_handlers();
    sys::run_monitor(*o, std::cout, [] { return interrupted(); });
    return kExitOk;
  };
}

}  // namespace diffuse::cli
