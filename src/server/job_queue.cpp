#include "server/job_queue.h"

#include <filesystem>
#include <random>

#include "io/png.h"
#include "text/lora_tags.h"

namespace fs = std::filesystem;

namespace diffuse::server {
namespace {

constexpr size_t kKeepFinished = 256;

std::string new_job_id(uint64_t counter) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08llx%04llx", static_cast<unsigned long long>(rng() & 0xffffffffULL),
                static_cast<unsigned long long>(counter & 0xffff));
  return buf;
}

}  // namespace

double now_unix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kDone: return "done";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "?";
}

std::string job_phase_label(const JobSnapshot& j) {
  switch (j.state) {
    case JobState::kQueued:
      return j.position > 0 ? "Queued (position " + std::to_string(j.position) + ")" : "Queued";
    case JobState::kDone: return "Done";
    case JobState::kFailed: return "Failed";
    case JobState::kCancelled: return "Cancelled";
    case JobState::kRunning: break;
  }
  if (j.phase == "loading") return "Loading model";
  if (j.phase == "encoding") return j.kind == "img2img" ? "Encoding prompt and image" : "Encoding prompt";
  if (j.phase == "decoding") return "Decoding";
  if (j.phase == "saving") return "Saving";
  // "denoising", or a queue that tells only the steps (server/redis_job_queue.h).
  if (j.phase == "denoising" || j.step > 0)
    return "Denoising step " + std::to_string(j.step) + "/" + std::to_string(j.total_steps);
  return "Starting";
}

JobQueue::JobQueue(ModelRegistry& models, History& history, std::shared_ptr<LivePreviewer> previews)
    : models_(models),
      history_(history),
      previews_(previews ? std::move(previews) : std::make_shared<LivePreviewer>()),
      thread_([this] { worker(); }) {}

JobQueue::JobQueue(ModelRegistry& models, History& history, NoWorker)
    : models_(models), history_(history), previews_(std::make_shared<LivePreviewer>()) {}

std::string JobQueue::metrics_text() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP diffuse_queue_depth Jobs waiting for a worker.\n# TYPE diffuse_queue_depth gauge\n";
  out += "diffuse_queue_depth " + std::to_string(queue_.size()) + "\n";
  out += "# HELP diffuse_jobs Jobs this server knows, by state.\n# TYPE diffuse_jobs gauge\n";
  std::map<std::string, int> by_state;
  for (const char* st : {"queued", "running", "done", "failed", "cancelled"}) by_state[st] = 0;
  for (const auto& [id, job] : jobs_) ++by_state[job_state_name(job->snap.state)];
  for (const auto& [st, n] : by_state) out += "diffuse_jobs{state=\"" + st + "\"} " + std::to_string(n) + "\n";
  return out;
}

JobQueue::~JobQueue() {
  shutdown();
  if (thread_.joinable()) thread_.join();
}

void JobQueue::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& j : queue_) {
      j->snap.state = JobState::kCancelled;
      j->snap.position = 0;
      j->snap.error = "the server is shutting down";
      j->snap.error_code = static_cast<int>(ErrorCode::kCancelled);
      finished_order_.push_back(j->snap.id);
      touch(*j);
    }
    queue_.clear();
    if (current_) current_->cancel_requested = true;
  }
  cv_.notify_all();
}

bool JobQueue::stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void JobQueue::touch(Job& job) {
  ++job.snap.version;
  cv_.notify_all();
}

void JobQueue::renumber() {
  int pos = 1;
  for (auto& j : queue_) {
    if (j->snap.position != pos) {
      j->snap.position = pos;
      touch(*j);
    }
    ++pos;
  }
}

