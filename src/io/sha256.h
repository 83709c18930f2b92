// SHA-256 (FIPS 180-4), own implementation: used for A1111's "Model hash"
// (AutoV2 = first 10 hex digits of sha256(file)) and for cache integrity.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace diffuse {

// Block functions, exposed so tests can check the SHA-NI path against the
// portable one: each consumes `blocks` 64-byte blocks into `state`.
namespace sha256_detail {
void compress_portable(uint32_t state[8], const uint8_t* data, size_t blocks);
void compress_hw(uint32_t state[8], const uint8_t* data, size_t blocks);  // needs hw_available()
bool hw_available();  // x86 SHA extensions + SSE4.1 (CPUID, checked once)
}  // namespace sha256_detail

// Incremental hasher (uses the SHA extensions when the CPU has them): update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void digest(uint8_t out[32]);  // finalises; the object must not be updated afterwards
  std::string hex_digest();      // lowercase hex of digest()

 private:
  void compress(const uint8_t* blocks, size_t count);

  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

std::string sha256_hex(const void* data, size_t size);
// Streams the file through a large buffer; throws Error(kIo) when unreadable.
std::string sha256_file(const std::string& path);
// A1111 "Model hash" (AutoV2): the first 10 hex digits of sha256_file.
std::string a1111_short_hash(const std::string& full_hex);
// A1111's legacy "AutoV1" hash: 8 hex digits of sha256 over the 64 KiB at
// offset 1 MiB (modules/sd_models.py:model_hash); "NOFILE" style errors throw.
std::string a1111_legacy_hash(const std::string& path);

}  // namespace diffuse
