// LoRA and embedding folders: listing, names, hashes (library.h).
#include "adapters/library.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "adapters/embedding.h"
#include "adapters/lora.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the safetensors format's own limit
constexpr int kMaxDepth = 16;                       // links are followed: a loop must end
constexpr size_t kMaxNamesInMessage = 30;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool lora_extension(const fs::path& p) {
  const std::string ext = lower(p.extension().string());
  return ext == ".safetensors" || ext == ".pt" || ext == ".ckpt";
}

int64_t mtime_ns(const fs::path& p, std::error_code& ec) {
  const auto t = fs::last_write_time(p, ec);
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// A1111's natural_sort_key: runs of digits compare as numbers, the rest
// without case.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
    const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
    if (da && db) {
      size_t ei = i, ej = j;
      while (ei < a.size() && std::isdigit(static_cast<unsigned char>(a[ei]))) ++ei;
      while (ej < b.size() && std::isdigit(static_cast<unsigned char>(b[ej]))) ++ej;
      // Compare the numbers by value: strip leading zeros, then length, then digits.
      size_t zi = i, zj = j;
      while (zi + 1 < ei && a[zi] == '0') ++zi;
      while (zj + 1 < ej && b[zj] == '0') ++zj;
      if (ei - zi != ej - zj) return ei - zi < ej - zj;
      const int c = a.compare(zi, ei - zi, b, zj, ej - zj);
      if (c != 0) return c < 0;
      i = ei;
      j = ej;
      continue;
    }
    if (da != db) return da;  // Python compares "" (before a number) with text: the number's side is shorter
    const char ca = static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
    const char cb = static_cast<char>(std::tolower(static_cast<unsigned char>(b[j])));
    if (ca != cb) return ca < cb;
    ++i;
    ++j;
  }
  return a.size() - i < b.size() - j;
}

// The raw __metadata__ strings of a .safetensors header.
std::map<std::string, std::string> header_metadata(const std::string& path, nlohmann::json* raw) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorCode::kIo, "LoRA '" + path + "' cannot be opened");
  unsigned char len[8];
  if (!f.read(reinterpret_cast<char*>(len), 8)) {
    throw_error(ErrorCode::kIo, "'" + path + "' is shorter than a safetensors header");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | len[i];
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (n > kMaxHeaderBytes || ec || n > size - 8) {
    throw_error(ErrorCode::kIo, "'" + path + "' has a safetensors header length of " + std::to_string(n) +
                                    " bytes, more than the file holds");
  }
  std::string text(n, '\0');
  if (!f.read(text.data(), static_cast<std::streamsize>(n))) {
    throw_error(ErrorCode::kIo, "'" + path + "': its safetensors header cannot be read");
  }
  nlohmann::json h = nlohmann::json::parse(text, nullptr, false);
  if (h.is_discarded() || !h.is_object()) {
    throw_error(ErrorCode::kIo, "'" + path + "': its safetensors header is not a JSON object");
  }
  std::map<std::string, std::string> out;
  nlohmann::json meta = nlohmann::json::object();
  if (h.contains("__metadata__") && h["__metadata__"].is_object()) {
    for (const auto& [k, v] : h["__metadata__"].items()) {
      meta[k] = v;
      if (v.is_string()) out[k] = v.get<std::string>();
    }
  }
  if (raw) *raw = std::move(meta);
  return out;
}

nlohmann::json decode_metadata(const nlohmann::json& raw) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : raw.items()) {
    out[k] = v;
    // A1111 decodes string values that start with '{' (ss_tag_frequency, ss_dataset_dirs, ...).
    if (v.is_string() && !v.get_ref<const std::string&>().empty() && v.get_ref<const std::string&>()[0] == '{') {
      nlohmann::json j = nlohmann::json::parse(v.get_ref<const std::string&>(), nullptr, false);
      if (!j.is_discarded()) out[k] = std::move(j);
    }
  }
  return out;
}

std::string display_dir(const std::string& dir) {
  std::error_code ec;
  const fs::path abs = fs::absolute(dir, ec);
  return ec ? dir : abs.lexically_normal().string();
}

bool has_dotdot(const fs::path& p) {
  for (const fs::path& part : p)
    if (part == "..") return true;
  return false;
}

