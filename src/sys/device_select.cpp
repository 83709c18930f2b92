#include "sys/device_select.h"

#include <cctype>

#include "core/error.h"
#include "core/ops.h"

namespace diffuse::sys {
namespace {

DeviceChoice cpu_choice(const std::string& line) {
  DeviceChoice c;
  c.name = c.label = "cpu";
  c.line = line;
  return c;
}

DeviceChoice gpu_choice(const GpuInfo& g, const std::string& prefix) {
  DeviceChoice c;
  c.device = Device::kCUDA;
  c.ordinal = g.index;
  c.name = "cuda:" + std::to_string(g.index);
  c.label = c.name + " (" + g.name + ")";
  c.line = prefix + c.label;
  return c;
}

std::string count_phrase(size_t n) {  // "there is 1 CUDA device (cuda:0)"
  if (n == 1) return "there is 1 CUDA device (cuda:0)";
  return "there are " + std::to_string(n) + " CUDA devices (cuda:0 to cuda:" + std::to_string(n - 1) + ")";
}

// Makes `ordinal` the CUDA backend's device and starts it there: "" or why not.
std::string start_on(int ordinal) {
  try {
    select_device_ordinal(Device::kCUDA, ordinal);
  } catch (const std::exception& e) {
    return e.what();
  }
  return device_unavailable_reason(Device::kCUDA);
}

}  // namespace

DeviceSpec parse_device_spec(const std::string& text) {
  DeviceSpec spec;
  if (text == "auto") {
    spec.is_auto = true;
    return spec;
  }
  if (text == "cpu") return spec;
  spec.device = Device::kCUDA;
  if (text == "cuda") return spec;
  const std::string digits = text.rfind("cuda:", 0) == 0 ? text.substr(5) : "";
  bool number = !digits.empty() && digits.size() <= 4;
  for (char ch : digits) number = number && std::isdigit(static_cast<unsigned char>(ch));
  if (number) {
    spec.ordinal = std::stoi(digits);
    return spec;
  }
  throw_error(ErrorCode::kInvalidArgument,
              "--device must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), got '" + text + "'");
}

DeviceChoice select_device(const std::string& text) {
  parse_device_spec(text);  // a bad value fails before the driver is asked
  if (text != "cpu" && backend_compiled(Device::kCUDA)) return select_device(text, cuda_devices());
  return select_device(text, GpuQuery{});
}

DeviceChoice select_device(const std::string& text, const GpuQuery& gpus) {
  const DeviceSpec spec = parse_device_spec(text);
  if (!spec.is_auto && spec.device == Device::kCPU) return cpu_choice("device: cpu");
  const std::string asked = "--device " + text;
  if (!backend_compiled(Device::kCUDA)) {
    if (spec.is_auto) return cpu_choice("device: auto -> cpu (this diffuse was built without the CUDA backend)");
    throw_error(ErrorCode::kUnsupported,
                asked + ": this diffuse was built without the CUDA backend (configure with -DDIFFUSE_CUDA=ON)");
  }
  if (spec.is_auto) {
    if (gpus.gpus.empty()) return cpu_choice("device: auto -> cpu (no CUDA device: " + gpus.status + ")");
    std::string why;
    for (const GpuInfo& g : gpus.gpus) {
      const std::string problem = start_on(g.index);
      if (problem.empty()) return gpu_choice(g, "device: auto -> ");
      why += (why.empty() ? "" : "; ") + problem;
    }
    return cpu_choice("device: auto -> cpu (no usable CUDA device: " + why + ")");
  }
  if (gpus.gpus.empty()) throw_error(ErrorCode::kUnsupported, asked + ": no CUDA device (" + gpus.status + ")");
  if (static_cast<size_t>(spec.ordinal) >= gpus.gpus.size()) {
    throw_error(ErrorCode::kUnsupported, asked + ": no such device, " + count_phrase(gpus.gpus.size()));
  }
  const GpuInfo& g = gpus.gpus[spec.ordinal];
  const std::string problem = start_on(g.index);
  if (!problem.empty()) {
    throw_error(ErrorCode::kUnsupported,
                asked + ": cuda:" + std::to_string(g.index) + " (" + g.name + ") is not usable: " + problem);
  }
  return gpu_choice(g, "device: ");
}

}  // namespace diffuse::sys
