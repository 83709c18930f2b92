#include "server/queue_worker.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "adapters/upscalers.h"
#include "io/png.h"
#include "pipeline/hires.h"
#include "server/job_queue.h"
#include "server/queue_codec.h"
#include "server/queue_keys.h"
#include "server/redis_client.h"
#include "text/lora_tags.h"

namespace fs = std::filesystem;

namespace diffuse::server {
namespace {

using nlohmann::json;

std::string default_worker_name() {
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "worker");
  return std::string(host) + "-" + std::to_string(getpid());
}

// One stream entry: [entry id, [field, value, ...]] -> (entry id, job id).
std::optional<std::pair<std::string, std::string>> entry_of(const RedisReply& e) {
  if (e.type != RedisReply::Type::kArray || e.elements.size() < 2) return std::nullopt;
  const RedisReply& kv = e.elements[1];
  for (size_t i = 0; i + 1 < kv.elements.size(); i += 2) {
    if (kv.elements[i].str == "id") return std::make_pair(e.elements[0].str, kv.elements[i + 1].str);
  }
  // A trimmed entry (nil fields): acknowledge it by id alone.
  return std::make_pair(e.elements[0].str, std::string());
}

}  // namespace

void WorkerOptions::validate() const {
  DIFFUSE_CHECK_ARG(!url.empty(), "diffuse worker needs --queue redis://host:port/db");
  RedisUrl::parse(url);
  DIFFUSE_CHECK_ARG(visibility_timeout_s >= 1, "--visibility-timeout must be at least 1 second");
  DIFFUSE_CHECK_ARG(heartbeat_s >= 1, "--heartbeat must be at least 1 second");
  DIFFUSE_CHECK_ARG(max_attempts >= 1, "--max-attempts must be at least 1");
  DIFFUSE_CHECK_ARG(result_ttl_s >= 60, "--result-ttl must be at least 60 seconds");
  DIFFUSE_CHECK_ARG(max_jobs >= 0, "--max-jobs must be 0 or more");
  DIFFUSE_CHECK_ARG(name.find_first_of(" \t\n") == std::string::npos, "--name must not contain spaces");
}

struct QueueWorker::Impl {
  WorkerOptions o;
  // One client per thread: the job loop, and the heartbeat thread.
  std::unique_ptr<RedisClient> redis, beat_redis;
  std::unique_ptr<ModelRegistry> models;
  std::shared_ptr<UpscalerLibrary> upscalers;
  LivePreviewer previewer;
  std::vector<std::string> model_ids;

  std::mutex mu;  // guards the fields the heartbeat reads
  std::condition_variable cv;
  std::string cur_stream, cur_entry, cur_job;
  double it_per_s = 0;
  int jobs_done = 0;
  std::atomic<bool> quit{false};
  std::thread beat;

  explicit Impl(WorkerOptions opts) : o(std::move(opts)), previewer(o.preview) {}

  std::vector<std::string> streams_by_affinity() const {
    // Models this worker has loaded first: a job for them costs no load.
    std::vector<std::string> first, rest;
    for (const ModelEntry& m : models->list()) (m.loaded ? first : rest).push_back(queue::stream_key(m.id));
    first.insert(first.end(), rest.begin(), rest.end());
    return first;
  }

  void heartbeat_once() {
    json b;
    std::string stream, entry;
    {
      std::lock_guard<std::mutex> lock(mu);
      b = {{"name", o.name},       {"device", o.device_name}, {"busy", cur_job.empty() ? 0 : 1},
           {"job", cur_job},       {"it_per_s", it_per_s},    {"jobs_done", jobs_done},
           {"pid", getpid()},      {"time", now_unix()}};
      stream = cur_stream;
      entry = cur_entry;
    }
    json loaded = json::array(), all = json::array();
    for (const ModelEntry& m : models->list()) {
      all.push_back(m.id);
      if (m.loaded) loaded.push_back(m.id);
    }
    b["models"] = all;
    b["loaded"] = loaded;
    std::vector<std::vector<std::string>> cmds = {
        {"SET", queue::worker_key(o.name), b.dump(), "EX", std::to_string(3 * o.heartbeat_s)},
        {"SADD", queue::kWorkers, o.name}};
    // The job this worker holds stays ours: its idle time restarts (no delivery count).
    if (!entry.empty()) cmds.push_back({"XCLAIM", stream, queue::kGroup, o.name, "0", entry, "JUSTID"});
    beat_redis->pipeline(cmds);
  }