bool looks_like_repo_id(const std::string& s) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= s.size()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/')) return false;
  return s[0] != '.' && s.find("..") == std::string::npos;
}

}  // namespace

nlohmann::json read_safetensors_metadata(const std::string& path) {
  nlohmann::json raw;
  header_metadata(path, &raw);
  return decode_metadata(raw);
}

std::string lora_family_from_metadata(const nlohmann::json& m) {
  auto str = [&](const char* key) {
    return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string();
  };
  if (str("ss_base_model_version").rfind("sdxl_", 0) == 0) return "sdxl";
  if (str("ss_v2") == "True") return "sd2";
  const std::string arch = str("modelspec.architecture");
  if (arch.rfind("stable-diffusion-xl", 0) == 0) return "sdxl";
  if (arch.rfind("stable-diffusion-v2", 0) == 0) return "sd2";
  if (arch.rfind("stable-diffusion-v1", 0) == 0) return "sd1";
  for (const auto& [k, v] : m.items())
    if (k.rfind("ss_", 0) == 0) return "sd1";  // A1111: kohya metadata without an SD2 / SDXL marker
  return "";
}

std::vector<std::string> lora_trained_words(const nlohmann::json& metadata, size_t limit) {
  std::map<std::string, double> counts;
  if (metadata.contains("ss_tag_frequency") && metadata["ss_tag_frequency"].is_object()) {
    for (const auto& [dataset, tags] : metadata["ss_tag_frequency"].items()) {
      if (!tags.is_object()) continue;
      for (const auto& [tag, n] : tags.items()) {
        const std::string t = tag;
        if (n.is_number() && !t.empty()) counts[t] += n.get<double>();
      }
    }
  }
  std::vector<std::pair<std::string, double>> v(counts.begin(), counts.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size() && out.size() < limit; ++i) out.push_back(v[i].first);
  return out;
}

AdapterLibrary::AdapterLibrary(AdapterLibraryOptions options) : options_(std::move(options)) {}

void AdapterLibrary::refresh_loras() {
  std::lock_guard<std::mutex> lock(mu_);
  scan_loras_locked();
}

void AdapterLibrary::refresh_embeddings() {
  std::lock_guard<std::mutex> lock(mu_);
  embedding_cache_.clear();
}

void AdapterLibrary::scan_loras_locked() {
  std::vector<LoraEntry> found;
  for (const std::string& dir : options_.lora_dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    struct Item {
      std::string root, file;
      fs::path path;
    };
    std::vector<Item> items;
    fs::recursive_directory_iterator it(
        dir, fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it.depth() >= kMaxDepth) it.disable_recursion_pending();
      std::error_code fe;
      if (!it->is_regular_file(fe) || !lora_extension(it->path())) continue;
      items.push_back({it->path().parent_path().string(), it->path().filename().string(), it->path()});
    }
    // A1111's walk_files: folders in natural order, the files of each in natural order.
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
      if (a.root != b.root) return natural_less(a.root, b.root);
      return natural_less(a.file, b.file);
    });
    for (const Item& item : items) {
      LoraEntry e;
      e.name = item.path.stem().string();
      if (e.name.empty()) continue;
      std::error_code fe;
      e.path = fs::absolute(item.path, fe).lexically_normal().string();
      e.relative = item.path.lexically_relative(dir).string();
      e.folder = dir;
      e.size = fs::file_size(item.path, fe);
      e.mtime_ns = mtime_ns(item.path, fe);
      e.alias = e.name;
      if (lower(item.path.extension().string()) == ".safetensors") {
        try {
          nlohmann::json raw;
          const std::map<std::string, std::string> strings = header_metadata(e.path, &raw);
          e.metadata = decode_metadata(raw);
          auto alias = strings.find("ss_output_name");
          if (alias != strings.end() && !alias->second.empty()) e.alias = alias->second;
          auto sshs = strings.find("sshs_model_hash");
          if (sshs != strings.end() && !sshs->second.empty()) e.hash = lower(sshs->second).substr(0, 12);
        } catch (const Error& err) {
          e.error = err.what();
        }
      }
      e.family = lora_family_from_metadata(e.metadata);
      auto h = hashes_.find(e.path);
      if (h != hashes_.end() && h->second.size == e.size && h->second.mtime_ns == e.mtime_ns) e.hash = h->second.hash;
      found.push_back(std::move(e));
    }
  }
  loras_ = std::move(found);
  by_name_.clear();
  by_alias_.clear();
  forbidden_ = {"none", "addams"};
  for (size_t i = 0; i < loras_.size(); ++i) {
    const LoraEntry& e = loras_[i];
    by_name_[e.name] = i;
    if (by_alias_.count(e.alias)) forbidden_.insert(lower(e.alias));
    by_alias_[e.name] = i;
    by_alias_[e.alias] = i;
  }
  scanned_ = true;
}

