#include "server/auth.h"

#include "core/error.h"
#include "server/base64.h"

namespace diffuse::server {

std::vector<std::pair<std::string, std::string>> parse_api_auth(const std::string& spec) {
  std::vector<std::pair<std::string, std::string>> out;
  if (spec.empty()) return out;
  size_t start = 0;
  for (;;) {
    const size_t comma = spec.find(',', start);
    const std::string entry = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t colon = entry.find(':');
    DIFFUSE_CHECK_ARG(colon != std::string::npos && colon > 0 && colon + 1 < entry.size(),
                      "--api-auth: each entry must be user:password, got '" + entry.substr(0, colon) +
                          (colon == std::string::npos ? "" : ":...") + "'");
    out.emplace_back(entry.substr(0, colon), entry.substr(colon + 1));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  const size_t n = a.size();
  for (size_t i = 0; i < n; ++i) {
    // Against `b` when it is long enough, else against `a` itself (diff is already set).
    const unsigned char other = i < b.size() ? static_cast<unsigned char>(b[i]) : static_cast<unsigned char>(a[i]);
    diff |= static_cast<unsigned char>(a[i]) ^ other;
  }
  return diff == 0;
}

Authenticator::Authenticator(std::string api_key, const std::string& api_auth)
    : key_(std::move(api_key)), users_(parse_api_auth(api_auth)) {}

bool Authenticator::allows(std::string_view authorization, std::string_view x_api_key) const {
  if (!enabled()) return true;
  bool ok = false;
  if (!key_.empty()) {
    if (!x_api_key.empty()) ok |= constant_time_equal(x_api_key, key_);
    if (authorization.rfind("Bearer ", 0) == 0) ok |= constant_time_equal(authorization.substr(7), key_);
  }
  if (authorization.rfind("Basic ", 0) == 0) {
    std::string decoded;
    try {
      std::vector<uint8_t> bytes = base64_decode(authorization.substr(6));
      decoded.assign(bytes.begin(), bytes.end());
    } catch (const Error&) {
      return ok;  // not base64: no Basic credentials
    }
    const size_t colon = decoded.find(':');
    if (colon == std::string::npos) return ok;
    const std::string_view user = std::string_view(decoded).substr(0, colon);
    const std::string_view pass = std::string_view(decoded).substr(colon + 1);
    // Every pair is compared, so the time does not tell which user name exists.
    for (const auto& [u, p] : users_) {
      const bool user_ok = constant_time_equal(user, u);
      const bool pass_ok = constant_time_equal(pass, p);
      ok |= user_ok && pass_ok;
    }
    if (!key_.empty()) ok |= constant_time_equal(pass, key_);  // the browser prompt with --api-key
  }
  return ok;
}

}  // namespace diffuse::server