std::string JobQueue::submit(JobRequest request) {
  request.params.validate();
  auto job = std::make_shared<Job>();
  std::lock_guard<std::mutex> lock(mu_);
  DIFFUSE_CHECK(!stopping_, ErrorCode::kCancelled, "the server is shutting down");
  job->snap.id = new_job_id(++counter_);
  job->snap.model = request.model;
  job->snap.prompt = !request.written_prompt.empty() ? request.written_prompt
                     : request.params.prompts.empty()  ? request.params.prompt
                                                       : request.params.prompts[0];
  job->snap.created = now_unix();
  job->snap.echo = request.echo;
  if (request.params.edit.active()) job->snap.kind = "img2img";
  job->snap.seed = request.params.seed;
  job->request = std::move(request);
  jobs_[job->snap.id] = job;
  queue_.push_back(job);
  renumber();
  touch(*job);
  return job->snap.id;
}

bool JobQueue::cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  Job& job = *it->second;
  if (job.snap.state == JobState::kQueued) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), it->second), queue_.end());
    job.snap.state = JobState::kCancelled;
    job.snap.position = 0;
    finished_order_.push_back(id);
    renumber();
    touch(job);
    return true;
  }
  if (job.snap.state == JobState::kRunning) {
    job.cancel_requested = true;
    return true;
  }
  return false;
}

int JobQueue::cancel_running() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!current_) return 0;
  current_->interrupt_requested = true;
  current_->snap.interrupted = true;
  touch(*current_);
  return 1;
}

std::optional<JobSnapshot> JobQueue::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second->snap;
}

std::vector<JobSnapshot> JobQueue::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobSnapshot> out;
  if (current_) out.push_back(current_->snap);
  for (const auto& j : queue_) out.push_back(j->snap);
  for (auto it = finished_order_.rbegin(); it != finished_order_.rend() && out.size() < 64; ++it) {
    auto f = jobs_.find(*it);
    if (f != jobs_.end()) out.push_back(f->second->snap);
  }
  return out;
}

std::optional<JobSnapshot> JobQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!current_) return std::nullopt;
  return current_->snap;
}

size_t JobQueue::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size() + (current_ ? 1 : 0);
}

std::optional<JobSnapshot> JobQueue::wait_update(const std::string& id, uint64_t seen,
                                                 std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  std::shared_ptr<Job> job = it->second;
  cv_.wait_for(lock, timeout, [&] { return job->snap.version > seen || stopping_; });
  return job->snap;
}

JobSnapshot JobQueue::wait_finished(const std::string& id, const std::function<bool()>& abandoned) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw_error(ErrorCode::kNotFound, "job " + id + " not found");
  std::shared_ptr<Job> job = it->second;
  auto finished = [&] {
    JobState s = job->snap.state;
    return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled;
  };
  // The running job always finishes (cancelled at its next step after
  // shutdown()), and shutdown() marks queued jobs cancelled, so this ends.
  while (!cv_.wait_for(lock, std::chrono::milliseconds(250), finished)) {
    if (abandoned) {
      lock.unlock();
      const bool gone = abandoned();
      if (gone) cancel(id);
      lock.lock();
    }
  }
  return job->snap;
}

void JobQueue::worker() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      current_ = job;
      job->snap.state = JobState::kRunning;
      job->snap.phase = "loading";
      job->snap.phase_log = {{"loading", 0.0}};
      job->snap.position = 0;
      renumber();
      touch(*job);
    }
    run_job(job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      current_.reset();
      finished_order_.push_back(job->snap.id);
      while (finished_order_.size() > kKeepFinished) {
        jobs_.erase(finished_order_.front());
        finished_order_.pop_front();
      }
      touch(*job);
    }
  }
}

