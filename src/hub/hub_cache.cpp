#include "hub/hub_cache.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "core/error.h"
#include "hub/model_aliases.h"

namespace fs = std::filesystem;

namespace diffuse::hub {
namespace {

bool all_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c); });
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

bool path_exists(const fs::path& p) {  // follows symlinks; false for dangling ones
  std::error_code ec;
  return fs::exists(p, ec);
}

}  // namespace

void validate_repo_id(const std::string& repo_id) {
  // huggingface_hub utils/_validators.py: [\w\-.]+ with an optional "org/",
  // no "--" or "..", at most 96 characters.
  bool ok = !repo_id.empty() && repo_id.size() <= 96 && std::count(repo_id.begin(), repo_id.end(), '/') <= 1 &&
            repo_id.find("--") == std::string::npos && repo_id.find("..") == std::string::npos;
  for (unsigned char c : repo_id) ok = ok && (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/');
  if (ok) {
    size_t slash = repo_id.find('/');
    std::vector<std::string> parts = {repo_id.substr(0, slash)};
    if (slash != std::string::npos) parts = {repo_id.substr(0, slash), repo_id.substr(slash + 1)};
    for (const auto& part : parts)
      ok = ok && !part.empty() && part.front() != '-' && part.front() != '.' && part.back() != '-' && part.back() != '.';
  }
  DIFFUSE_CHECK_ARG(ok, "[hub] invalid repo id '" + repo_id + "': expected 'name' or 'org/name' (letters, digits, - _ .)");
}

void validate_repo_path(const std::string& path) {
  bool ok = !path.empty() && path.front() != '/' && path.find('\\') == std::string::npos;
  std::stringstream ss(path);
  std::string part;
  while (ok && std::getline(ss, part, '/')) ok = !part.empty() && part != "." && part != "..";
  DIFFUSE_CHECK_ARG(ok, "[hub] invalid file path '" + path + "' inside a repo");
}

bool is_commit_hash(const std::string& s) { return s.size() == 40 && all_hex(s); }
bool is_sha256(const std::string& s) { return s.size() == 64 && all_hex(s); }

std::string repo_folder_name(const std::string& repo_id) {
  std::string out = "models";
  std::stringstream ss(repo_id);
  std::string part;
  while (std::getline(ss, part, '/')) out += "--" + part;
  return out;
}

fs::path repo_storage(const std::string& cache_dir, const std::string& repo_id) {
  return fs::path(cache_dir) / repo_folder_name(repo_id);
}

std::optional<std::string> read_ref(const fs::path& storage, const std::string& revision) {
  std::string commit = read_text(storage / "refs" / revision);
  if (!is_commit_hash(commit)) return std::nullopt;
  return commit;
}

void write_ref(const fs::path& storage, const std::string& revision, const std::string& commit) {
  fs::path ref = storage / "refs" / revision;
  std::error_code ec;
  fs::create_directories(ref.parent_path(), ec);
  fs::path tmp = ref;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << commit;  // huggingface_hub writes the bare sha, no newline
    if (!f) throw_error(ErrorCode::kIo, "[hub] cannot write " + ref.string());
  }
  fs::rename(tmp, ref, ec);
  if (ec) throw_error(ErrorCode::kIo, "[hub] cannot write " + ref.string() + ": " + ec.message());
}

std::optional<std::string> snapshot_file(const fs::path& storage, const std::string& commit, const std::string& path) {
  fs::path p = storage / "snapshots" / commit / path;
  if (!path_exists(p)) return std::nullopt;
  return p.string();
}

std::optional<std::string> cached_file(const std::string& cache_dir, const std::string& repo_id,
                                       const std::string& revision, const std::string& path) {
  fs::path storage = repo_storage(cache_dir, repo_id);
  std::optional<std::string> commit = is_commit_hash(revision) ? std::optional<std::string>(revision)
                                                                : read_ref(storage, revision);
  if (!commit) return std::nullopt;
  return snapshot_file(storage, *commit, path);
}

