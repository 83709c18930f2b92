// The v2 fixture models the tests probe: the 9-channel inpainting models and
// the tiny SDXL refiner of the v2 golden set. Only their JSONs and safetensors
// headers are read, so the project carries just those
// (tests/data/v2-headers, README there; the build unpacks them into
// DIFFUSE_V2_HEADERS), and v2_fixtures_dir() rebuilds them
// as sparse files; $DIFFUSE_FIXTURES_V2 points at the full set instead.
#pragma once
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace diffuse::testing {

namespace v2_detail {

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A safetensors file with `header` and a data region of the size the header
// says, left as a hole (sparse: no disk used).
inline void write_sparse_safetensors(const std::filesystem::path& out, const std::string& header_json) {
  const nlohmann::json h = nlohmann::json::parse(header_json);
  uint64_t data_end = 0;
  for (const auto& [name, t] : h.items())
    if (name != "__metadata__") data_end = std::max<uint64_t>(data_end, t.at("data_offsets")[1].get<uint64_t>());
  std::string text = h.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::ofstream f(out, std::ios::binary);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << text;
  f.close();
  std::filesystem::resize_file(out, 8 + n + data_end);
}

// Rebuilds tests/data/v2-headers under `dst`, with `dst/../<sd1|sd2|sdxl>`
// linked to the v1 fixtures so the models' relative links resolve.
inline void materialise(const std::filesystem::path& src, const std::filesystem::path& dst) {
  namespace fs = std::filesystem;
  fs::create_directories(dst);
  for (const char* fam : {"sd1", "sd2", "sdxl"})
    fs::create_directory_symlink(fs::path(fixtures_dir()) / fam, dst.parent_path() / fam);
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const fs::path rel = fs::relative(e.path(), src);
    const std::string name = rel.filename().string();
    fs::create_directories((dst / rel).parent_path());
    const auto ends = [&](const std::string& suffix) {
      return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends(".header.json")) {
      write_sparse_safetensors(dst / rel.parent_path() / name.substr(0, name.size() - 12), slurp(e.path()));
    } else if (ends(".link")) {
      std::string target = slurp(e.path());
      while (!target.empty() && std::isspace(static_cast<unsigned char>(target.back()))) target.pop_back();
      fs::create_directory_symlink(target, dst / rel.parent_path() / name.substr(0, name.size() - 5));
    } else {
      fs::copy_file(e.path(), dst / rel);
    }
  }
}

}  // namespace v2_detail

inline std::string fixtures_v2_dir() {
  if (const char* env = std::getenv("DIFFUSE_FIXTURES_V2")) return env;
  static std::once_flag once;
  static std::string dir;
  std::call_once(once, [] {
    // The build unpacks tests/data/v2-headers/skeletons.tar.xz here (target test_data).
    const std::filesystem::path src = DIFFUSE_V2_HEADERS;
    const std::filesystem::path dst = std::filesystem::path(temp_dir()) / "v2";
    if (std::filesystem::exists(src / "README.md")) v2_detail::materialise(src, dst);
    dir = dst.string();
  });
  return dir;
}

// Fails the calling test (never skips it) when the v2 models are absent.
#define DIFFUSE_REQUIRE_FIXTURES_V2()                                                                \
  do {                                                                                               \
    if (!std::filesystem::exists(::diffuse::testing::fixtures_v2_dir() + "/README.md"))              \
      FAIL() << "the v2 fixture models are not in " << ::diffuse::testing::fixtures_v2_dir()         \
             << " (the build did not unpack tests/data/v2-headers, or DIFFUSE_FIXTURES_V2 is wrong)"; \
  } while (0)

// The model folder of v2 fixture `name` ("sd1_inpaint", "sdxl_refiner", ...).
// In the full set a link may be stored as a small file holding its target;
// this gives a temporary folder whose entries are real symlinks either way.
inline std::string v2_model_folder(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(fixtures_v2_dir()) / name / "model";
  const fs::path dst = fs::path(temp_dir()) / name;
  fs::create_directories(dst);
  for (const auto& entry : fs::directory_iterator(src)) {
    fs::path target = entry.path();
    if (entry.is_regular_file() && entry.file_size() < 256 && entry.path().filename() != "model_index.json") {
      std::string rel = v2_detail::slurp(entry.path());
      while (!rel.empty() && std::isspace(static_cast<unsigned char>(rel.back()))) rel.pop_back();
      const fs::path linked = src / rel;
      if (fs::exists(linked)) target = linked;
    }
    fs::create_symlink(fs::canonical(target), dst / entry.path().filename());
  }
  return dst.string();
}

}  // namespace diffuse::testing
