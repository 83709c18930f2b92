#include "io/stored_dtype.h"

#include <cmath>
#include <cstring>

namespace diffuse {
namespace {

using C = StoredConversion;
constexpr StoredType kStoredTypes[] = {
    {"F32", "torch.FloatStorage", 4, DType::kF32, C::kNone},
    {"F16", "torch.HalfStorage", 2, DType::kF16, C::kNone},
    {"BF16", "torch.BFloat16Storage", 2, DType::kBF16, C::kNone},
    {"I32", "torch.IntStorage", 4, DType::kI32, C::kNone},
    {"I64", "torch.LongStorage", 8, DType::kI64, C::kNone},
    {"F64", "torch.DoubleStorage", 8, DType::kF32, C::kF64ToF32},
    {"U8", "torch.ByteStorage", 1, DType::kI32, C::kU8ToI32},
    {"I8", "torch.CharStorage", 1, DType::kI32, C::kI8ToI32},
    {"BOOL", "torch.BoolStorage", 1, DType::kI32, C::kBoolToI32},
    {"I16", "torch.ShortStorage", 2, DType::kI32, C::kI16ToI32},
    {"F8_E4M3", nullptr, 1, DType::kF16, C::kF8E4M3ToF16},
    {"F8_E5M2", nullptr, 1, DType::kF16, C::kF8E5M2ToF16},
};

// float8_e4m3fn (bias 7, no infinities, S.1111.111 = NaN) -> f16 bits.
// Every e4m3 value is exactly representable in f16.
uint16_t f8e4m3_to_f16(uint8_t v) {
  uint16_t sign = static_cast<uint16_t>((v & 0x80u) << 8);
  uint32_t e = (v >> 3) & 0xfu, m = v & 7u;
  if (e == 15 && m == 7) return static_cast<uint16_t>(sign | 0x7e00u);
  float f = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(1.0f + m / 8.0f, static_cast<int>(e) - 7);
  return static_cast<uint16_t>(sign | f32_to_f16(f));
}

}  // namespace

const StoredType* find_safetensors_type(const std::string& name) {
  for (const StoredType& t : kStoredTypes)
    if (name == t.safetensors_name) return &t;
  return nullptr;
}

const StoredType* find_torch_storage_type(const std::string& qualified_name) {
  for (const StoredType& t : kStoredTypes)
    if (t.torch_storage && qualified_name == t.torch_storage) return &t;
  return nullptr;
}

const char* safetensors_dtype_name(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

Tensor convert_stored(const uint8_t* src, const Shape& shape, const StoredType& t) {
  Tensor out = Tensor::empty(shape, t.dtype);
  size_t n = static_cast<size_t>(shape_numel(shape));
  if (n == 0) return out;
  void* dst = out.raw_data();
  switch (t.conversion) {
    case C::kNone: std::memcpy(dst, src, n * t.stored_size); break;
    case C::kF64ToF32:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        static_cast<float*>(dst)[i] = static_cast<float>(d);
      }
      break;
    case C::kU8ToI32:
      for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(dst)[i] = src[i];
      break;
    case C::kI8ToI32:
      for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(dst)[i] = static_cast<int8_t>(src[i]);
      break;
    case C::kBoolToI32:
      for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(dst)[i] = src[i] != 0;
      break;
    case C::kI16ToI32:
      for (size_t i = 0; i < n; ++i) {
        int16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        static_cast<int32_t*>(dst)[i] = v;
      }
      break;
    case C::kF8E4M3ToF16:
      for (size_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f8e4m3_to_f16(src[i]);
      break;
    case C::kF8E5M2ToF16:  // e5m2 is exactly the top byte of an f16
      for (size_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(src[i] << 8);
      break;
  }
  return out;
}

}  // namespace diffuse
