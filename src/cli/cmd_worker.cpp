// diffuse worker: runs the jobs of a Redis job queue (docs/deploy.md).
#include <cstdio>
#include <filesystem>

#include "cli/cli.h"
#include "core/thread_pool.h"
#include "pipeline/demo_model.h"
#include "server/queue_worker.h"
#include "server/redis_client.h"
#include "sys/device_select.h"

namespace diffuse::cli {

Action add_worker(CLI::App& app) {
  auto o = std::make_shared<server::WorkerOptions>();
  auto device = std::make_shared<std::string>("auto");
  auto precision = std::make_shared<std::string>();
  auto no_hf = std::make_shared<bool>(false);
  auto no_demo = std::make_shared<bool>(false);
  auto threads = std::make_shared<int>(0);
  CLI::App* c = app.add_subcommand("worker", "Run the jobs of a Redis job queue that `diffuse serve --queue` fills");
  c->footer(
      "Reads the streams diffuse:jobs:<model> of the models it serves (consumer group 'workers'), models it has\n"
      "loaded first. SIGTERM / Ctrl-C: finishes the running job, then exits. Details: docs/deploy.md.\n"
      "Example: diffuse worker --queue redis://:secret@10.0.0.5:6379/0 --models ~/models --device cuda:0");
  c->add_option("--queue", o->url, "The Redis queue: redis://[user:password@]host:port/db")->required();
  c->add_option("--name", o->name, "This worker's consumer name (default: hostname-pid); unique per worker");
  c->add_option("--models", o->models.model_dirs, "Folder of models to serve; repeatable");
  c->add_option("--model", o->models.model_files, "A single model to serve (file, diffusers folder or alias); repeatable");
  c->add_option("--max-loaded", o->models.max_loaded, "Models kept in memory at once (LRU, default 1)");
  c->add_option("--device", *device, sys::kDeviceHelp);
  c->add_option("--precision", *precision, "fp32, bf16 or fp16");
  c->add_option("--threads", *threads, "CPU threads (default: all cores)");
  c->add_flag("--no-hf-cache", *no_hf, "Do not serve models from the Hugging Face cache");
  c->add_flag("--no-demo", *no_demo, "Do not serve the built-in demo model");
  c->add_option("--upscaler-dir", o->upscaler_dirs, "Folder of ESRGAN upscalers for the hires fix (default models/ESRGAN)")
      ->allow_extra_args(false);
  c->add_option("--taesd-dir", o->preview.taesd_dirs, "Folder of TAESD decoders for live previews (default models/VAE-approx)")
      ->allow_extra_args(false);
  c->add_option("--visibility-timeout", o->visibility_timeout_s,
                "Seconds a job may go without a sign of life from its worker before another worker takes it over "
                "(default 60)")
      ->check(CLI::Range(1, 86400));
  c->add_option("--heartbeat", o->heartbeat_s, "Seconds between heartbeats (default 2)")->check(CLI::Range(1, 3600));
  c->add_option("--max-attempts", o->max_attempts, "A job whose workers died this many times fails (default 3)")
      ->check(CLI::Range(1, 100));
  c->add_option("--result-ttl", o->result_ttl_s, "Seconds finished jobs and their PNGs stay in Redis (default 86400)")
      ->check(CLI::Range(60, 365 * 86400));
  c->add_option("--results-dir", o->results_dir, "Write the PNGs to this folder (shared with the front ends) instead of Redis");
  c->add_option("--max-jobs", o->max_jobs, "Exit after this many jobs (0: never; benchmarks)")->check(CLI::Range(0, 1 << 30));
  return [o, device, precision, no_hf, no_demo, threads]() {
    if (*threads > 0) set_num_threads(*threads);
    sys::parse_device_spec(*device);
    if (!precision->empty()) o->models.load.precision = precision_from_name(*precision);
    o->models.scan_hf_cache = !*no_hf;
    for (std::string& m : o->models.model_files) m = resolve_model(m);
    if (!*no_demo) {
      if (auto demo = demo_model_path()) o->models.model_files.insert(o->models.model_files.begin(), *demo);
    }
    if (o->upscaler_dirs.empty()) o->upscaler_dirs = {"models/ESRGAN"};
    if (o->preview.taesd_dirs.empty()) o->preview.taesd_dirs = {"models/VAE-approx"};
    const sys::DeviceChoice chosen = sys::select_device(*device);
    std::fprintf(stderr, "%s\n", chosen.line.c_str());
    o->models.load.device = chosen.device;
    o->device_name = chosen.name;
    install_signal_handlers();
    server::QueueWorker worker(*o);
    std::fprintf(stderr, "diffuse worker %s: serving %s\n", worker.name().c_str(),
                 server::RedisUrl::parse(o->url).redacted().c_str());
    worker.run([] { return interrupted(); });
    std::fprintf(stderr, "diffuse worker %s: stopped\n", worker.name().c_str());
    return kExitOk;
  };
}

}  // namespace diffuse::cli
