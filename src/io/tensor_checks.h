// Sanity checks on loaded weights. A checkpoint with NaN or Inf weights
// (a broken fp16 conversion, a diverged fine-tune) loads fine but renders
// black or noise images; naming the tensors at load time saves a long hunt.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace diffuse {

// Names of floating-point tensors (f32/f16/bf16, CPU) holding a NaN or an
// infinity, in map order, at most `max_names` of them; each entry reads
// "name (k non-finite of n)". Integer tensors are skipped. Reads every value
// of every float tensor once (no copies of f16 data).
std::vector<std::string> find_non_finite(const TensorMap& tensors, size_t max_names = 10);

}  // namespace diffuse
