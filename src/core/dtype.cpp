// Element types and conversions. Bulk f16 conversions use F16C when the CPU
// has it (runtime-dispatched through GCC target_clones, so the default build
// stays portable without -march=native).
#include "core/dtype.h"

#include <cctype>
#include <cmath>

#include "core/error.h"

namespace diffuse {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
  }
  return "?";
}

DType dtype_from_name(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "f32" || n == "fp32" || n == "float32" || n == "float") return DType::kF32;
  if (n == "f16" || n == "fp16" || n == "float16" || n == "half") return DType::kF16;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "i32" || n == "int32") return DType::kI32;
  if (n == "i64" || n == "int64" || n == "long") return DType::kI64;
  throw_error(ErrorCode::kInvalidArgument, "[dtype] unknown dtype name '" + name + "'");
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) {
    // >= 65520 rounds to inf (65504 is the largest finite half).
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = m * 2^-24, round to nearest even.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0
    uint32_t e = abs >> 23;
    uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // 113 + 13 - e... : (e - 127) + 24 - 23 = e - 126 -> right shift by 126 - e
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias exponent, round mantissa to 10 bits (carry may bump the exponent: correct).
  uint32_t h = ((abs - 0x38000000u) >> 13);
  uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  uint32_t x;
  if (e == 0) {
    if (m == 0) {
      x = sign;
    } else {  // subnormal: normalise
      float v = std::ldexp(static_cast<float>(m), -24);
      std::memcpy(&x, &v, 4);
      x |= sign;
    }
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define DIFFUSE_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DIFFUSE_CLONES
#endif

// _Float16 casts compile to vcvtph2ps/vcvtps2ph (vectorised) in the x86-64-v3
// clone and to correct libgcc routines in the default one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define DIFFUSE_HAVE_FLOAT16 1
#endif
DIFFUSE_CLONES void f16_to_f32_n(const uint16_t* src, float* dst, size_t n) {
#if defined(DIFFUSE_HAVE_FLOAT16)
  for (size_t i = 0; i < n; ++i) {
    _Float16 h;
    std::memcpy(&h, src + i, 2);
    dst[i] = static_cast<float>(h);
  }
#else
  for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
#endif
}

DIFFUSE_CLONES void f32_to_f16_n(const float* src, uint16_t* dst, size_t n) {
#if defined(DIFFUSE_HAVE_FLOAT16)
  for (size_t i = 0; i < n; ++i) {
    _Float16 h = static_cast<_Float16>(src[i]);
    std::memcpy(dst + i, &h, 2);
  }
#else
  for (size_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
#endif
}

DIFFUSE_CLONES void bf16_to_f32_n(const uint16_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t u = static_cast<uint32_t>(src[i]) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

DIFFUSE_CLONES void f32_to_bf16_n(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, src + i, 4);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    // NaN: keep it a (quiet) NaN instead of rounding into inf.
    dst[i] = (u & 0x7fffffffu) > 0x7f800000u ? static_cast<uint16_t>((u >> 16) | 0x40) : static_cast<uint16_t>(r >> 16);
  }
}

double load_as_double(const void* p, DType t, size_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::kI32: return static_cast<const int32_t*>(p)[i];
    case DType::kI64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
  }
  return 0;
}

}  // namespace

void convert(const void* src, DType st, void* dst, DType dt, size_t n) {
  if (n == 0) return;
  if (st == dt) {
    std::memcpy(dst, src, n * dtype_size(st));
    return;
  }
  auto* s16 = static_cast<const uint16_t*>(src);
  auto* d16 = static_cast<uint16_t*>(dst);
  if (st == DType::kF16 && dt == DType::kF32) return f16_to_f32_n(s16, static_cast<float*>(dst), n);
  if (st == DType::kBF16 && dt == DType::kF32) return bf16_to_f32_n(s16, static_cast<float*>(dst), n);
  if (st == DType::kF32 && dt == DType::kF16) return f32_to_f16_n(static_cast<const float*>(src), d16, n);
  if (st == DType::kF32 && dt == DType::kBF16) return f32_to_bf16_n(static_cast<const float*>(src), d16, n);
  if (st == DType::kI32 && dt == DType::kI64) {
    for (size_t i = 0; i < n; ++i) static_cast<int64_t*>(dst)[i] = static_cast<const int32_t*>(src)[i];
    return;
  }
  if (st == DType::kI64 && dt == DType::kI32) {
    for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(static_cast<const int64_t*>(src)[i]);
    return;
  }
  if ((st == DType::kF16 || st == DType::kBF16) && (dt == DType::kF16 || dt == DType::kBF16)) {
    // Through f32 in chunks (both directions are exact or single-rounding).
    float buf[256];
    for (size_t i = 0; i < n; i += 256) {
      size_t m = n - i < 256 ? n - i : 256;
      convert(s16 + i, st, buf, DType::kF32, m);
      convert(buf, DType::kF32, d16 + i, dt, m);
    }
    return;
  }
  // Remaining pairs involve integers and floats: go through double (integer
  // targets truncate towards zero, like a C cast / torch .to(int)).
  for (size_t i = 0; i < n; ++i) {
    double v = load_as_double(src, st, i);
    switch (dt) {
      case DType::kF32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
      case DType::kF16: d16[i] = f32_to_f16(static_cast<float>(v)); break;
      case DType::kBF16: d16[i] = f32_to_bf16(static_cast<float>(v)); break;
      case DType::kI32: static_cast<int32_t*>(dst)[i] = std::isfinite(v) ? static_cast<int32_t>(v) : 0; break;
      case DType::kI64: static_cast<int64_t*>(dst)[i] = std::isfinite(v) ? static_cast<int64_t>(v) : 0; break;
    }
  }
}

}  // namespace diffuse