  void heartbeat_loop() {
    const auto period = std::chrono::milliseconds(
        std::min<int64_t>(int64_t{o.heartbeat_s} * 1000, int64_t{o.visibility_timeout_s} * 1000 / 3 + 1));
    std::unique_lock<std::mutex> lock(mu);
    while (!quit) {
      lock.unlock();
      try {
        heartbeat_once();
      } catch (const std::exception& e) {
        if (!quit) std::fprintf(stderr, "diffuse worker: heartbeat: %s\n", e.what());
      }
      lock.lock();
      cv.wait_for(lock, period, [&] { return quit.load(); });
    }
  }

  // Finishes the job (exactly once across workers) and acknowledges its entry.
  void finish(const std::string& stream, const std::string& entry, const std::string& job, const char* state,
              const std::vector<std::pair<std::string, std::string>>& fields) {
    std::vector<std::string> args = {"EVAL",      queue::kFinishScript, "4",         queue::job_key(job), stream,
                                     queue::kFinished, queue::kStats,   entry,       o.name,
                                     state,       queue::unix_text(now_unix()), std::to_string(o.result_ttl_s), job};
    for (const auto& [k, v] : fields) {
      args.push_back(k);
      args.push_back(v);
    }
    const int64_t won = redis->command(args).as_int(0);
    if (won == 0) std::fprintf(stderr, "diffuse worker: job %s was already finished elsewhere\n", job.c_str());
  }

  void ack(const std::string& stream, const std::string& entry) {
    redis->command({"XACK", stream, queue::kGroup, entry});
  }

