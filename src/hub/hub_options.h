// Where the Hugging Face hub is and where its files go: the same environment
// variables and defaults as huggingface_hub (constants.py), so a cache filled
// by Python tools is reused and vice versa.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace diffuse::hub {

struct DownloadProgress {
  std::string repo;          // "stable-diffusion-v1-5/stable-diffusion-v1-5"
  std::string path;          // "unet/diffusion_pytorch_model.safetensors"
  uint64_t downloaded = 0;   // bytes of this file on disk so far (a resumed part counts)
  uint64_t total = 0;        // bytes of this file; 0 when the server did not say
  bool done = false;         // the last call for this file
  int attempt = 1;           // which try at this file (1..HubOptions::download_attempts)
  // What the progress line should add, "" while nothing unusual happened:
  //   "resumed at 1.20 GiB (attempt 2/5)"  (kept for the rest of the file)
  //   "interrupted at 1.20 GiB (<why>); retrying in 2 s (attempt 2/5)"
  //   "resumed at 80.0 MiB (partial file from an earlier run)"
  //   "restarted from 0: <why> (attempt 3/5)"
  std::string note;
};

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // no trailing '/'
  std::string token;                                 // sent as "Authorization: Bearer"; empty = anonymous
  std::string cache_dir;                             // .../huggingface/hub
  bool offline = false;                              // HF_HUB_OFFLINE: never touch the network
  // Called at most every ~100 ms per file and once with done=true. Per call,
  // never global (STYLE.md "State").
  std::function<void(const DownloadProgress&)> progress;
  // Polled during transfers; true stops with Error(kCancelled), keeping the partial file.
  std::function<bool()> cancel;

  // A file transfer that breaks (connection reset or refused, the stream
  // ending early, no byte for stall_timeout_ms, HTTP 5xx or 429) is retried
  // inside the same call with "Range: bytes=<have>-", as huggingface_hub's
  // http_get does: at most download_attempts tries per file in all. Before
  // try k+1 it waits retry_base_delay_ms * 2^(k-1), at most retry_max_delay_ms
  // (1, 2, 4, 8 s). 401/403/404 are never retried.
  int download_attempts = 5;
  int retry_base_delay_ms = 1000;
  int retry_max_delay_ms = 8000;
  int stall_timeout_ms = 60000;

  // endpoint: $HF_ENDPOINT, else https://huggingface.co.
  // token: $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH,
  //        else $HF_HOME/token (HF_HOME defaults to ${XDG_CACHE_HOME:-~/.cache}/huggingface).
  // cache_dir: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub.
  // offline: $HF_HUB_OFFLINE in {1, true, yes, on}.
  static HubOptions from_env();
};

}  // namespace diffuse::hub
