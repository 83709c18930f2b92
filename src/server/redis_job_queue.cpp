#include "server/redis_job_queue.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "server/queue_codec.h"
#include "server/queue_keys.h"

namespace fs = std::filesystem;

namespace diffuse::server {
namespace {

using nlohmann::json;

constexpr size_t kKeepFinished = 256;
constexpr auto kPollPeriod = std::chrono::milliseconds(50);
constexpr auto kSyncPeriod = std::chrono::seconds(2);

// 16 hex digits: random, so ids from several front ends never collide.
std::string new_job_id() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ (static_cast<uint64_t>(getpid()) << 32));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

bool is_finished(JobState s) { return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled; }

JobState state_from(const std::string& s) {
  if (s == "running") return JobState::kRunning;
  if (s == "done") return JobState::kDone;
  if (s == "failed") return JobState::kFailed;
  if (s == "cancelled") return JobState::kCancelled;
  return JobState::kQueued;
}

double to_double(const std::string& s, double fallback = 0) {
  if (s.empty()) return fallback;
  try {
    return std::stod(s);
  } catch (const std::exception&) {
    return fallback;
  }
}

int64_t to_int(const std::string& s, int64_t fallback = 0) {
  if (s.empty()) return fallback;
  try {
    return std::stoll(s);
  } catch (const std::exception&) {
    return fallback;
  }
}

// The fields a snapshot is made of (the request, preview and PNGs are read only when needed).
const std::vector<std::string> kSnapFields = {"state",    "model",     "prompt",  "kind",         "created",
                                              "seed",     "echo",      "step",    "total_steps",  "it_per_s",
                                              "eta_s",    "elapsed_s", "error",   "error_code",   "images",
                                              "stopped_at_step", "warnings", "preview_step", "previews", "version",
                                              "interrupt", "phase"};

std::map<std::string, std::string> hmget_map(const RedisReply& r) {
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < r.elements.size() && i < kSnapFields.size(); ++i) {
    if (!r.elements[i].nil()) out[kSnapFields[i]] = r.elements[i].str;
  }
  return out;
}

std::vector<std::string> hmget_args(const std::string& id) {
  std::vector<std::string> args = {"HMGET", queue::job_key(id)};
  args.insert(args.end(), kSnapFields.begin(), kSnapFields.end());
  return args;
}

std::string field(const std::map<std::string, std::string>& m, const char* k) {
  auto it = m.find(k);
  return it == m.end() ? std::string() : it->second;
}

// Applies the hash's fields to a snapshot (images: their descriptions; files are named <id>-<n>.png).
void apply_fields(const std::map<std::string, std::string>& f, JobSnapshot* s) {
  s->state = state_from(field(f, "state"));
  if (s->state != JobState::kQueued) s->position = 0;
  // The phase (job_phase_label): the worker writes loading / denoising / saving while it runs.
  const std::string phase = field(f, "phase");
  s->phase = s->state == JobState::kQueued ? "queued"
             : s->state == JobState::kRunning ? (phase.empty() ? "loading" : phase)
                                              : job_state_name(s->state);
  s->model = field(f, "model");
  s->prompt = field(f, "prompt");
  if (!field(f, "kind").empty()) s->kind = field(f, "kind");
  s->created = to_double(field(f, "created"));
  s->seed = to_int(field(f, "seed"));
  s->echo = json::parse(field(f, "echo"), nullptr, false);
  if (s->echo.is_discarded()) s->echo = json::object();
  s->step = static_cast<int>(to_int(field(f, "step")));
  s->total_steps = static_cast<int>(to_int(field(f, "total_steps")));
  s->it_per_s = to_double(field(f, "it_per_s"));
  s->eta_s = to_double(field(f, "eta_s"));
  s->elapsed_s = to_double(field(f, "elapsed_s"));
  s->error = field(f, "error");
  s->error_code = static_cast<int>(to_int(field(f, "error_code")));
  s->stopped_at_step = static_cast<int>(to_int(field(f, "stopped_at_step")));
  s->preview_step = static_cast<int>(to_int(field(f, "preview_step")));
  s->interrupted = field(f, "interrupt") == "1";
  const json w = json::parse(field(f, "warnings"), nullptr, false);
  s->warnings.clear();
  if (w.is_array()) {
    for (const json& x : w) {
      if (x.is_string()) s->warnings.push_back(x.get<std::string>());
    }
  }
  s->images.clear();
  const json ims = json::parse(field(f, "images"), nullptr, false);
  if (s->state == JobState::kDone && ims.is_array()) {
    for (size_t i = 0; i < ims.size(); ++i) {
      JobImage im;
      im.file = s->id + "-" + std::to_string(i + 1) + ".png";
      im.seed = ims[i].value("seed", int64_t{0});
      im.width = ims[i].value("width", 0);
      im.height = ims[i].value("height", 0);
      im.parameters = ims[i].value("parameters", "");
      s->images.push_back(im);
    }
  }
}

