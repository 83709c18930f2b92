// The models a server can offer, and the ones it keeps loaded.
//
// Models come from --models folders (diffusers folders and single .safetensors
// / .ckpt files, one level deep), single files named directly, and the
// Hugging Face cache. At most `max_loaded` pipelines stay in memory; the
// least recently used one is dropped to load another.
#pragma once
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace diffuse::server {

struct ModelEntry {
  std::string id;        // unique, stable: folder or file stem ("v1-5-pruned-emaonly")
  std::string path;      // what Pipeline::load takes
  std::string source;    // "folder", "file", "hf-cache"
  std::string repo;      // HF repo id when known
  // Family, licence and defaults come from the configs at scan time (a
  // .ckpt's only after its first load); the hash only once it is in the hash
  // cache (io/hash_cache.h) or after the first load: never computed by a scan.
  std::string family;    // "sd1"/"sd2"/"sdxl"; "" while unknown
  std::string hash;      // A1111 short hash (sha256[:10]); "" while unknown
  std::string sha256;
  std::string license;
  std::string model_card;  // URL
  // A folder's own README.md (e.g. models/demo/README.md): served at
  // GET /api/models/{id}/readme, the page's model card when there is no URL.
  std::string readme_path;
  // Prompts the model follows (model_index.json _diffuse_defaults.example_prompts):
  // the page's clickable examples.
  std::vector<std::string> example_prompts;
  uint64_t size_bytes = 0;
  bool loaded = false;
  int default_width = 512, default_height = 512, default_steps = 50;
  float default_cfg = 7.5f;
  std::string default_sampler;
  std::string kind;  // a few-step model's kind (pipeline/few_step.h: "turbo", "lcm", ...), "" = none
  bool kind_guessed = false;
};

class ModelRegistry {
 public:
  struct Options {
    std::vector<std::string> model_dirs;   // --models
    std::vector<std::string> model_files;  // single files / folders given directly
    // Full-size architectures (sd15, sd21, sdxl) with deterministic random
    // weights (Pipeline::random), listed first as "random-<arch>": the speed of
    // the server's whole path (diffuse serve --random-model; tools/bench_live.py)
    // without a checkpoint. Their images are noise.
    std::vector<std::string> random_archs;
    bool scan_hf_cache = true;
    int max_loaded = 1;
    LoadOptions load;
  };
  explicit ModelRegistry(Options options);

  void refresh();  // rescans sources; keeps loaded pipelines
  std::vector<ModelEntry> list() const;
  std::optional<ModelEntry> find(const std::string& id_or_title) const;  // id, "id [hash]" title, or path
  // Loads (or returns the cached) pipeline; throws kNotFound for an unknown id.
  // extra_slots: loading it may keep that many more than max_loaded (an SDXL
  // refiner stays beside its base instead of evicting it).
  std::shared_ptr<Pipeline> acquire(const std::string& id, int extra_slots = 0);
  std::string default_model() const;  // the first listed, or "" when there are none
  // Test hook: register an already-built entry.
  void add(const ModelEntry& entry);

 private:
  void scan_locked();
  Options options_;
  mutable std::mutex mu_;
  std::vector<ModelEntry> entries_;
  std::list<std::pair<std::string, std::shared_ptr<Pipeline>>> loaded_;  // front = most recent
};

}  // namespace diffuse::server