  void process(const std::string& stream, const std::string& entry, const std::string& job) {
    if (job.empty()) return ack(stream, entry);
    const std::string key = queue::job_key(job);
    const int64_t attempt = redis->command({"EVAL", queue::kStartScript, "1", key, o.name, queue::unix_text(now_unix())}).as_int(-1);
    if (attempt <= 0) return ack(stream, entry);  // expired, finished, or cancelled while queued
    if (attempt > o.max_attempts) {
      return finish(stream, entry, job, "failed",
                    {{"error", "gave up after " + std::to_string(o.max_attempts) +
                                   " attempts: the workers that ran this job stopped in the middle"},
                     {"error_code", std::to_string(static_cast<int>(ErrorCode::kRuntime))}});
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      cur_stream = stream;
      cur_entry = entry;
      cur_job = job;
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    try {
      const RedisReply spec = redis->command({"HGET", key, "request"});
      const json j = json::parse(spec.str, nullptr, false);
      DIFFUSE_CHECK(!j.is_discarded(), ErrorCode::kInvalidArgument, "job " + job + " has no readable request");
      JobRequest req = decode_job_request(j);
      if (req.params.hires.enabled) req.params.hires.models = hires_models_from(upscalers);
      std::shared_ptr<Pipeline> pipe = models->acquire(req.model);
      const Family family = pipe->info().family;
      std::optional<LivePreviewer::Session> previews;
      auto last_check = std::chrono::steady_clock::now() - std::chrono::seconds(1);
      bool interrupt = false;
      GenerationResult r = pipe->generate(req.params, [&](const StepProgress& s) {
        if (!previews) previews = previewer.start(family, s.latents.device(), pipe->info().preview_factors);
        const double ips = s.elapsed_s > 0 ? s.step / s.elapsed_s : 0;
        {
          std::lock_guard<std::mutex> lock(mu);
          it_per_s = ips;
        }
        const auto now = std::chrono::steady_clock::now();
        // Progress and the cancel check at most every 100 ms (and at the last step).
        if (now - last_check < std::chrono::milliseconds(100) && s.step < s.total_steps) return interrupt;
        last_check = now;
        std::vector<std::vector<std::string>> cmds;
        std::vector<std::string> hset = {"HSET",        key,
                                         "phase",       "denoising",
                                         "step",        std::to_string(s.step),
                                         "total_steps", std::to_string(s.total_steps),
                                         "elapsed_s",   std::to_string(s.elapsed_s),
                                         "it_per_s",    std::to_string(ips),
                                         "eta_s",       std::to_string(ips > 0 ? (s.total_steps - s.step) / ips : 0)};
        if (previews->due(s)) {
          const LivePreview p = previews->make(s, 0);
          const std::vector<uint8_t> png = encode_png(p.width, p.height, p.rgb.data(), {});
          hset.insert(hset.end(), {"preview", std::string(png.begin(), png.end()), "preview_step",
                                   std::to_string(s.step)});
          cmds.push_back({"HINCRBY", key, "previews", "1"});
        }
        cmds.insert(cmds.begin(), hset);
        cmds.push_back({"HINCRBY", key, "version", "1"});
        cmds.push_back({"HMGET", key, "cancel", "interrupt"});
        try {
          const std::vector<RedisReply> out = redis->pipeline(cmds);
          const RedisReply& flags = out.back();
          if (flags.elements.size() == 2) {
            if (flags.elements[0].str == "1") {
              throw_error(ErrorCode::kCancelled, "generation cancelled after step " + std::to_string(s.step));
            }
            interrupt = flags.elements[1].str == "1";
          }
        } catch (const Error& e) {
          if (e.code() == ErrorCode::kCancelled) throw;
          // Redis away: the job goes on; progress resumes when it is back.
        }
        return interrupt;
      });
      json images = json::array();
      std::vector<std::pair<std::string, std::string>> fields;
      for (size_t i = 0; i < r.images.size(); ++i) {
        const Image& im = r.images[i];
        const std::string parameters = req.written_prompt.empty()
                                           ? im.parameters
                                           : infotext_with_prompt(im.parameters, req.params.prompt, req.written_prompt);
        const std::vector<uint8_t> png = encode_png(im.width, im.height, im.rgb.data(), {{"parameters", parameters}});
        json d = {{"seed", im.seed}, {"width", im.width}, {"height", im.height}, {"parameters", parameters}};
        if (!o.results_dir.empty()) {
          const fs::path path = fs::path(o.results_dir) / (job + "-" + std::to_string(i + 1) + ".png");
          write_png(path.string(), im.width, im.height, im.rgb.data(), {{"parameters", parameters}});
          d["path"] = fs::absolute(path).string();
        } else {
          fields.emplace_back("img:" + std::to_string(i + 1), std::string(png.begin(), png.end()));
        }
        images.push_back(d);
      }
      json warnings = req.warnings;
      for (const std::string& w : r.warnings) warnings.push_back(w);
      fields.insert(fields.end(), {{"images", images.dump()},
                                   {"seed", std::to_string(r.seed)},
                                   {"stopped_at_step", std::to_string(r.stopped_at_step)},
                                   {"warnings", warnings.dump()},
                                   {"elapsed_s", std::to_string(elapsed())}});
      finish(stream, entry, job, "done", fields);
      std::lock_guard<std::mutex> lock(mu);
      ++jobs_done;
    } catch (const Error& e) {
      const bool cancelled = e.code() == ErrorCode::kCancelled;
      if (e.code() == ErrorCode::kIo && std::string(e.what()).rfind("redis:", 0) == 0) {
        // Redis stayed away longer than the client waits: leave the entry
        // unacknowledged; it is claimed again (by us or another worker).
        std::fprintf(stderr, "diffuse worker: job %s: %s (left for a retry)\n", job.c_str(), e.what());
      } else {
        finish(stream, entry, job, cancelled ? "cancelled" : "failed",
               {{"error", e.what()},
                {"error_code", std::to_string(static_cast<int>(e.code()))},
                {"elapsed_s", std::to_string(elapsed())}});
      }
    } catch (const std::exception& e) {
      finish(stream, entry, job, "failed",
             {{"error", e.what()}, {"error_code", std::to_string(static_cast<int>(ErrorCode::kRuntime))}});
    }
    std::lock_guard<std::mutex> lock(mu);
    cur_stream.clear();
    cur_entry.clear();
    cur_job.clear();
  }

  // One entry to work on: a reclaimed one first, then new ones by affinity.
  bool take_one() {
    const std::vector<std::string> streams = streams_by_affinity();
    for (const std::string& s : streams) {
      const RedisReply r = redis->command({"XAUTOCLAIM", s, queue::kGroup, o.name,
                                           std::to_string(int64_t{o.visibility_timeout_s} * 1000), "0-0", "COUNT", "1"});
      if (r.elements.size() >= 2 && !r.elements[1].elements.empty()) {
        if (auto e = entry_of(r.elements[1].elements[0])) {
          redis->command({"HINCRBY", queue::kStats, "reclaimed", "1"});
          std::fprintf(stderr, "diffuse worker %s: reclaimed job %s from a silent worker\n", o.name.c_str(),
                       e->second.c_str());
          process(s, e->first, e->second);
          return true;
        }
      }
    }
    for (const std::string& s : streams) {
      const RedisReply r =
          redis->command({"XREADGROUP", "GROUP", queue::kGroup, o.name, "COUNT", "1", "STREAMS", s, ">"});
      if (r.nil() || r.elements.empty() || r.elements[0].elements.size() < 2) continue;
      const RedisReply& entries = r.elements[0].elements[1];
      if (entries.elements.empty()) continue;
      if (auto e = entry_of(entries.elements[0])) {
        process(s, e->first, e->second);
        return true;
      }
    }
    return false;
  }

  void setup_streams() {
    for (const ModelEntry& m : models->list()) {
      model_ids.push_back(m.id);
      const RedisReply r = redis->pipeline({{"XGROUP", "CREATE", queue::stream_key(m.id), queue::kGroup, "0", "MKSTREAM"},
                                            {"SADD", queue::kModels, m.id}})[0];
      if (r.type == RedisReply::Type::kError && r.str.rfind("BUSYGROUP", 0) != 0) {
        throw_error(ErrorCode::kRuntime, "redis: XGROUP CREATE " + queue::stream_key(m.id) + ": " + r.str);
      }
    }
    DIFFUSE_CHECK_ARG(!model_ids.empty(), "diffuse worker has no models: give --model or --models");
  }
};

QueueWorker::QueueWorker(WorkerOptions options) {
  if (options.name.empty()) options.name = default_worker_name();
  options.validate();
  if (!redis_available()) {
    throw_error(ErrorCode::kUnsupported,
                "diffuse worker: this diffuse was built without hiredis; install libhiredis-dev "
                "(scripts/install_deps.sh) and rebuild");
  }
  if (!options.results_dir.empty()) fs::create_directories(options.results_dir);
  impl_ = std::make_unique<Impl>(std::move(options));
  Impl& w = *impl_;
  const RedisUrl url = RedisUrl::parse(w.o.url);
  RedisClient::Options ro;
  ro.retry_for = std::chrono::minutes(2);  // a worker waits out a Redis restart
  w.redis = std::make_unique<RedisClient>(url, ro);
  w.beat_redis = std::make_unique<RedisClient>(url, ro);
  RedisClient probe(url, RedisClient::Options{std::chrono::milliseconds(2000), std::chrono::milliseconds(5000),
                                             std::chrono::milliseconds(0)});
  probe.command({"PING"});  // unreachable or a wrong password: stop now, naming the URL
  w.models = std::make_unique<ModelRegistry>(w.o.models);
  w.upscalers = std::make_shared<UpscalerLibrary>(w.o.upscaler_dirs);
  w.setup_streams();
}

QueueWorker::~QueueWorker() {
  if (!impl_) return;
  impl_->quit = true;
  impl_->cv.notify_all();
  if (impl_->beat.joinable()) impl_->beat.join();
}

const std::string& QueueWorker::name() const { return impl_->o.name; }

void QueueWorker::run(const std::function<bool()>& stop) {
  Impl& w = *impl_;
  w.beat = std::thread([&w] { w.heartbeat_loop(); });
  int done = 0;
  while (!stop() && (w.o.max_jobs == 0 || done < w.o.max_jobs)) {
    bool worked = false;
    try {
      worked = w.take_one();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "diffuse worker %s: %s (retrying)\n", w.o.name.c_str(), e.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    if (worked) ++done;
    else std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  w.quit = true;
  w.cv.notify_all();
  if (w.beat.joinable()) w.beat.join();
  // Gone at once from /metrics and the routing picture.
  w.redis->try_command({"DEL", queue::worker_key(w.o.name)});
  w.redis->try_command({"SREM", queue::kWorkers, w.o.name});
}

}  // namespace diffuse::server
