// Downloading from the Hugging Face hub into the shared cache (hub_cache.h):
// one file (hub_download, a port of huggingface_hub.hf_hub_download) or
// exactly the files a diffusers pipeline needs (pull_pipeline, the subset of
// DiffusionPipeline.download that Diffuse can run).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hub/hub_cache.h"
#include "hub/hub_options.h"
#include "hub/model_aliases.h"

namespace diffuse::hub {

// The local path of `path` at `revision` of model repo `repo`
// (<cache>/models--org--name/snapshots/<commit>/<path>, a link into blobs/).
//  1. HEAD {endpoint}/{repo}/resolve/{revision}/{path}, redirects not
//     followed: X-Repo-Commit, X-Linked-Etag (sha256 for LFS) or ETag,
//     X-Linked-Size or Content-Length.
//  2. Nothing is fetched when blobs/<etag> and the snapshot link exist; a
//     commit revision already in the cache needs no request at all.
//  3. GET (following the CDN redirect) into blobs/<etag>.incomplete,
//     resuming with Range when a partial exists; the sha256 of LFS files is
//     checked while streaming; the blob is renamed into place only when whole.
//     A broken transfer (reset, stall, early end, HTTP 5xx/429) is retried
//     from where it stopped with backoff, options.download_attempts tries in
//     all; an answer that cannot continue the partial file (200 to a Range
//     request, 416, another ETag or size) starts it over from 0.
// Errors: Error(kInvalidArgument) gated/private repo or bad ids, kNotFound
// missing repo/revision/file, kIo network, disk full, every try broken (the
// partial is kept: rerun to resume), checksum mismatch (the partial is
// deleted); kCancelled via options.cancel.
// Without network, a file already cached for `revision` is returned.
std::string hub_download(const std::string& repo, const std::string& path, const std::string& revision,
                         const HubOptions& options);

struct RepoInfo {
  std::string id;
  std::string sha;                  // the commit `revision` points at
  std::vector<std::string> files;   // "siblings[].rfilename"
};
// GET {endpoint}/api/models/{repo}/revision/{revision}. Errors as hub_download.
RepoInfo model_info(const std::string& repo, const std::string& revision, const HubOptions& options);

struct PullOptions {
  std::string revision = "main";
  std::string variant;      // "fp16": prefer *.fp16.safetensors weights
  std::string single_file;  // pull only this file (e.g. "v1-5-pruned-emaonly.safetensors")
};

// Downloads what a diffusers pipeline needs and returns its snapshot folder
// (or, with single_file, the local path of that file). `repo_or_alias` is a
// repo id or a model_aliases() name. Reads model_index.json; per component
// (unet, vae, text_encoder[_2], tokenizer[_2], scheduler; safety_checker,
// feature_extractor and image_encoder are skipped) fetches its config and one
// set of weights chosen by plan_pipeline_files. refs/<revision> is written
// last, so an interrupted pull never looks complete to resolve_cached.
std::string pull_pipeline(const std::string& repo_or_alias, const PullOptions& pull, const HubOptions& options);

// The files of a pipeline to fetch, given model_index.json and the repo's
// file list. Weights, per component folder C, first match of:
//   C/{diffusion_pytorch_model,model,pytorch_model}[.{variant}].safetensors
//   C/...safetensors.index[.{variant}].json   (sharded; shards are read from it)
// with the variant tried before the plain name, then the same for ".bin".
// Throws Error(kNotFound) naming the component when a required file is missing.
std::vector<std::string> plan_pipeline_files(const nlohmann::json& model_index, const std::vector<std::string>& repo_files,
                                             const std::string& variant);

}  // namespace diffuse::hub
