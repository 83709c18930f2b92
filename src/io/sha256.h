// SHA-256 by OpenSSL's libcrypto (EVP_sha256, which picks SHA-NI / AVX2 code
// itself): used for A1111's "Model hash" (AutoV2 = first 10 hex digits of
// sha256(file)), for hub downloads and for cache integrity.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace diffuse {

// Incremental hasher: update() any number of times, then digest() or hex_digest() once.
// Movable, not copyable.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void digest(uint8_t out[32]);  // finalises; the object must not be updated afterwards
  std::string hex_digest();      // lowercase hex of digest()

 private:
  struct FreeContext {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, FreeContext> ctx_;
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
