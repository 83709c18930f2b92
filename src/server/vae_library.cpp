// The server's VAE folders (vae_library.h).
#include "server/vae_library.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/error.h"

namespace fs = std::filesystem;

namespace diffuse::server {
namespace {

bool vae_file_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".safetensors" || ext == ".ckpt" || ext == ".pt";
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

bool is_automatic_vae(const std::string& name) {
  const std::string n = lower(name);
  return n.empty() || n == "automatic" || n == "none";
}

VaeLibrary::VaeLibrary(std::vector<std::string> dirs) : dirs_(std::move(dirs)) {}

void VaeLibrary::scan_locked() {
  std::map<std::string, std::string> by_name;  // later files of a name win, as A1111's dict
  for (const std::string& d : dirs_) {
    std::error_code ec;
    if (!fs::is_directory(d, ec)) continue;
    std::vector<fs::path> found;
    auto it = fs::recursive_directory_iterator(d, fs::directory_options::follow_directory_symlink |
                                                      fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const fs::path p = it->path();
      std::error_code e2;
      if (it->is_directory(e2)) {
        if (fs::exists(p / "config.json", e2)) {
          found.push_back(p);
          it.disable_recursion_pending();  // a diffusers VAE folder is one entry
        }
      } else if (it->is_regular_file(e2) && vae_file_extension(p)) {
        found.push_back(p);
      }
      if (it.depth() > 8) it.disable_recursion_pending();
    }
    std::sort(found.begin(), found.end());
    for (const fs::path& p : found) by_name[p.filename().string()] = fs::absolute(p).lexically_normal().string();
  }
  entries_.clear();
  for (const auto& [name, path] : by_name) entries_.push_back({name, path});
  scanned_ = true;
}

void VaeLibrary::refresh() {
  std::lock_guard<std::mutex> lock(mu_);
  scan_locked();
}

std::vector<VaeEntry> VaeLibrary::list() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!scanned_) scan_locked();
  return entries_;
}

const VaeEntry* VaeLibrary::find_locked(const std::string& name) const {
  for (const VaeEntry& e : entries_)
    if (e.model_name == name) return &e;
  for (const VaeEntry& e : entries_)  // without its extension
    if (fs::path(e.model_name).stem().string() == name && fs::path(e.model_name).has_extension()) return &e;
  return nullptr;
}

std::string VaeLibrary::resolve(const std::string& name) {
  if (is_automatic_vae(name)) return "";
  std::lock_guard<std::mutex> lock(mu_);
  if (!scanned_) scan_locked();
  const VaeEntry* e = find_locked(name);
  if (!e) {
    scan_locked();  // a file copied in since the last listing
    e = find_locked(name);
  }
  if (e) return e->filename;
  std::string where, available;
  for (const std::string& d : dirs_) where += (where.empty() ? "" : ", ") + fs::absolute(d).lexically_normal().string();
  for (const VaeEntry& v : entries_) available += (available.empty() ? "" : ", ") + v.model_name;
  throw_error(ErrorCode::kInvalidArgument,
              "VAE '" + name + "' not found in " + (where.empty() ? std::string("(no VAE folder)") : where) +
                  " (available: Automatic, None" + (available.empty() ? "" : ", " + available) + ")");
}

std::string VaeLibrary::name_of(const std::string& path) {
  if (path.empty()) return "Automatic";
  std::lock_guard<std::mutex> lock(mu_);
  for (const VaeEntry& e : entries_)
    if (e.filename == path) return e.model_name;
  return fs::path(path).filename().string();
}

}  // namespace diffuse::server