void write_file_atomically(const fs::path& path, const std::string& bytes) {
  const fs::path tmp = path.string() + ".part";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    DIFFUSE_CHECK(f.good(), ErrorCode::kIo, "cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  DIFFUSE_CHECK(f.good(), ErrorCode::kIo, "cannot read the result " + path + " (is --results-dir shared with the workers?)");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::mutex g_materialize_mu;  // one materialization at a time (poller and handler threads)

}  // namespace

RedisJobQueue::RedisJobQueue(ModelRegistry& models, History& history, QueueOptions options)
    : JobQueue(models, history, NoWorker{}),
      options_(std::move(options)),
      hist_(history),
      redis_(RedisUrl::parse(options_.url)),
      poll_redis_(RedisUrl::parse(options_.url)) {
  DIFFUSE_CHECK_ARG(options_.result_ttl_s >= 60, "--result-ttl must be at least 60 seconds");
  RedisClient probe(RedisUrl::parse(options_.url), RedisClient::Options{std::chrono::milliseconds(2000),
                                                                       std::chrono::milliseconds(5000),
                                                                       std::chrono::milliseconds(0)});
  probe.command({"PING"});  // an unreachable Redis or a wrong password stops the start, naming the URL
  synced_until_ = now_unix() - options_.result_ttl_s;
  poller_ = std::thread([this] { poll_loop(); });
}

RedisJobQueue::~RedisJobQueue() {
  shutdown();
  if (poller_.joinable()) poller_.join();
}

void RedisJobQueue::shutdown() {
  stopping_ = true;
  redis_.abort();
  poll_redis_.abort();
  std::lock_guard<std::mutex> lock(mu_);
  cv_.notify_all();
}

bool RedisJobQueue::stopping() const { return stopping_; }

std::string RedisJobQueue::submit(JobRequest request) {
  request.params.validate();
  DIFFUSE_CHECK(!stopping_, ErrorCode::kCancelled, "the server is shutting down");
  const json spec = encode_job_request(request);  // kUnsupported for what the queue cannot carry
  Entry e;
  e.submitted_here = true;
  JobSnapshot& s = e.snap;
  s.id = new_job_id();
  s.model = request.model;
  s.prompt = !request.written_prompt.empty() ? request.written_prompt
             : request.params.prompts.empty()  ? request.params.prompt
                                               : request.params.prompts[0];
  s.created = now_unix();
  s.echo = request.echo;
  if (request.params.edit.active()) s.kind = "img2img";
  s.seed = request.params.seed;
  s.version = 1;
  std::vector<std::string> args = {"EVAL", queue::kSubmitScript, "4", queue::job_key(s.id),
                                   queue::stream_key(s.model), queue::kModels, queue::kStats, s.model};
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"id", s.id},
           {"state", "queued"},
           {"model", s.model},
           {"prompt", s.prompt},
           {"kind", s.kind},
           {"created", queue::unix_text(s.created)},
           {"seed", std::to_string(s.seed)},
           {"echo", s.echo.dump()},
           {"request", spec.dump()},
           {"version", "1"}}) {
    args.push_back(k);
    args.push_back(v);
  }
  redis_.command(args);  // retried through a Redis restart; the script queues an id once
  std::lock_guard<std::mutex> lock(mu_);
  // Its place among this front end's waiting jobs (other front ends' are not counted).
  s.position = 1;
  for (const auto& [other, x] : jobs_) s.position += x.snap.state == JobState::kQueued;
  order_.push_back(s.id);
  const std::string id = s.id;
  jobs_[id] = std::move(e);
  cv_.notify_all();
  return id;
}

