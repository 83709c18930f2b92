#include "io/hash_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/sha256.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

fs::path cache_file() {
  if (const char* x = std::getenv("XDG_CACHE_HOME")) return fs::path(x) / "diffuse" / "hashes.json";
  if (const char* h = std::getenv("HOME")) return fs::path(h) / ".cache" / "diffuse" / "hashes.json";
  return {};
}

std::string cache_key(const std::string& path) {
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  return abs.string() + "|" + std::to_string(fs::file_size(path, ec)) + "|" +
         std::to_string(fs::last_write_time(path, ec).time_since_epoch().count());
}

nlohmann::json read_cache(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();  // a corrupt cache is rebuilt
}

}  // namespace

std::optional<std::string> lookup_cached_sha256(const std::string& path) {
  fs::path file = cache_file();
  if (file.empty()) return std::nullopt;
  nlohmann::json cache = read_cache(file);
  auto it = cache.find(cache_key(path));
  if (it == cache.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::string cached_sha256(const std::string& path) {
  if (auto hit = lookup_cached_sha256(path)) return *hit;
  std::string hash = sha256_file(path);
  fs::path file = cache_file();
  if (file.empty()) return hash;
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  nlohmann::json cache = read_cache(file);
  cache[cache_key(path)] = hash;
  // Write to a temporary file and rename: readers never see half a cache.
  fs::path tmp = file;
  tmp += ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << cache.dump(1);
    if (!out) return hash;
  }
  fs::rename(tmp, file, ec);
  return hash;
}

}  // namespace diffuse
