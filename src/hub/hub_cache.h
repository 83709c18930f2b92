// The Hugging Face cache layout, read and written exactly as huggingface_hub
// does (huggingface.co/docs/hub/local-cache; ECOSYSTEM.md §5):
//   <cache>/models--{org}--{name}/blobs/{etag}                      file contents
//   <cache>/models--{org}--{name}/snapshots/{commit}/{path}         -> ../../blobs/{etag} (relative symlink)
//   <cache>/models--{org}--{name}/refs/{revision}                   text: commit sha
// so models pulled by Python tools are found here and the other way round.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "hub/hub_options.h"

namespace diffuse::hub {

// Throws Error(kInvalidArgument) unless `repo_id` looks like "name" or "org/name".
void validate_repo_id(const std::string& repo_id);
// Throws Error(kInvalidArgument) for empty, absolute or ".."-containing repo paths.
void validate_repo_path(const std::string& path);
bool is_commit_hash(const std::string& s);  // 40 lower-case hex digits
bool is_sha256(const std::string& s);       // 64 hex digits (an LFS etag)

// "org/name" -> "models--org--name"
std::string repo_folder_name(const std::string& repo_id);
std::filesystem::path repo_storage(const std::string& cache_dir, const std::string& repo_id);

// refs/<revision> (revision may contain '/', e.g. refs/pr/1); nullopt when absent.
std::optional<std::string> read_ref(const std::filesystem::path& storage, const std::string& revision);
void write_ref(const std::filesystem::path& storage, const std::string& revision, const std::string& commit);

// snapshots/<commit>/<path> when it exists and (if a link) its blob exists.
std::optional<std::string> snapshot_file(const std::filesystem::path& storage, const std::string& commit,
                                         const std::string& path);
// revision -> commit (via refs unless it already is one) -> snapshot_file.
std::optional<std::string> cached_file(const std::string& cache_dir, const std::string& repo_id,
                                       const std::string& revision, const std::string& path);
// Points snapshots/<commit>/<path> at blobs/<etag> with a relative symlink
// (replacing a stale entry); copies when the filesystem has no symlinks.
std::string link_snapshot_file(const std::filesystem::path& storage, const std::string& commit,
                               const std::string& path, const std::string& etag);

struct CachedModel {
  std::string repo_id;                    // "stable-diffusion-v1-5/stable-diffusion-v1-5"
  std::string storage;                    // <cache>/models--...
  std::string commit;                     // refs/main, else the only snapshot
  std::string snapshot;                   // <storage>/snapshots/<commit>; "" when none resolves
  std::vector<std::string> refs;          // "main", "refs/pr/1", ...
  uint64_t size_on_disk = 0;              // regular files in blobs/ and snapshots/ (copies, partials)
  bool is_diffusers = false;              // snapshot has model_index.json
  std::vector<std::string> single_files;  // top-level *.safetensors / *.ckpt in the snapshot
  bool has_incomplete = false;            // an interrupted download is waiting to resume
};

// Every models--* folder under cache_dir, sorted by repo id; empty when the
// folder does not exist. Unreadable entries are skipped, never fatal.
std::vector<CachedModel> scan_hf_cache(const std::string& cache_dir);

// The snapshot folder of refs/main for a repo id or alias, without network;
// nullopt when that repo (or its refs/main) is not in options.cache_dir.
std::optional<std::string> resolve_cached(const std::string& repo_id, const HubOptions& options);

}  // namespace diffuse::hub
