#include "io/tensor_checks.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace diffuse {
namespace {

// IEEE halves / bfloats are non-finite exactly when every exponent bit is set,
// so no conversion to float is needed.
int64_t count_non_finite_16(const uint16_t* p, int64_t n, uint16_t exponent_mask) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += (p[i] & exponent_mask) == exponent_mask;
  return bad;
}

int64_t count_non_finite_32(const float* p, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(p[i]);
  return bad;
}

}  // namespace

std::vector<std::string> find_non_finite(const TensorMap& tensors, size_t max_names) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    if (names.size() >= max_names) break;
    if (!tensor.defined() || tensor.numel() == 0 || !is_floating(tensor.dtype()) || tensor.device() != Device::kCPU) {
      continue;
    }
    const Tensor t = tensor.is_contiguous() ? tensor : tensor.contiguous();
    const int64_t n = t.numel();
    int64_t bad = 0;
    switch (t.dtype()) {
      case DType::kF32: bad = count_non_finite_32(t.data<float>(), n); break;
      case DType::kF16: bad = count_non_finite_16(static_cast<const uint16_t*>(t.raw_data()), n, 0x7c00); break;
      case DType::kBF16: bad = count_non_finite_16(static_cast<const uint16_t*>(t.raw_data()), n, 0x7f80); break;
      default: break;
    }
    if (bad > 0) names.push_back(name + " (" + std::to_string(bad) + " non-finite of " + std::to_string(n) + ")");
  }
  return names;
}

}  // namespace diffuse