bool RedisJobQueue::cancel(const std::string& id) {
  const RedisReply r = redis_.command({"EVAL", queue::kCancelScript, "3", queue::job_key(id), queue::kFinished,
                                       queue::kStats, queue::unix_text(now_unix()), std::to_string(options_.result_ttl_s), id});
  const int64_t v = r.as_int(-1);
  if (v == 1) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end()) {
      it->second.snap.state = JobState::kCancelled;
      it->second.snap.error = "cancelled while queued";
      it->second.snap.error_code = static_cast<int>(ErrorCode::kCancelled);
      ++it->second.snap.version;
      cv_.notify_all();
    }
  }
  return v == 1 || v == 2;
}

int RedisJobQueue::cancel_running() {
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, e] : jobs_) {
      if (e.submitted_here && e.snap.state == JobState::kRunning) {
        ids.push_back(id);
        e.snap.interrupted = true;
        ++e.snap.version;
      }
    }
    cv_.notify_all();
  }
  for (const std::string& id : ids) {
    redis_.pipeline({{"HSET", queue::job_key(id), "interrupt", "1"}, {"HINCRBY", queue::job_key(id), "version", "1"}});
  }
  return static_cast<int>(ids.size());
}

bool RedisJobQueue::refresh(RedisClient& redis, Entry& e) const {
  const std::string key = queue::job_key(e.snap.id);
  const RedisReply r = redis.command(hmget_args(e.snap.id));
  std::map<std::string, std::string> f = hmget_map(r);
  if (f.empty() || field(f, "state").empty()) return false;
  const int previews = static_cast<int>(to_int(field(f, "previews")));
  JobSnapshot next = e.snap;
  apply_fields(f, &next);
  if (previews != e.snap.previews) {
    const RedisReply p = redis.command({"HGET", key, "preview"});
    next.preview_png = p.str;
    next.previews = previews;
  }
  if (next.state == JobState::kDone) materialize(redis, e.snap.id, f, &next);
  e.remote_version = static_cast<uint64_t>(to_int(field(f, "version")));
  next.version = e.snap.version + 1;
  e.snap = std::move(next);
  return true;
}

void RedisJobQueue::materialize(RedisClient& redis, const std::string& id, const std::map<std::string, std::string>& f,
                                JobSnapshot* snap) const {
  std::lock_guard<std::mutex> lock(g_materialize_mu);
  const fs::path dir = hist_.images_dir();
  // Written before: this process or an earlier one (a PNG without its history
  // row is removed at start-up by History, so the first file marks a complete job).
  if (snap->images.empty() || fs::exists(dir / snap->images[0].file)) return;
  const json ims = json::parse(field(f, "images"), nullptr, false);
  HistoryEntry entry;
  entry.id = id;
  entry.created = snap->created;
  entry.model = snap->model;
  entry.prompt = snap->prompt;
  entry.params = snap->echo;
  // Last file first: the first one is the marker above.
  for (size_t k = snap->images.size(); k-- > 0;) {
    const JobImage& im = snap->images[k];
    std::string bytes;
    const std::string path = ims.is_array() && k < ims.size() ? ims[k].value("path", "") : "";
    if (!path.empty()) {
      bytes = read_file(path);
    } else {
      bytes = redis.command({"HGET", queue::job_key(id), "img:" + std::to_string(k + 1)}).str;
      DIFFUSE_CHECK(!bytes.empty(), ErrorCode::kIo, "job " + id + ": image " + std::to_string(k + 1) +
                                                        " is missing in Redis (expired?)");
    }
    write_file_atomically(dir / im.file, bytes);
  }
  for (const JobImage& im : snap->images) entry.images.push_back({im.file, im.seed, im.width, im.height, im.parameters});
  hist_.add(entry);
}

