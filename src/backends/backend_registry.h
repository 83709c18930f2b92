// Hooks between the device-independent core and the backends.
//
// The core (core/ops.cpp backend_for, core/tensor.cpp) reaches a device only
// through its Backend (ops.h: ops plus device services) and these hooks. The
// one place that knows which backends this binary was built with is
// src/backends/registry.cpp; the CPU backend is always there.
#pragma once
#include <string>

#include "core/ops.h"

namespace diffuse {

Backend& cpu_backend();

// What the core needs of a non-CPU backend beyond its Backend.
struct DeviceBackendHooks {
  Backend& (*backend)();             // throws kUnsupported without a usable device
  std::string (*start)();            // "" when usable, else why not; never throws
  void (*select_ordinal)(int);       // which physical device, before first use
  std::string (*library_versions)(); // "CUDA runtime 13.0, cuBLASLt ..., cuDNN ..."
};

// nullptr when the binary was built without a backend for `device`.
const DeviceBackendHooks* device_backend_hooks(Device device);

}  // namespace diffuse
