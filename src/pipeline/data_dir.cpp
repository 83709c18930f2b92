#include "pipeline/data_dir.h"

#include <system_error>

#include "core/runtime_options.h"

// Set by cmake/install.cmake: the source and build trees of this build, and
// the data directory relative to the installed binary's directory.
#if !defined(DIFFUSE_SOURCE_DIR) || !defined(DIFFUSE_BUILD_DIR) || !defined(DIFFUSE_DATA_FROM_BIN)
#error "DIFFUSE_SOURCE_DIR, DIFFUSE_BUILD_DIR and DIFFUSE_DATA_FROM_BIN must be defined (cmake/install.cmake)"
#endif

namespace fs = std::filesystem;

namespace diffuse {
namespace {

std::optional<fs::path> executable_path() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec || exe.empty()) return std::nullopt;
  return exe;
}

// True when `path` is below `dir`. Lexical: /proc/self/exe is canonical and
// so is DIFFUSE_BUILD_DIR (cmake's REAL_PATH), so an installed copy never even
// stats the build tree.
bool is_within(const fs::path& path, const fs::path& dir) {
  const fs::path rel = path.lexically_normal().lexically_relative(dir.lexically_normal());
  return !rel.empty() && *rel.begin() != ".." && *rel.begin() != ".";
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

}  // namespace

std::vector<fs::path> data_dirs() {
  std::vector<fs::path> dirs;
  if (const std::string env = runtime_options().data_dir; !env.empty()) dirs.emplace_back(env);
  const std::optional<fs::path> exe = executable_path();
  if (exe) dirs.push_back((exe->parent_path() / DIFFUSE_DATA_FROM_BIN).lexically_normal());
  if (exe && is_within(*exe, DIFFUSE_BUILD_DIR)) dirs.push_back(fs::path(DIFFUSE_SOURCE_DIR));
  return dirs;
}

std::optional<fs::path> data_dir() {
  for (const fs::path& d : data_dirs()) {
    if (path_exists(d / "models")) return d;
  }
  return std::nullopt;
}

std::optional<fs::path> find_data(const std::string& relative) {
  for (const fs::path& d : data_dirs()) {
    if (path_exists(d / relative)) return d / relative;
  }
  return std::nullopt;
}

std::string data_search_note() {
  std::string note;
  for (const fs::path& d : data_dirs()) note += (note.empty() ? "looked in " : ", ") + d.string();
  return note.empty() ? "the executable's location (/proc/self/exe) is unknown" : note;
}

}  // namespace diffuse
