#include "hub/hub_options.h"

#include "core/runtime_options.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace diffuse::hub {
namespace {

// HOME / XDG_CACHE_HOME only: every other variable comes from RuntimeOptions.
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string read_token_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  return trim(ss.str());
}

}  // namespace

HubOptions HubOptions::from_env() {
  // A fresh read each call (tests set HF_* between calls).
  const RuntimeOptions r = RuntimeOptions::from_env();
  HubOptions o;
  std::string endpoint = r.hf_endpoint;
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  if (!endpoint.empty()) o.endpoint = endpoint;

  std::string hf_home = r.hf_home;
  if (hf_home.empty()) {
    std::string xdg = env("XDG_CACHE_HOME");
    std::string home = env("HOME");
    std::string base = !xdg.empty() ? xdg : (home.empty() ? std::string("/tmp") : home + "/.cache");
    hf_home = base + "/huggingface";
  }

  o.token = r.hf_token;
  if (o.token.empty()) o.token = read_token_file(r.hf_token_path.empty() ? hf_home + "/token" : r.hf_token_path);

  o.cache_dir = r.hf_hub_cache;
  if (o.cache_dir.empty()) o.cache_dir = hf_home + "/hub";
  o.offline = r.hf_hub_offline;
  return o;
}

}  // namespace diffuse::hub