std::optional<JobSnapshot> RedisJobQueue::get(const std::string& id) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end()) return it->second.snap;
  }
  // Another front end's job, or one from before a restart: from Redis.
  Entry e;
  e.snap.id = id;
  if (!refresh(redis_, e)) return std::nullopt;
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = jobs_.emplace(id, std::move(e));
  if (inserted) order_.push_back(id);
  return it->second.snap;
}

std::vector<JobSnapshot> RedisJobQueue::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobSnapshot> running, queued, done;
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    auto f = jobs_.find(*it);
    if (f == jobs_.end()) continue;
    const JobSnapshot& s = f->second.snap;
    if (s.state == JobState::kRunning) running.push_back(s);
    else if (s.state == JobState::kQueued) queued.insert(queued.begin(), s);
    else if (done.size() < 64) done.push_back(s);
  }
  running.insert(running.end(), queued.begin(), queued.end());
  running.insert(running.end(), done.begin(), done.end());
  return running;
}

std::optional<JobSnapshot> RedisJobQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& id : order_) {
    auto f = jobs_.find(id);
    if (f != jobs_.end() && f->second.submitted_here && f->second.snap.state == JobState::kRunning) {
      return f->second.snap;
    }
  }
  return std::nullopt;
}

size_t RedisJobQueue::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [id, e] : jobs_) n += e.submitted_here && !is_finished(e.snap.state);
  return n;
}

std::optional<JobSnapshot> RedisJobQueue::wait_update(const std::string& id, uint64_t seen,
                                                      std::chrono::milliseconds timeout) const {
  if (!get(id)) return std::nullopt;
  std::unique_lock<std::mutex> lock(mu_);
  auto version = [&] {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? uint64_t{0} : it->second.snap.version;
  };
  cv_.wait_for(lock, timeout, [&] { return version() > seen || stopping_; });
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.snap;
}

JobSnapshot RedisJobQueue::wait_finished(const std::string& id, const std::function<bool()>& abandoned) {
  if (!get(id)) throw_error(ErrorCode::kNotFound, "job " + id + " not found");
  std::unique_lock<std::mutex> lock(mu_);
  auto snap = [&] {
    auto it = jobs_.find(id);
    return it == jobs_.end() ? JobSnapshot{} : it->second.snap;
  };
  while (!is_finished(snap().state)) {
    if (stopping_) {
      // The job goes on in Redis; this request cannot wait for it.
      JobSnapshot s = snap();
      s.state = JobState::kFailed;
      s.error = "the front end is stopping; job " + id + " goes on (GET /api/jobs/" + id + " on any front end)";
      s.error_code = static_cast<int>(ErrorCode::kCancelled);
      return s;
    }
    cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (abandoned && !is_finished(snap().state)) {
      lock.unlock();
      const bool gone = abandoned();
      if (gone) {
        try {
          cancel(id);
        } catch (const Error&) {
          // Redis away: the job runs on; nobody waits for it.
        }
      }
      lock.lock();
    }
  }
  return snap();
}

void RedisJobQueue::poll_loop() {
  auto next_sync = std::chrono::steady_clock::now();
  while (!stopping_) {
    try {
      std::vector<std::pair<std::string, uint64_t>> tracked;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [id, e] : jobs_) {
          if (!is_finished(e.snap.state)) tracked.emplace_back(id, e.remote_version);
        }
      }
      if (!tracked.empty()) {
        std::vector<std::vector<std::string>> cmds;
        for (const auto& t : tracked) cmds.push_back({"HGET", queue::job_key(t.first), "version"});
        const std::vector<RedisReply> versions = poll_redis_.pipeline(cmds);
        for (size_t i = 0; i < tracked.size(); ++i) {
          if (static_cast<uint64_t>(versions[i].as_int(0)) == tracked[i].second) continue;
          Entry e;
          {
            std::lock_guard<std::mutex> lock(mu_);
            e = jobs_[tracked[i].first];
          }
          if (!refresh(poll_redis_, e)) continue;
          std::lock_guard<std::mutex> lock(mu_);
          Entry& cur = jobs_[tracked[i].first];
          if (is_finished(cur.snap.state)) continue;  // finished meanwhile (a local cancel): it stays so
          e.snap.version = cur.snap.version + 1;
          e.submitted_here = cur.submitted_here;
          e.snap.interrupted = e.snap.interrupted || cur.snap.interrupted;
          cur = std::move(e);
          cv_.notify_all();
        }
      }
      if (std::chrono::steady_clock::now() >= next_sync) {
        sync_finished(poll_redis_);
        next_sync = std::chrono::steady_clock::now() + kSyncPeriod;
      }
      // Bounded memory: the oldest finished jobs are forgotten (Redis and the history keep them).
      std::lock_guard<std::mutex> lock(mu_);
      size_t finished = 0;
      for (const auto& [id, e] : jobs_) finished += is_finished(e.snap.state);
      for (auto o = order_.begin(); finished > kKeepFinished && o != order_.end();) {
        auto it = jobs_.find(*o);
        if (it != jobs_.end() && !is_finished(it->second.snap.state)) {
          ++o;  // still followed
          continue;
        }
        if (it != jobs_.end()) {
          jobs_.erase(it);
          --finished;
        }
        o = order_.erase(o);
      }
    } catch (const std::exception& e) {
      if (!stopping_) std::fprintf(stderr, "diffuse serve: queue: %s (retrying)\n", e.what());
    }
    std::this_thread::sleep_for(kPollPeriod);
  }
}

