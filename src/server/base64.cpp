// Encoding is OpenSSL's EVP_EncodeBlock. Decoding stays ours: it accepts what
// clients send (a data: URL prefix, the URL-safe alphabet of RFC 4648 section
// 5, line breaks, missing padding), which EVP_DecodeBlock does not, so using
// it would take a pre-pass that validates every character anyway.
#include "server/base64.h"

#include <algorithm>

#include <openssl/evp.h>

#include "core/error.h"

namespace diffuse::server {

std::string base64_encode(std::string_view data) {
  std::string out((data.size() + 2) / 3 * 4 + 1, '\0');  // + 1: EVP_EncodeBlock's NUL
  // EVP_EncodeBlock counts in int: whole 3-byte groups of at most 768 MiB per call.
  constexpr size_t kChunk = size_t{3} << 28;
  size_t written = 0;
  for (size_t pos = 0; pos < data.size(); pos += kChunk) {
    const size_t n = std::min(kChunk, data.size() - pos);
    written += static_cast<size_t>(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + written),
                                                   reinterpret_cast<const unsigned char*>(data.data() + pos),
                                                   static_cast<int>(n)));
  }
  out.resize(written);
  return out;
}

std::vector<uint8_t> base64_decode(std::string_view text) {
  if (text.rfind("data:", 0) == 0) {
    size_t comma = text.find(',');
    if (comma == std::string_view::npos) throw_error(ErrorCode::kInvalidArgument, "malformed data: URL");
    text = text.substr(comma + 1);
  }
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=' || c == '\n' || c == '\r') continue;
    else throw_error(ErrorCode::kInvalidArgument, "invalid base64 character");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace diffuse::server
