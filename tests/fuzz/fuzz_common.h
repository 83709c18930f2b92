// Shared bits of the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp).
// Every target feeds bytes to one parser and accepts only diffuse::Error as a
// failure mode: anything else (a crash, a sanitizer report, a different
// exception type, a hang) is a bug.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "io/checkpoint.h"

namespace diffuse::fuzz {

// Touches every byte of every tensor (so a view past the buffer is caught by
// ASan) and converts floats to f32 (exercises the dtype converters).
inline uint64_t touch_tensors(const TensorMap& tensors) {
  uint64_t acc = 0;
  for (const auto& [name, t] : tensors) {
    acc += name.size();
    if (!t.defined() || t.numel() == 0) continue;
    Tensor c = t.contiguous();
    const auto* bytes = static_cast<const uint8_t*>(c.raw_data());
    for (size_t i = 0; i < c.nbytes(); ++i) acc += bytes[i];
    if (t.numel() <= (1 << 16) && is_floating(t.dtype())) {
      for (float v : t.to(DType::kF32).to_f32_vector()) acc += static_cast<uint64_t>(v == v);
    }
  }
  return acc;
}

}  // namespace diffuse::fuzz
