// SHA-256 through OpenSSL's EVP interface; the file helpers stream through it.
#include "io/sha256.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "core/error.h"

namespace diffuse {
namespace {

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

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

void Sha256::FreeContext::operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
    throw_error(ErrorCode::kRuntime, "[sha256] OpenSSL: " + openssl_error());
}

void Sha256::update(const void* data, size_t size) {
  DIFFUSE_CHECK(ctx_ && !finished_, ErrorCode::kRuntime, "[sha256] update() after digest() or a move");
  if (EVP_DigestUpdate(ctx_.get(), data, size) != 1) throw_error(ErrorCode::kRuntime, "[sha256] OpenSSL: " + openssl_error());
}

void Sha256::digest(uint8_t out[32]) {
  DIFFUSE_CHECK(ctx_ && !finished_, ErrorCode::kRuntime, "[sha256] digest() called twice or after a move");
  finished_ = true;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), out, &len) != 1 || len != 32)
    throw_error(ErrorCode::kRuntime, "[sha256] OpenSSL: " + openssl_error());
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
