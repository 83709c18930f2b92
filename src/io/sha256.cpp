// SHA-256 per FIPS 180-4 section 6.2, with an x86 SHA-NI path chosen at run time.
#include "io/sha256.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include <fcntl.h>
#include <unistd.h>

#include "core/error.h"

namespace diffuse {
namespace {

constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

std::string to_hex(const uint8_t* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return s;
}

// Closes the descriptor on every path out of the streaming loops.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

int open_for_hash(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_error(ErrorCode::kIo, path + ": cannot open for hashing: " + std::strerror(errno));
  return fd;
}

}  // namespace

namespace sha256_detail {

void compress_portable(uint32_t state[8], const uint8_t* block, size_t blocks) {
  for (; blocks > 0; --blocks, block += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t(block[4 * i]) << 24) | (uint32_t(block[4 * i + 1]) << 16) |
             (uint32_t(block[4 * i + 2]) << 8) | uint32_t(block[4 * i + 3]);
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      uint32_t ch = (e & f) ^ (~e & g);
      uint32_t t1 = h + s1 + ch + kRoundConstants[i] + w[i];
      uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      uint32_t t2 = s0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

#if defined(__x86_64__) || defined(__i386__)
// Intel SHA extensions (Intel, "Intel SHA Extensions", 2013): the state is
// kept as ABEF / CDGH; each sha256rnds2 does two rounds, and sha256msg1/2
// compute the message schedule four words at a time.
__attribute__((target("sha,sse4.1,ssse3"))) void compress_hw(uint32_t state[8], const uint8_t* data, size_t blocks) {
  const __m128i kByteSwap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[0]));  // DCBA (lane 0 = A)
  __m128i st1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[4]));  // HGFE
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                                           // CDAB
  st1 = _mm_shuffle_epi32(st1, 0x1B);                                           // EFGH
  __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                   // ABEF
  st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                        // CDGH
  for (; blocks > 0; --blocks, data += 64) {
    __m128i abef = st0, cdgh = st1;
    __m128i m[4];
#pragma GCC unroll 16  // fully unrolled, m[] lives in registers
    for (int g = 0; g < 16; ++g) {
      if (g < 4) {
        m[g] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(data + 16 * g)), kByteSwap);
      } else {
        // W[t] = sigma1(W[t-2]) + W[t-7] + sigma0(W[t-15]) + W[t-16], four at a time.
        __m128i x = _mm_sha256msg1_epu32(m[(g - 4) & 3], m[(g - 3) & 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(m[(g - 1) & 3], m[(g - 2) & 3], 4));
        m[g & 3] = _mm_sha256msg2_epu32(x, m[(g - 1) & 3]);
      }
      __m128i wk = _mm_add_epi32(m[g & 3], _mm_loadu_si128(reinterpret_cast<const __m128i*>(&kRoundConstants[4 * g])));
      st1 = _mm_sha256rnds2_epu32(st1, st0, wk);
      wk = _mm_shuffle_epi32(wk, 0x0E);
      st0 = _mm_sha256rnds2_epu32(st0, st1, wk);
    }
    st0 = _mm_add_epi32(st0, abef);
    st1 = _mm_add_epi32(st1, cdgh);
  }
  tmp = _mm_shuffle_epi32(st0, 0x1B);      // FEBA
  st1 = _mm_shuffle_epi32(st1, 0xB1);      // DCHG
  st0 = _mm_blend_epi16(tmp, st1, 0xF0);   // DCBA
  st1 = _mm_alignr_epi8(st1, tmp, 8);      // HGFE
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[0]), st0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[4]), st1);
}

bool hw_available() {
  static const bool available = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    bool sse41 = (c >> 19) & 1, ssse3 = (c >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return sse41 && ssse3 && ((b >> 29) & 1);
  }();
  return available;
}
#else
void compress_hw(uint32_t state[8], const uint8_t* data, size_t blocks) { compress_portable(state, data, blocks); }
bool hw_available() { return false; }
#endif

}  // namespace sha256_detail

Sha256::Sha256() {
  static constexpr uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::memcpy(state_, kInit, sizeof(state_));
}

void Sha256::compress(const uint8_t* blocks, size_t count) {
  if (sha256_detail::hw_available())
    sha256_detail::compress_hw(state_, blocks, count);
  else
    sha256_detail::compress_portable(state_, blocks, count);
}

void Sha256::update(const void* data, size_t size) {
  DIFFUSE_CHECK(!finished_, ErrorCode::kRuntime, "[sha256] update() after digest()");
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_bytes_ += size;
  if (buffered_ > 0) {
    size_t take = std::min(size, sizeof(buffer_) - buffered_);
    std::memcpy(buffer_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    size -= take;
    if (buffered_ < sizeof(buffer_)) return;
    compress(buffer_, 1);
    buffered_ = 0;
  }
  size_t blocks = size / 64;
  if (blocks > 0) compress(p, blocks);
  p += blocks * 64;
  size -= blocks * 64;
  std::memcpy(buffer_, p, size);
  buffered_ = size;
}

void Sha256::digest(uint8_t out[32]) {
  DIFFUSE_CHECK(!finished_, ErrorCode::kRuntime, "[sha256] digest() called twice");
  uint64_t bits = total_bytes_ * 8;
  // Padding: 0x80, zeros up to 56 mod 64, then the bit length big-endian.
  uint8_t pad[72] = {0x80};
  size_t pad_len = (buffered_ < 56) ? 56 - buffered_ : 120 - buffered_;
  for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  update(pad, pad_len + 8);
  finished_ = true;
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<uint8_t>(state_[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(state_[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(state_[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(state_[i]);
  }
}

std::string Sha256::hex_digest() {
  uint8_t out[32];
  digest(out);
  return to_hex(out, 32);
}

std::string sha256_hex(const void* data, size_t size) {
  Sha256 h;
  h.update(data, size);
  return h.hex_digest();
}

std::string sha256_file(const std::string& path) {
  FdCloser fd{open_for_hash(path)};
  constexpr size_t kBufferSize = 8u << 20;  // large reads keep multi-GB checkpoints I/O bound
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[kBufferSize]);
  Sha256 h;
  for (;;) {
    ssize_t n = ::read(fd.fd, buffer.get(), kBufferSize);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_error(ErrorCode::kIo, path + ": read failed while hashing: " + std::strerror(errno));
    }
    if (n == 0) break;
    h.update(buffer.get(), static_cast<size_t>(n));
  }
  return h.hex_digest();
}

std::string a1111_short_hash(const std::string& full_hex) { return full_hex.substr(0, 10); }

std::string a1111_legacy_hash(const std::string& path) {
  FdCloser fd{open_for_hash(path)};
  constexpr size_t kOffset = 0x100000, kLength = 0x10000;
  std::vector<uint8_t> buf(kLength);
  size_t got = 0;
  while (got < kLength) {
    ssize_t n = ::pread(fd.fd, buf.data() + got, kLength - got, static_cast<off_t>(kOffset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_error(ErrorCode::kIo, path + ": read failed while hashing: " + std::strerror(errno));
    }
    if (n == 0) break;  // short files hash whatever lies past 1 MiB (possibly nothing), like Python's read()
    got += static_cast<size_t>(n);
  }
  return sha256_hex(buf.data(), got).substr(0, 8);
}

}  // namespace diffuse