void JobQueue::run_job(const std::shared_ptr<Job>& job) {
  const auto t0 = std::chrono::steady_clock::now();
  // mu_ held: a new phase, logged with its start time.
  auto enter = [&](const char* phase) {
    if (job->snap.phase == phase) return;
    job->snap.phase = phase;
    job->snap.phase_log.emplace_back(phase, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  try {
    std::shared_ptr<Pipeline> pipe = models_.acquire(job->request.model);
    const Family family = pipe->info().family;
    const std::vector<float> preview_factors = pipe->info().preview_factors;
    auto set_phase = [&](const char* phase) {
      std::lock_guard<std::mutex> lock(mu_);
      enter(phase);
      touch(*job);
    };
    set_phase("encoding");
    // Live previews (TAESD or the cheap approximation), at the steps the
    // previewer's period and time ceiling allow; the session starts at the
    // first step, where the latents' device is known.
    std::optional<LivePreviewer::Session> previews;
    GenerationResult r = pipe->generate(job->request.params, [&](const StepProgress& s) {
      if (!previews) previews = previews_->start(family, s.latents.device(), preview_factors);
      std::vector<uint8_t> png;
      if (previews->due(s)) {
        const LivePreview p = previews->make(s, 0);
        png = encode_png(p.width, p.height, p.rgb.data(), {});
      }
      std::lock_guard<std::mutex> lock(mu_);
      enter("denoising");
      job->snap.step = s.step;
      job->snap.total_steps = s.total_steps;
      job->snap.elapsed_s = s.elapsed_s;
      job->snap.it_per_s = s.elapsed_s > 0 ? s.step / s.elapsed_s : 0;
      job->snap.eta_s = job->snap.it_per_s > 0 ? (s.total_steps - s.step) / job->snap.it_per_s : 0;
      if (!png.empty()) {
        job->snap.preview_png.assign(png.begin(), png.end());
        job->snap.preview_step = s.step;
        ++job->snap.previews;
      }
      touch(*job);
      // A cancel (DELETE, hang-up, shutdown) keeps nothing; an interrupt
      // stops here and, for jobs that ask (A1111), keeps the partial images.
      if (job->cancel_requested) {
        throw_error(ErrorCode::kCancelled, "generation cancelled after step " + std::to_string(s.step));
      }
      // After the last step (or an interrupt) the VAE decodes: say so (the
      // phase log keeps the last step's "denoising" before it).
      if (s.step >= s.total_steps || job->interrupt_requested) {
        enter("decoding");
        touch(*job);
      }
      return job->interrupt_requested;
    });
    set_phase("saving");
    // Write the PNGs (atomically), then commit the history row.
    HistoryEntry entry;
    entry.id = job->snap.id;
    entry.created = job->snap.created;
    entry.model = job->request.model;
    entry.prompt = job->snap.prompt;
    entry.params = job->snap.echo;
    std::vector<JobImage> images;
    const JobRequest& req = job->request;
    for (size_t i = 0; i < r.images.size(); ++i) {
      const Image& im = r.images[i];
      // The prompt as written, tags included (A1111's infotext keeps them).
      const std::string parameters = req.written_prompt.empty()
                                         ? im.parameters
                                         : infotext_with_prompt(im.parameters, req.params.prompt, req.written_prompt);
      std::string file = job->snap.id + "-" + std::to_string(i + 1) + ".png";
      write_png((fs::path(history_.images_dir()) / file).string(), im.width, im.height, im.rgb.data(),
                {{"parameters", parameters}});
      images.push_back({file, im.seed, im.width, im.height, parameters});
      entry.images.push_back({file, im.seed, im.width, im.height, parameters});
    }
    history_.add(entry);
    std::lock_guard<std::mutex> lock(mu_);
    job->snap.images = std::move(images);
    job->snap.seed = r.seed;
    job->snap.stopped_at_step = r.stopped_at_step;
    job->snap.warnings = req.warnings;
    job->snap.warnings.insert(job->snap.warnings.end(), r.warnings.begin(), r.warnings.end());
    job->snap.state = JobState::kDone;
    enter("done");
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(mu_);
    job->snap.state = e.code() == ErrorCode::kCancelled ? JobState::kCancelled : JobState::kFailed;
    enter(job_state_name(job->snap.state));
    job->snap.error = e.what();
    job->snap.error_code = static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    job->snap.state = JobState::kFailed;
    enter("failed");
    job->snap.error = e.what();
    job->snap.error_code = static_cast<int>(ErrorCode::kRuntime);
  }
  std::lock_guard<std::mutex> lock(mu_);
  job->snap.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace diffuse::server
