// Element types as checkpoints store them, and how each becomes a Tensor
// dtype. Types Tensor lacks are converted on load: U8/I8/I16/BOOL -> i32
// (exact), F8_E4M3/F8_E5M2 -> f16 (exact), F64 -> f32 (rounded, like
// torch's .float()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace diffuse {

enum class StoredConversion { kNone, kF64ToF32, kU8ToI32, kI8ToI32, kBoolToI32, kI16ToI32, kF8E4M3ToF16, kF8E5M2ToF16 };

struct StoredType {
  const char* safetensors_name;  // "F16"
  const char* torch_storage;     // "torch.HalfStorage" (nullptr: torch has no typed storage)
  size_t stored_size;            // bytes per element in the file
  DType dtype;                   // what the loaded tensor holds
  StoredConversion conversion;
};

const StoredType* find_safetensors_type(const std::string& name);
const StoredType* find_torch_storage_type(const std::string& qualified_name);
// The safetensors name of a Tensor dtype ("F32", ...).
const char* safetensors_dtype_name(DType d);
// Copies `shape`'s worth of stored elements into a fresh contiguous tensor,
// converting as the type says. `src` need not be aligned.
Tensor convert_stored(const uint8_t* src, const Shape& shape, const StoredType& t);

}  // namespace diffuse
