// diffuse serve: the playground web page and the HTTP APIs.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli/cli.h"
#include "cli/vae_option.h"
#include "core/thread_pool.h"
#include "pipeline/demo_model.h"
#include "server/server.h"
#include "sys/device_select.h"

namespace diffuse::cli {

Action add_serve(CLI::App& app) {
  auto o = std::make_shared<server::ServerOptions>();
  auto device = std::make_shared<std::string>("auto");
  auto precision = std::make_shared<std::string>();
  auto no_hf = std::make_shared<bool>(false);
  auto threads = std::make_shared<int>(0);
  auto no_demo = std::make_shared<bool>(false);
  CLI::App* c = app.add_subcommand("serve", "Serve the web playground and the A1111 / OpenAI compatible APIs");
  c->footer(
      "Open http://127.0.0.1:7860/ in a browser.\n"
      "APIs: /api/* (native, SSE progress), /sdapi/v1/* (AUTOMATIC1111), /v1/images/generations (OpenAI).\n"
      "LoRAs: <lora:name:weight> in a prompt, from --lora-dir; /sdapi/v1/loras and /api/loras list them.\n"
      "Example: diffuse serve --models ~/models --lora-dir ~/models/Lora --port 7860");
  c->add_option("--models", o->model_dirs, "Folder of models (diffusers folders, .safetensors, .ckpt); repeatable");
  c->add_option("--model", o->model_files, "A single model (file or diffusers folder); repeatable");
  c->add_option("--random-model", o->random_models,
                "A full-size architecture with random weights, listed first as random-<arch> (sd15, sd21 or sdxl): "
                "measures the server's speed without a checkpoint (tools/bench_live.py); its images are noise; repeatable")
      ->check(CLI::IsMember({"sd15", "sd21", "sdxl"}));
  c->add_option("--host", o->host, "Address to bind (default 127.0.0.1; others need --api-key or --api-auth)");
  c->add_option("--port", o->port, "Port (default 7860; 0 = any free port)");
  c->add_option("--data-dir", o->data_dir, "Where history.db and images/ live (default ~/.local/share/diffuse)");
  c->add_option("--api-key", o->api_key,
                "Require this key on every request (Authorization: Bearer KEY; browsers: any user name, KEY as password)");
  c->add_option("--api-auth", o->api_auth,
                "Require HTTP Basic credentials user:pass[,user2:pass2] on every request (A1111's flag; Open WebUI)");
  c->add_option("--max-loaded", o->max_loaded, "Models kept in memory at once (LRU, default 1)");
  c->add_option("--device", *device, sys::kDeviceHelp);
  c->add_option("--precision", *precision, "fp32, bf16 or fp16");
  c->add_flag("--no-hf-cache", *no_hf, "Do not list models from the Hugging Face cache");
  c->add_option("--threads", *threads, "CPU threads (default: all cores)");
  c->add_flag("--no-demo", *no_demo, "Do not list the built-in demo model (listed first otherwise)");
  c->add_option("--lora-dir", o->lora_dirs,
                "Folder of LoRA / LyCORIS files that <lora:name:w> in a prompt names (default: models/Lora in the "
                "working directory, as A1111; searched recursively); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--embeddings-dir", o->embedding_dirs,
                "Folder of textual-inversion embeddings, used by their file names in prompts (default: embeddings "
                "in the working directory); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--vae-dir", o->vae_dirs,
                "Folder of VAE files (.safetensors, .ckpt, .pt) and diffusers VAE folders that A1111's sd_vae option "
                "and /sdapi/v1/sd-vae name (default: models/VAE in the working directory, as A1111); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--upscaler-dir", o->upscaler_dirs,
                "Folder of ESRGAN / Real-ESRGAN upscaler models for the hires fix and /sdapi/v1/upscalers (default: "
                "models/ESRGAN in the working directory, as A1111); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--controlnet-dir", o->controlnet_dirs,
                "Folder of ControlNet models (.safetensors, .pth, diffusers folders) for /controlnet/model_list and "
                "the ControlNet units of txt2img / img2img (default: models/ControlNet in the working directory, as "
                "A1111); repeatable")
      ->allow_extra_args(false);  // one value per flag: a following argument is not taken
  c->add_option("--vae", o->default_vae,
                std::string("The default VAE (sd_vae) of every request. ") + kVaeHelp);
  c->add_option("--taesd-dir", o->preview.taesd_dirs,
                "Folder of TAESD decoders for live previews: taesd_decoder.safetensors/.pth (SD1/SD2), "
                "taesdxl_decoder.* (SDXL) or diffusers taesd/ taesdxl/ folders (default: models/VAE-approx in the "
                "working directory, as A1111); repeatable")
      ->allow_extra_args(false);
  auto preview_method = std::make_shared<std::string>("auto");
  c->add_option("--preview", *preview_method,
                "Live preview method: auto (TAESD when a decoder is found, else cheap), taesd, cheap (default auto)")
      ->check(CLI::IsMember({"auto", "taesd", "cheap"}));
  c->add_option("--preview-every", o->preview.every_n_steps,
                "A live preview every N steps at most (default 1; 0: none); previews also never take more than "
                "10% of the denoising time (docs/previews.md)")
      ->check(CLI::Range(0, 10000));
  c->add_option("--queue", o->queue,
                "Be a front end of a Redis job queue: redis://[user:password@]host:port/db. Jobs run on `diffuse "
                "worker`s (docs/deploy.md)");
  c->add_option("--result-ttl", o->queue_result_ttl_s,
                "With --queue: seconds finished jobs and their PNGs stay in Redis (default 86400)")
      ->check(CLI::Range(60, 365 * 86400));
  return [o, device, precision, no_hf, threads, no_demo, preview_method]() {
    o->preview.method = preview_method_from_name(*preview_method);
    if (o->preview.taesd_dirs.empty()) o->preview.taesd_dirs = {"models/VAE-approx"};
    if (*threads > 0) set_num_threads(*threads);
    sys::parse_device_spec(*device);  // a bad value is a usage error before anything else
    if (!precision->empty()) o->load.precision = precision_from_name(*precision);
    o->scan_hf_cache = !*no_hf;
    if (o->lora_dirs.empty()) o->lora_dirs = {"models/Lora"};
    if (o->embedding_dirs.empty()) o->embedding_dirs = {"embeddings"};
    if (o->vae_dirs.empty()) o->vae_dirs = {kDefaultVaeDir};
    if (o->upscaler_dirs.empty()) o->upscaler_dirs = {"models/ESRGAN"};
    if (o->controlnet_dirs.empty()) o->controlnet_dirs = {"models/ControlNet"};
    // Absolute: messages and /sdapi/v1/loras name the folders the server really reads.
    for (auto* dirs : {&o->lora_dirs, &o->embedding_dirs, &o->preview.taesd_dirs, &o->vae_dirs, &o->upscaler_dirs,
                       &o->controlnet_dirs}) {
      for (std::string& d : *dirs) d = std::filesystem::absolute(d).lexically_normal().string();
    }
    for (std::string& m : o->model_files) m = resolve_model(m);
    o->default_vae = resolve_vae_option(o->default_vae, o->vae_dirs);  // a path, or "" (the model's own)
    if (!*no_demo) {
      if (auto demo = demo_model_path()) o->model_files.insert(o->model_files.begin(), *demo);
    }
    const sys::DeviceChoice chosen = sys::select_device(*device);
    std::fprintf(stderr, "%s\n", chosen.line.c_str());
    o->load.device = chosen.device;
    server::Server srv(*o);
    int port = srv.bind();
    std::fprintf(stderr, "diffuse serve: http://%s:%d/  (Ctrl-C to stop)\n", o->host.c_str(), port);
    install_signal_handlers();
    // SIGINT/SIGTERM: stop() cancels the queued jobs and the running one at its
    // next step (a cancelled job commits no history row), closes the streams
    // and returns from run(); the history database is closed cleanly. Exit 0.
    std::atomic<bool> finished{false};
    std::thread watcher([&srv, &finished] {
      while (!interrupted() && !finished) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (interrupted()) {
        std::fprintf(stderr, "diffuse serve: stopping (running job cancelled at its next step)\n");
        srv.stop();
      }
    });
    srv.run();
    finished = true;
    watcher.join();
    std::fprintf(stderr, "diffuse serve: stopped\n");
    return kExitOk;
  };
}

}  // namespace diffuse::cli