std::vector<LoraEntry> AdapterLibrary::loras() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!scanned_) scan_loras_locked();
  return loras_;
}

std::optional<std::string> AdapterLibrary::find_listed_locked(const std::string& name) const {
  // A1111's load_networks: a forbidden alias (shared by two files, "none") means a file stem only.
  const std::map<std::string, size_t>& table = forbidden_.count(lower(name)) ? by_name_ : by_alias_;
  auto a = table.find(name);
  if (a != table.end()) return loras_[a->second].path;
  // Not A1111: a unique match ignoring case ("Detail" for detail.safetensors).
  std::optional<size_t> hit;
  for (const auto& [stem, idx] : by_name_) {
    if (lower(stem) != lower(name)) continue;
    if (hit && *hit != idx) return std::nullopt;
    hit = idx;
  }
  if (hit) return loras_[*hit].path;
  return std::nullopt;
}

std::string AdapterLibrary::not_found_message_locked(const std::string& name) const {
  std::string where;
  bool any_dir = false;
  for (const std::string& d : options_.lora_dirs) {
    std::error_code ec;
    if (fs::is_directory(d, ec)) any_dir = true;
    where += (where.empty() ? "" : ", ") + display_dir(d);
  }
  if (options_.lora_dirs.empty()) return "LoRA '" + name + "' not found: no LoRA folder is set (--lora-dir)";
  std::string msg = "LoRA '" + name + "' not found in " + where;
  if (!any_dir) return msg + " (the folder does not exist; --lora-dir sets it)";
  if (loras_.empty()) return msg + " (no .safetensors, .pt or .ckpt files there)";
  std::vector<std::string> names;
  for (const LoraEntry& e : loras_)
    if (std::find(names.begin(), names.end(), e.name) == names.end()) names.push_back(e.name);
  std::sort(names.begin(), names.end(), natural_less);
  std::string list;
  for (size_t i = 0; i < names.size() && i < kMaxNamesInMessage; ++i) list += (i ? ", " : "") + names[i];
  if (names.size() > kMaxNamesInMessage) list += ", ... (" + std::to_string(names.size()) + " in all)";
  return msg + " (available: " + list + ")";
}

