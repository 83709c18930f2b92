#include "server/model_registry.h"

#include <algorithm>
#include <filesystem>

#include <cstring>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "hub/hub_cache.h"
#include "hub/hub_options.h"
#include "io/hash_cache.h"
#include "pipeline/pipeline.h"

namespace fs = std::filesystem;

namespace diffuse::server {
namespace {

// The path of a --random-model entry: this prefix, then the architecture.
constexpr const char* kRandomPrefix = "random:";

bool is_checkpoint_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext == ".safetensors" || ext == ".ckpt";
}

uint64_t size_on_disk(const fs::path& p) {
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return fs::file_size(p, ec);
  uint64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  }
  return total;
}

nlohmann::json read_json_or_null(const fs::path& p) {
  std::ifstream f(p);
  if (!f) return nullptr;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  return j.is_discarded() ? nlohmann::json(nullptr) : j;
}

// Copies the defaults Pipeline::load would report (model_loader.cpp) into the entry.
void copy_defaults(ModelEntry& e, const ModelInfo& info) {
  e.family = family_name(info.family);
  e.default_width = info.default_width;
  e.default_height = info.default_height;
  e.default_steps = info.default_steps;
  e.default_cfg = info.default_cfg;
  e.default_sampler = info.default_sampler;
  e.kind = info.kind;
  e.kind_guessed = info.kind_guessed;
  e.license = info.license;
}

void set_hash(ModelEntry& e, const fs::path& hashed) {
  // Only a hash already in the cache: hashing a multi-GB file at scan time
  // would stall start-up; the first load computes and caches it.
  if (auto h = lookup_cached_sha256(hashed.string())) {
    e.sha256 = *h;
    e.hash = h->substr(0, 10);
  }
}

// Family, defaults, licence and (cached) hash from the configs and headers
// alone (describe_model, as Pipeline::load decides them). A .ckpt's index is
// inside a pickle: it is described after its first load.
void describe_cheaply(ModelEntry& e) {
  const fs::path p(e.path);
  std::error_code ec;
  const bool folder = fs::is_directory(p, ec);
  try {
    if (folder) {
      for (const char* name : {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                               "diffusion_pytorch_model.bin"}) {
        if (fs::exists(p / "unet" / name, ec)) {
          set_hash(e, p / "unet" / name);
          break;
        }
      }
      const nlohmann::json index = read_json_or_null(p / "model_index.json");
      if (index.is_object() && index.contains("_diffuse_defaults") && index["_diffuse_defaults"].is_object()) {
        const nlohmann::json& d = index["_diffuse_defaults"];
        e.model_card = d.value("model_card", e.model_card);
        if (d.contains("example_prompts") && d["example_prompts"].is_array()) {
          e.example_prompts.clear();
          for (const nlohmann::json& x : d["example_prompts"])
            if (x.is_string()) e.example_prompts.push_back(x.get<std::string>());
        }
      }
      if (fs::is_regular_file(p / "README.md", ec)) e.readme_path = (p / "README.md").string();
    } else {
      set_hash(e, p);
      std::string ext = p.extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (ext != ".safetensors") return;
    }
    copy_defaults(e, describe_model(e.path));
  } catch (const std::exception&) {
    // Unreadable or unknown: the first load fills the details in (or says why it cannot).
  }
}

ModelEntry entry_for(const fs::path& p, const std::string& source) {
  ModelEntry e;
  e.path = p.string();
  e.id = fs::is_directory(p) ? p.filename().string() : p.stem().string();
  e.source = source;
  e.size_bytes = size_on_disk(p);
  describe_cheaply(e);
  return e;
}

}  // namespace

ModelRegistry::ModelRegistry(Options options) : options_(std::move(options)) {
  std::lock_guard<std::mutex> lock(mu_);
  scan_locked();
}

void ModelRegistry::refresh() {
  std::lock_guard<std::mutex> lock(mu_);
  scan_locked();
}

