// `diffuse serve`: the playground web page and the HTTP APIs (native JSON +
// SSE, AUTOMATIC1111 /sdapi/v1, OpenAI Images) from one binary.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "pipeline/live_preview.h"
#include "pipeline/pipeline.h"

namespace diffuse::server {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback by default; other hosts need api_key or api_auth
  int port = 7860;                 // 0 = any free port (tests)
  std::vector<std::string> model_dirs;
  std::vector<std::string> model_files;
  std::vector<std::string> random_models;  // --random-model: sd15 / sd21 / sdxl with random weights (benchmarks)
  bool scan_hf_cache = true;
  std::string data_dir;            // history.db + images/; default ~/.local/share/diffuse
  std::string api_key;             // required (Bearer / X-API-Key, or as the Basic password) when set
  std::string api_auth;            // "user:pass[,user2:pass2]": HTTP Basic (A1111 --api-auth); server/auth.h
  int max_loaded = 1;              // pipelines kept in memory (LRU)
  size_t max_body_bytes = 1 << 20;  // a request without images (larger ones: 413)
  // Uploads (img2img / inpainting init images and masks): bytes of each encoded
  // image and its width and height. Routes that take images accept bodies of
  // max_body_bytes plus two images of this size (base64 in JSON, or multipart).
  size_t max_upload_bytes = size_t{32} << 20;
  int max_upload_side = 4096;
  // LoRA and embedding folders (A1111's --lora-dir and --embeddings-dir;
  // adapters/library.h): <lora:name:w> in a prompt names a file under
  // lora_dirs, and an embedding file's stem in a prompt uses it. Empty: none.
  // `diffuse serve` defaults to models/Lora and embeddings under the working directory.
  std::vector<std::string> lora_dirs;
  std::vector<std::string> embedding_dirs;
  // VAE folders (A1111's models/VAE and --vae-dir; server/vae_library.h,
  // docs/vae.md) and the default VAE (A1111's sd_vae): a name in them, a file
  // or folder path, "Automatic" or "" (the model's own). `diffuse serve`
  // defaults vae_dirs to models/VAE under the working directory.
  std::vector<std::string> vae_dirs;
  // Upscaler model folders (A1111's models/ESRGAN; adapters/upscalers.h): the hires fix's
  // hr_upscaler and /sdapi/v1/upscalers. Empty: models/ESRGAN under the working directory.
  std::vector<std::string> upscaler_dirs;
  // ControlNet folders (A1111's models/ControlNet; docs/controlnet.md): /controlnet/model_list and the
  // ControlNet units of /sdapi/v1/txt2img and img2img. Empty: models/ControlNet under the working directory.
  std::vector<std::string> controlnet_dirs;
  std::string default_vae;
  // Live previews (pipeline/live_preview.h, docs/previews.md): TAESD decoders
  // in preview.taesd_dirs (`diffuse serve` defaults to models/VAE-approx, as
  // A1111), the period and the time ceiling; A1111's show_progress_type and
  // show_progress_every_n_steps (/sdapi/v1/options) change them at run time.
  PreviewOptions preview;
  LoadOptions load;
  // The Redis job queue (docs/deploy.md): "redis://[user:pass@]host:port/db"
  // makes this server a front end whose jobs run on `diffuse worker`s; "" runs
  // them here. Finished jobs stay in Redis queue_result_ttl_s seconds.
  std::string queue;
  int queue_result_ttl_s = 86400;
  void validate() const;           // throws kInvalidArgument (e.g. non-loopback host without api_key / api_auth)
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  int bind();        // binds the socket; returns the port (useful with port 0)
  void run();        // serves until stop(); call bind() first
  void stop();       // thread-safe; finishes the running job's step and returns from run()

  struct State;

 private:
  std::unique_ptr<State> state_;
};

std::string default_data_dir();

}  // namespace diffuse::server