std::string link_snapshot_file(const fs::path& storage, const std::string& commit, const std::string& path,
                               const std::string& etag) {
  fs::path pointer = storage / "snapshots" / commit / path;
  fs::path blob = storage / "blobs" / etag;
  std::error_code ec;
  fs::create_directories(pointer.parent_path(), ec);
  if (ec) throw_error(ErrorCode::kIo, "[hub] cannot create " + pointer.parent_path().string() + ": " + ec.message());
  fs::remove(pointer, ec);  // a stale or dangling entry
  // Relative, so the cache survives being moved (huggingface_hub _create_symlink).
  // Lexical, like os.path.relpath there: symlinked cache folders stay intact.
  fs::create_symlink(blob.lexically_relative(pointer.parent_path()), pointer, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(blob, pointer, fs::copy_options::overwrite_existing, ec);
    if (ec) throw_error(ErrorCode::kIo, "[hub] cannot place " + pointer.string() + ": " + ec.message());
  }
  return pointer.string();
}

std::vector<CachedModel> scan_hf_cache(const std::string& cache_dir) {
  std::vector<CachedModel> models;
  std::error_code ec;
  if (!fs::is_directory(cache_dir, ec)) return models;
  for (const fs::directory_entry& entry : fs::directory_iterator(cache_dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("models--", 0) != 0 || !entry.is_directory(ec)) continue;
    CachedModel m;
    m.storage = entry.path().string();
    // "models--org--name" -> "org/name" (huggingface_hub utils/_cache_manager.py).
    std::string rest = name.substr(8);
    for (size_t pos; (pos = rest.find("--")) != std::string::npos;) rest.replace(pos, 2, "/");
    m.repo_id = rest;

    fs::path refs = entry.path() / "refs";
    if (fs::is_directory(refs, ec)) {
      for (auto it = fs::recursive_directory_iterator(refs, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (it->is_regular_file(ec)) m.refs.push_back(fs::relative(it->path(), refs, ec).generic_string());
      }
      std::sort(m.refs.begin(), m.refs.end());
    }
    if (auto main = read_ref(entry.path(), "main"); main && fs::is_directory(entry.path() / "snapshots" / *main, ec)) {
      m.commit = *main;
    } else {
      std::vector<std::string> snaps;
      for (const auto& s : fs::directory_iterator(entry.path() / "snapshots", ec))
        if (s.is_directory()) snaps.push_back(s.path().filename().string());
      if (snaps.size() == 1) m.commit = snaps[0];
    }
    ec.clear();
    if (!m.commit.empty()) {
      fs::path snap = entry.path() / "snapshots" / m.commit;
      m.snapshot = snap.string();
      m.is_diffusers = path_exists(snap / "model_index.json");
      for (const auto& f : fs::directory_iterator(snap, ec)) {
        std::string ext = f.path().extension().string();
        if ((ext == ".safetensors" || ext == ".ckpt") && path_exists(f.path()))
          m.single_files.push_back(f.path().filename().string());
      }
      std::sort(m.single_files.begin(), m.single_files.end());
    }
    ec.clear();
    // Size on disk: regular files in blobs/ and snapshots/ only, so each blob
    // counts once however many snapshots link to it (as huggingface-cli
    // scan-cache counts); refs and locks are not model data.
    for (const char* sub : {"blobs", "snapshots"}) {
      for (auto it = fs::recursive_directory_iterator(entry.path() / sub, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
        m.size_on_disk += it->file_size(ec);
        if (it->path().extension() == ".incomplete") m.has_incomplete = true;
      }
      ec.clear();
    }
    models.push_back(std::move(m));
  }
  std::sort(models.begin(), models.end(), [](const CachedModel& a, const CachedModel& b) { return a.repo_id < b.repo_id; });
  return models;
}

std::optional<std::string> resolve_cached(const std::string& repo_id, const HubOptions& options) {
  std::string repo = resolve_repo(repo_id);
  validate_repo_id(repo);
  fs::path storage = repo_storage(options.cache_dir, repo);
  std::error_code ec;
  // Only refs/main counts: pull_pipeline writes it last, so a pull that was
  // interrupted (a snapshot folder without its weights) is never returned.
  if (auto commit = read_ref(storage, "main")) {
    fs::path snap = storage / "snapshots" / *commit;
    if (fs::is_directory(snap, ec)) return snap.string();
  }
  return std::nullopt;
}

}  // namespace diffuse::hub
