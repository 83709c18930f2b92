// The --device option of `generate`, `serve`, `bench` and `demo-eval`: one
// parser and one resolution for every command.
//
//   auto     the first CUDA GPU that is usable (driver present, this build's
//            kernels run on it), otherwise the CPU
//   cpu      the CPU backend (oneDNN)
//   cuda     cuda:0
//   cuda:N   CUDA device N (numbered as CUDA_VISIBLE_DEVICES leaves them)
#pragma once
#include <string>

#include "core/tensor.h"
#include "sys/cuda_devices.h"

namespace diffuse::sys {

// The --device help text of the commands that default to auto.
inline constexpr const char* kDeviceHelp =
    "auto (the first usable CUDA GPU, else the CPU), cpu, cuda or cuda:N (default: auto)";

struct DeviceSpec {
  bool is_auto = false;
  Device device = Device::kCPU;  // when !is_auto
  int ordinal = 0;               // CUDA ordinal when device is kCUDA
};

// Parses a --device value. Throws kInvalidArgument, naming the accepted
// forms, for anything else ("tpu", "cuda:", "cuda:-1", "cuda:1x").
DeviceSpec parse_device_spec(const std::string& text);

struct DeviceChoice {
  Device device = Device::kCPU;
  int ordinal = 0;     // CUDA ordinal when device is kCUDA
  std::string name;    // "cpu" or "cuda:0"
  std::string label;   // name plus what it is: "cuda:0 (NVIDIA H100 80GB HBM3)"
  // The line the commands print on stderr, e.g.
  //   "device: auto -> cuda:0 (NVIDIA H100 80GB HBM3)"
  //   "device: auto -> cpu (no CUDA device: CUDA driver not found (libcuda.so.1): no NVIDIA GPU available)"
  //   "device: cuda:1 (NVIDIA H100 80GB HBM3)"
  std::string line;
};

// Parses and resolves a --device value, and for a GPU makes it the CUDA
// backend's device and starts the backend on it (so a GPU that cannot be used
// fails here, before any model is loaded). Throws kInvalidArgument for a value
// that is not a device, and kUnsupported, saying why, for a GPU that is not
// there or not usable ("--device cuda: no CUDA device (CUDA driver not found
// ...)", "--device cuda:3: there is 1 CUDA device (cuda:0)").
DeviceChoice select_device(const std::string& text);
// The same with the GPU list given (tests pass made-up lists); the backend is
// still started on the GPU chosen.
DeviceChoice select_device(const std::string& text, const GpuQuery& gpus);

}  // namespace diffuse::sys
