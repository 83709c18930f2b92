// Who may use the server: `--api-key KEY` (Authorization: Bearer KEY, or
// X-API-Key: KEY) and `--api-auth user:pass[,user2:pass2]` (HTTP Basic, as
// AUTOMATIC1111's flag of that name). A browser has no way to send a Bearer
// key, so with --api-key the Basic password may be the key (any user name):
// the browser's own login prompt then opens the page with either flag.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace diffuse::server {

class Authenticator {
 public:
  // `api_auth` is "user:pass[,user2:pass2]" (the password may contain ':');
  // throws kInvalidArgument naming the bad entry (no ':', empty user or password).
  Authenticator(std::string api_key, const std::string& api_auth);
  bool enabled() const { return !key_.empty() || !users_.empty(); }
  // Whether a request with these header values is let in (always, when not enabled).
  bool allows(std::string_view authorization, std::string_view x_api_key) const;

 private:
  std::string key_;
  std::vector<std::pair<std::string, std::string>> users_;
};

// "user:pass[,user2:pass2]" as (user, password) pairs; throws kInvalidArgument.
std::vector<std::pair<std::string, std::string>> parse_api_auth(const std::string& spec);
// Equal strings, in a time that depends only on the lengths (no early exit on
// the first differing byte, which would let a client guess a secret byte by byte).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace diffuse::server
