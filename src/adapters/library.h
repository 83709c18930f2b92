// The LoRA and embedding folders a user keeps (AUTOMATIC1111's --lora-dir,
// models/Lora, and --embeddings-dir, embeddings/): what is in them, for the
// APIs and the web page, and which file a name in a prompt or on the command
// line means.
//
// LoRA names follow A1111 (extensions-builtin/Lora/networks.py,
// list_available_networks / load_networks):
//  - Every .safetensors, .pt and .ckpt file under a folder (recursively, links
//    followed, in natural path order) is known by its file stem, and by its
//    alias: the header's ss_output_name. When two files share a stem, the one
//    listed last wins (A1111 fills a dict). An alias two files share, and the
//    aliases "none" and "Addams", are not used (A1111's forbidden aliases).
//  - A name that matches nothing rescans the folders once before failing
//    (a file copied in after the listing is found without a refresh).
// Diffuse also accepts, in this order after those: a path under a folder
// ("styles/ink" or "styles/ink.safetensors"); a path to a file (only when
// AdapterLibraryOptions::allow_paths: the CLI, not the server); a Hugging
// Face repo id ("org/name") whose snapshot is in the local cache, holding
// pytorch_lora_weights.safetensors or a single .safetensors file.
//
// Listing reads only the 8-byte length and the JSON header of a .safetensors
// file, never its tensors: hashes are those the header states
// (sshs_model_hash) or that were computed before (lora_hash()).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace diffuse {

struct LoraEntry {
  std::string name;      // the file stem: what <lora:name:w> calls it
  std::string alias;     // the header's ss_output_name, else name (A1111)
  std::string path;      // absolute
  std::string relative;  // under its folder: "styles/ink.safetensors"
  std::string folder;    // the folder it was found in, as given
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  // The safetensors header's __metadata__, values that hold a JSON object
  // decoded (A1111's read_metadata_from_safetensors); {} for .pt / .ckpt.
  nlohmann::json metadata = nlohmann::json::object();
  // "sd1", "sd2", "sdxl" as A1111's detect_version reads the metadata
  // (ss_base_model_version "sdxl_*", ss_v2 "True", any other metadata: sd1;
  // modelspec.architecture too); "" when nothing says.
  std::string family;
  std::string hash;   // A1111's short hash (12 hex) when known without reading the file, else ""
  std::string error;  // why the header could not be read ("" when it could)
};

struct EmbeddingInfo {
  std::string name;  // the file stem: the prompt word that uses it
  std::string path;
  int vectors = 0;   // token positions it takes (SDXL: clip_g's count)
  int shape = 0;     // vector width; SDXL: clip_l's + clip_g's, as A1111 reports it
  std::string hash;  // A1111's "TI hashes" value: sha256[:12] of the file
  std::string error; // the file could not be read: why (then vectors and shape are 0)
};

struct AdapterLibraryOptions {
  std::vector<std::string> lora_dirs;       // searched in order
  std::vector<std::string> embedding_dirs;  // GenerationParams::embedding_dirs
  // Whether a LoRA name may be a path to any file (the CLI). The server takes
  // names under its folders only, so a client cannot make it open other files.
  bool allow_paths = true;
  // A repo id's local snapshot folder (hub::resolve_cached), nullopt when it is
  // not cached; unset: repo ids are not looked up.
  std::function<std::optional<std::string>(const std::string& repo_id)> hf_snapshot;
};

// Thread-safe: the server lists and resolves from many request threads.
class AdapterLibrary {
 public:
  explicit AdapterLibrary(AdapterLibraryOptions options);

  const std::vector<std::string>& lora_dirs() const { return options_.lora_dirs; }
  const std::vector<std::string>& embedding_dirs() const { return options_.embedding_dirs; }

  // Rescan (A1111 /sdapi/v1/refresh-loras, /refresh-embeddings).
  void refresh_loras();
  void refresh_embeddings();

  // The LoRA files (scanned on first use), in natural path order.
  std::vector<LoraEntry> loras();
  // The embeddings of the folders (EmbeddingEntry's rule: the first file of a
  // stem wins), each file read once while its size and time stay the same.
  std::vector<EmbeddingInfo> embeddings();

  // The file a LoRA name means (rules above). Throws Error(kInvalidArgument)
  // "LoRA 'x' not found in /abs/models/Lora (available: a, b, c)".
  std::string resolve_lora(const std::string& name);

  // A1111's short hash of a LoRA file (lora_file_hash), computed once per
  // path, size and modification time. Throws Error(kIo) for an unreadable file.
  std::string lora_hash(const std::string& path);

 private:
  void scan_loras_locked();
  std::optional<std::string> find_listed_locked(const std::string& name) const;
  std::string not_found_message_locked(const std::string& name) const;

  AdapterLibraryOptions options_;
  std::mutex mu_;
  bool scanned_ = false;
  std::vector<LoraEntry> loras_;
  std::map<std::string, size_t> by_name_;   // stem -> index (the last file of a stem)
  std::map<std::string, size_t> by_alias_;  // alias or stem -> index
  std::set<std::string> forbidden_;         // lower-case aliases that resolve by stem only
  struct CachedEmbedding {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    EmbeddingInfo info;
  };
  std::map<std::string, CachedEmbedding> embedding_cache_;  // by path
  struct CachedHash {
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    std::string hash;
  };
  std::map<std::string, CachedHash> hashes_;  // by absolute path
};

// Reads the __metadata__ of a .safetensors header as A1111 lists it
// ({} when the file has none). Throws Error(kIo) naming the file when the
// header cannot be read.
nlohmann::json read_safetensors_metadata(const std::string& path);

// The family a LoRA's metadata names ("sd1", "sd2", "sdxl"), "" when it names none.
std::string lora_family_from_metadata(const nlohmann::json& metadata);

// The most frequent training tags of a kohya LoRA (ss_tag_frequency), most
// frequent first, at most `limit`: what A1111's page offers as activation text.
std::vector<std::string> lora_trained_words(const nlohmann::json& metadata, size_t limit);

}  // namespace diffuse