std::string AdapterLibrary::resolve_lora(const std::string& name) {
  DIFFUSE_CHECK_ARG(!name.empty(), "a LoRA name is empty");
  std::lock_guard<std::mutex> lock(mu_);
  if (!scanned_) scan_loras_locked();
  if (auto p = find_listed_locked(name)) return *p;
  // A1111 rescans once before giving up: a file copied in since is found.
  // (A name with a separator is a path, never a stem: no rescan for it.)
  if (name.find('/') == std::string::npos) {
    scan_loras_locked();
    if (auto p = find_listed_locked(name)) return *p;
  }

  std::error_code ec;
  const fs::path rel(name);
  // A path under a folder: "styles/ink", "styles/ink.safetensors".
  if (!rel.is_absolute() && !has_dotdot(rel)) {
    for (const std::string& dir : options_.lora_dirs) {
      for (const char* ext : {"", ".safetensors", ".pt", ".ckpt"}) {
        const fs::path p = fs::path(dir) / (name + ext);
        if ((*ext || lora_extension(p)) && fs::is_regular_file(p, ec)) return fs::absolute(p, ec).lexically_normal().string();
      }
    }
  }
  if (options_.allow_paths && fs::is_regular_file(name, ec)) return fs::absolute(name, ec).lexically_normal().string();
  // A repo id in the Hugging Face cache, optionally with a file: "org/name[/file.safetensors]".
  if (options_.hf_snapshot && looks_like_repo_id(name)) {
    const size_t first = name.find('/');
    const size_t second = name.find('/', first + 1);
    const std::string repo = name.substr(0, second);
    if (std::optional<std::string> snap = options_.hf_snapshot(repo)) {
      if (second != std::string::npos) {
        const fs::path p = fs::path(*snap) / name.substr(second + 1);
        if (fs::is_regular_file(p, ec)) return p.string();
        throw_error(ErrorCode::kInvalidArgument,
                    "LoRA '" + name + "': the cached snapshot of " + repo + " has no file " + name.substr(second + 1));
      }
      const fs::path standard = fs::path(*snap) / "pytorch_lora_weights.safetensors";
      if (fs::is_regular_file(standard, ec)) return standard.string();
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(*snap, ec)) {
        std::error_code fe;
        if (e.is_regular_file(fe) && lower(e.path().extension().string()) == ".safetensors") {
          files.push_back(e.path().filename().string());
        }
      }
      std::sort(files.begin(), files.end());
      if (files.size() == 1) return (fs::path(*snap) / files[0]).string();
      std::string list;
      for (const std::string& f : files) list += (list.empty() ? "" : ", ") + f;
      throw_error(ErrorCode::kInvalidArgument,
                  "LoRA '" + name + "': the cached snapshot of " + repo +
                      (files.empty() ? " holds no .safetensors file"
                                     : " holds several .safetensors files (" + list + "); name one as " + repo +
                                           "/FILE"));
    }
  }
  std::string msg = not_found_message_locked(name);
  if (!options_.allow_paths && (rel.is_absolute() || has_dotdot(rel))) {
    msg += "; the server takes LoRA names, not paths: put the file in its LoRA folder";
  }
  throw_error(ErrorCode::kInvalidArgument, msg);
}

std::string AdapterLibrary::lora_hash(const std::string& path) {
  std::error_code ec;
  const std::string abs = fs::absolute(path, ec).lexically_normal().string();
  const uint64_t size = fs::file_size(abs, ec);
  if (ec) throw_error(ErrorCode::kIo, "LoRA '" + path + "' cannot be read: " + ec.message());
  const int64_t mtime = mtime_ns(abs, ec);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = hashes_.find(abs);
    if (it != hashes_.end() && it->second.size == size && it->second.mtime_ns == mtime) return it->second.hash;
  }
  std::map<std::string, std::string> meta;
  if (lower(fs::path(abs).extension().string()) == ".safetensors") meta = header_metadata(abs, nullptr);
  const std::string hash = lora_file_hash(abs, meta);  // reads the file: outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  hashes_[abs] = {size, mtime, hash};
  for (LoraEntry& e : loras_)
    if (e.path == abs && e.size == size && e.mtime_ns == mtime) e.hash = hash;
  return hash;
}

std::vector<EmbeddingInfo> AdapterLibrary::embeddings() {
  const std::vector<EmbeddingEntry> entries = list_embeddings(options_.embedding_dirs, {});
  std::vector<EmbeddingInfo> out;
  for (const EmbeddingEntry& entry : entries) {
    std::error_code ec;
    const uint64_t size = fs::file_size(entry.path, ec);
    const int64_t mtime = mtime_ns(entry.path, ec);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = embedding_cache_.find(entry.path);
      if (it != embedding_cache_.end() && it->second.size == size && it->second.mtime_ns == mtime) {
        out.push_back(it->second.info);
        continue;
      }
    }
    EmbeddingInfo info;
    info.name = entry.name;
    info.path = entry.path;
    try {
      const TextualInversionFile f = read_embedding_file(entry.path);
      info.hash = f.short_hash();
      auto l = f.vectors.find("clip_l"), g = f.vectors.find("clip_g");
      if (l != f.vectors.end() && g != f.vectors.end()) {
        info.vectors = static_cast<int>(g->second.dim(0));
        info.shape = static_cast<int>(l->second.dim(-1) + g->second.dim(-1));
      } else if (!f.vectors.empty()) {
        const Tensor& t = f.vectors.begin()->second;
        info.vectors = t.ndim() >= 2 ? static_cast<int>(t.dim(0)) : 1;
        info.shape = static_cast<int>(t.dim(-1));
      }
    } catch (const Error& e) {
      info.error = e.what();
    }
    std::lock_guard<std::mutex> lock(mu_);
    embedding_cache_[entry.path] = {size, mtime, info};
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace diffuse