void ModelRegistry::scan_locked() {
  std::vector<ModelEntry> found;
  auto add_path = [&](const fs::path& p, const std::string& source) {
    std::error_code ec;
    if (fs::is_directory(p, ec) && fs::exists(p / "model_index.json", ec)) {
      found.push_back(entry_for(p, source));
    } else if (fs::is_regular_file(p, ec) && is_checkpoint_file(p)) {
      found.push_back(entry_for(p, source));
    }
  };
  for (const std::string& arch : options_.random_archs) {
    ModelEntry e;
    e.id = "random-" + arch;
    e.path = kRandomPrefix + arch;
    e.source = "random";
    e.family = arch == "sdxl" ? "sdxl" : arch == "sd21" ? "sd2" : "sd1";
    e.default_width = e.default_height = arch == "sd15" ? 512 : arch == "sd21" ? 768 : 1024;
    found.push_back(e);
  }
  for (const std::string& f : options_.model_files) add_path(f, fs::is_directory(f) ? "folder" : "file");
  for (const std::string& dir : options_.model_dirs) {
    std::error_code ec;
    std::vector<fs::path> children;
    for (const auto& child : fs::directory_iterator(dir, ec)) children.push_back(child.path());
    std::sort(children.begin(), children.end());
    for (const fs::path& c : children) add_path(c, fs::is_directory(c) ? "folder" : "file");
  }
  if (options_.scan_hf_cache) {
    try {
      for (const hub::CachedModel& m : hub::scan_hf_cache(hub::HubOptions::from_env().cache_dir)) {
        if (m.is_diffusers && !m.snapshot.empty()) {
          ModelEntry e = entry_for(m.snapshot, "hf-cache");
          e.id = m.repo_id;
          e.repo = m.repo_id;
          e.size_bytes = m.size_on_disk;
          e.model_card = "https://huggingface.co/" + m.repo_id;
          found.push_back(e);
        }
        for (const std::string& file : m.single_files) {
          ModelEntry e = entry_for(file, "hf-cache");
          e.repo = m.repo_id;
          e.model_card = "https://huggingface.co/" + m.repo_id;
          found.push_back(e);
        }
      }
    } catch (const std::exception&) {
      // An unreadable cache hides its models but never stops the server.
    }
  }
  // Keep what earlier loads learned (family, hash...) and make ids unique.
  for (ModelEntry& e : found) {
    for (const ModelEntry& old : entries_) {
      if (old.path == e.path) {
        e = old;
        break;
      }
    }
  }
  for (size_t i = 0; i < found.size(); ++i) {
    int dup = 1;
    for (size_t j = 0; j < i; ++j) {
      if (found[j].id == found[i].id) ++dup;
    }
    if (dup > 1) found[i].id += "-" + std::to_string(dup);
  }
  // Entries added through add() stay.
  for (const ModelEntry& old : entries_) {
    if (old.source == "added") found.push_back(old);
  }
  entries_ = std::move(found);
}

std::vector<ModelEntry> ModelRegistry::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelEntry> out = entries_;
  for (ModelEntry& e : out) {
    e.loaded = std::any_of(loaded_.begin(), loaded_.end(), [&](const auto& l) { return l.first == e.id; });
  }
  return out;
}

std::optional<ModelEntry> ModelRegistry::find(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const ModelEntry& e : entries_) {
    if (e.id == key || e.path == key || (!e.hash.empty() && key == e.id + " [" + e.hash + "]") ||
        key == e.hash) {
      return e;
    }
  }
  // A1111 clients sometimes send the title of a model hashed after they listed it.
  for (const ModelEntry& e : entries_) {
    if (key.rfind(e.id + " [", 0) == 0) return e;
  }
  return std::nullopt;
}

std::shared_ptr<Pipeline> ModelRegistry::acquire(const std::string& id, int extra_slots) {
  std::unique_lock<std::mutex> lock(mu_);
  for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
    if (it->first == id) {
      loaded_.splice(loaded_.begin(), loaded_, it);
      return loaded_.front().second;
    }
  }
  auto e = std::find_if(entries_.begin(), entries_.end(), [&](const ModelEntry& m) { return m.id == id; });
  if (e == entries_.end()) throw_error(ErrorCode::kNotFound, "model '" + id + "' not found");
  std::string path = e->path;
  // Free memory before loading the next model.
  while (!loaded_.empty() && static_cast<int>(loaded_.size()) >= std::max(1, options_.max_loaded) + extra_slots)
    loaded_.pop_back();
  lock.unlock();
  std::shared_ptr<Pipeline> pipe(path.rfind(kRandomPrefix, 0) == 0
                                     ? Pipeline::random(path.substr(std::strlen(kRandomPrefix)), options_.load)
                                     : Pipeline::load(path, options_.load));
  lock.lock();
  // Another request may have loaded the same model meanwhile: keep one copy.
  for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
    if (it->first == id) {
      loaded_.splice(loaded_.begin(), loaded_, it);
      return loaded_.front().second;
    }
  }
  const ModelInfo& info = pipe->info();
  for (ModelEntry& m : entries_) {
    if (m.id == id) {
      copy_defaults(m, info);
      m.hash = info.short_hash;
      m.sha256 = info.sha256;
    }
  }
  loaded_.emplace_front(id, pipe);
  return pipe;
}

std::string ModelRegistry::default_model() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.empty() ? "" : entries_.front().id;
}

void ModelRegistry::add(const ModelEntry& entry) {
  std::lock_guard<std::mutex> lock(mu_);
  ModelEntry e = entry;
  e.source = "added";
  entries_.push_back(e);
}

}  // namespace diffuse::server