void RedisJobQueue::sync_finished(RedisClient& redis) {
  const double now = now_unix();
  redis.command({"ZREMRANGEBYSCORE", queue::kFinished, "-inf", queue::unix_text(now - options_.result_ttl_s)});
  // A little overlap: a job whose finish time was written by a worker with a slower clock.
  const RedisReply r =
      redis.command({"ZRANGEBYSCORE", queue::kFinished, queue::unix_text(synced_until_ - 30), "+inf", "WITHSCORES"});
  double newest = synced_until_;
  for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    const std::string id = r.elements[i].str;
    newest = std::max(newest, to_double(r.elements[i + 1].str));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = jobs_.find(id);
      if (it != jobs_.end() && is_finished(it->second.snap.state)) continue;
    }
    if (fs::exists(fs::path(hist_.images_dir()) / (id + "-1.png"))) continue;
    Entry e;
    e.snap.id = id;
    refresh(redis, e);  // materializes a done job into the history
  }
  synced_until_ = newest;
}

std::string RedisJobQueue::metrics_text() const {
  RedisClient& r = redis_;
  std::ostringstream out;
  auto help = [&](const char* name, const char* type, const char* text) {
    out << "# HELP " << name << " " << text << "\n# TYPE " << name << " " << type << "\n";
  };
  // Per model stream: entries never delivered (lag) and delivered but unacknowledged (pending).
  const RedisReply models = r.command({"SMEMBERS", queue::kModels});
  std::vector<std::tuple<std::string, int64_t, int64_t>> streams;
  int64_t depth = 0;
  for (const RedisReply& m : models.elements) {
    const RedisReply groups = r.command({"XINFO", "GROUPS", queue::stream_key(m.str)});
    for (const RedisReply& g : groups.elements) {
      std::map<std::string, const RedisReply*> kv;
      for (size_t i = 0; i + 1 < g.elements.size(); i += 2) kv[g.elements[i].str] = &g.elements[i + 1];
      if (!kv.count("name") || kv["name"]->str != queue::kGroup) continue;
      const int64_t lag = kv.count("lag") ? kv["lag"]->as_int(0) : 0;
      const int64_t pending = kv.count("pending") ? kv["pending"]->as_int(0) : 0;
      streams.emplace_back(m.str, lag, pending);
      depth += lag + pending;
    }
  }
  auto label = [](const std::string& v) {
    std::string o;
    for (char c : v) {
      if (c == '"' || c == '\\') o += '\\';
      if (c == '\n') {
        o += "\\n";
        continue;
      }
      o += c;
    }
    return o;
  };
  help("diffuse_queue_depth", "gauge", "Jobs queued or running (all model streams): lag plus pending entries.");
  out << "diffuse_queue_depth " << depth << "\n";
  help("diffuse_queue_lag", "gauge", "Stream entries no worker has read yet, per model stream (KEDA lagCount).");
  for (const auto& [m, lag, pending] : streams) out << "diffuse_queue_lag{model=\"" << label(m) << "\"} " << lag << "\n";
  help("diffuse_queue_pending", "gauge", "Entries read by a worker and not yet acknowledged (pendingEntriesCount).");
  for (const auto& [m, lag, pending] : streams) {
    out << "diffuse_queue_pending{model=\"" << label(m) << "\"} " << pending << "\n";
  }
  // Workers: live ones have a heartbeat key.
  const RedisReply names = r.command({"SMEMBERS", queue::kWorkers});
  std::vector<std::string> keys = {"MGET"};
  for (const RedisReply& n : names.elements) keys.push_back(queue::worker_key(n.str));
  int running = 0;
  std::ostringstream up, ips, load, done;
  if (keys.size() > 1) {
    const RedisReply beats = r.command(keys);
    for (size_t i = 0; i < beats.elements.size(); ++i) {
      const std::string name = label(names.elements[i].str);
      const json b = json::parse(beats.elements[i].str, nullptr, false);
      const bool alive = !beats.elements[i].nil() && b.is_object();
      up << "diffuse_worker_up{worker=\"" << name << "\"} " << (alive ? 1 : 0) << "\n";
      if (!alive) continue;
      const int busy = b.value("busy", 0);
      running += busy;
      ips << "diffuse_worker_it_per_s{worker=\"" << name << "\",device=\"" << label(b.value("device", "")) << "\"} "
          << b.value("it_per_s", 0.0) << "\n";
      load << "diffuse_worker_load{worker=\"" << name << "\"} " << busy << "\n";
      done << "diffuse_worker_jobs_done{worker=\"" << name << "\"} " << b.value("jobs_done", 0) << "\n";
    }
  }
  help("diffuse_worker_up", "gauge", "1 while the worker's heartbeat is fresh.");
  out << up.str();
  help("diffuse_worker_it_per_s", "gauge", "Denoising steps per second of the worker's last job.");
  out << ips.str();
  help("diffuse_worker_load", "gauge", "Jobs the worker is running now (0 or 1).");
  out << load.str();
  help("diffuse_worker_jobs_done", "counter", "Jobs the worker finished since it started.");
  out << done.str();
  // Jobs by state: queued and running now, finished ones counted since the queue was created.
  const RedisReply stats = r.command({"HGETALL", queue::kStats});
  std::map<std::string, int64_t> st;
  for (size_t i = 0; i + 1 < stats.elements.size(); i += 2) st[stats.elements[i].str] = stats.elements[i + 1].as_int(0);
  help("diffuse_jobs", "gauge", "Jobs by state (done, failed, cancelled: totals since the queue was created).");
  out << "diffuse_jobs{state=\"queued\"} " << std::max<int64_t>(0, depth - running) << "\n";
  out << "diffuse_jobs{state=\"running\"} " << running << "\n";
  for (const char* s : {"done", "failed", "cancelled"}) out << "diffuse_jobs{state=\"" << s << "\"} " << st[s] << "\n";
  help("diffuse_jobs_submitted_total", "counter", "Jobs put on the queue.");
  out << "diffuse_jobs_submitted_total " << st["submitted"] << "\n";
  help("diffuse_job_duplicate_runs_total", "counter",
       "Runs that finished a job another worker had already finished (after a reclaim); not shown to users.");
  out << "diffuse_job_duplicate_runs_total " << st["duplicates"] << "\n";
  help("diffuse_jobs_reclaimed_total", "counter", "Jobs claimed again from a worker that went silent (XAUTOCLAIM).");
  out << "diffuse_jobs_reclaimed_total " << st["reclaimed"] << "\n";
  return out.str();
}

std::unique_ptr<JobQueue> make_job_queue(ModelRegistry& models, History& history,
                                         std::shared_ptr<LivePreviewer> previews, const QueueOptions& queue) {
  if (queue.url.empty()) return std::make_unique<JobQueue>(models, history, std::move(previews));
  if (!redis_available()) {
    throw_error(ErrorCode::kUnsupported,
                "--queue: this diffuse was built without hiredis; install libhiredis-dev (scripts/install_deps.sh) "
                "and rebuild");
  }
  return std::make_unique<RedisJobQueue>(models, history, queue);
}

}  // namespace diffuse::server
