// Element types and the scalar conversions between them.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace diffuse {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);   // "f32", "f16", "bf16", "i32", "i64"
DType dtype_from_name(const std::string& name);  // accepts the names above and "fp32"/"fp16"/"float32"...
inline bool is_floating(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// IEEE binary16 <-> float (round to nearest even, handles inf/nan/subnormals).
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

// bfloat16 <-> float (round to nearest even; NaN stays NaN).
inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Bulk conversions (vectorised where the CPU allows); src and dst must not overlap.
void convert(const void* src, DType src_type, void* dst, DType dst_type, size_t count);

}  // namespace diffuse
