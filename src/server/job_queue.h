// A FIFO of generation jobs run one at a time by a worker thread. Queued and
// running jobs can be cancelled; a running job stops at the next step
// boundary. Every state change bumps a version number that SSE streams and
// long-polling API handlers wait on.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/live_preview.h"
#include "pipeline/pipeline.h"
#include "server/history.h"
#include "server/model_registry.h"

namespace diffuse::server {

enum class JobState { kQueued, kRunning, kDone, kFailed, kCancelled };
const char* job_state_name(JobState s);
// Seconds since the Unix epoch: the clock every job's times are read from.
double now_unix();

struct JobRequest {
  std::string model;  // registry id
  GenerationParams params;
  nlohmann::json echo;  // the request as received (for history and A1111 "parameters")
  // The prompt as the client wrote it, <lora:...> tags included, when
  // params.prompt is that prompt without them: the queue, the history and the
  // images' infotext show this one (A1111 keeps the tags in the infotext).
  std::string written_prompt;
  std::vector<std::string> warnings;  // notes of the request's own (tags not applied), before the pipeline's
};

struct JobImage {
  std::string file;  // in the history images dir
  int64_t seed = 0;
  int width = 0, height = 0;
  std::string parameters;
};

struct JobSnapshot {
  std::string id;
  JobState state = JobState::kQueued;
  int position = 0;  // 1-based place in the queue while queued, 0 otherwise
  std::string model;
  std::string prompt;
  std::string kind = "txt2img";  // "img2img" for an edit (A1111's state.job)
  // What a running job is doing now (docs/server.md "Phases"): "queued",
  // "loading" (the model), "encoding" (prompt, init image), "denoising",
  // "decoding" (VAE), "saving", then "done" / "failed" / "cancelled".
  std::string phase = "queued";
  // Each phase entered, in order, with the seconds since the job started running.
  std::vector<std::pair<std::string, double>> phase_log;
  int step = 0, total_steps = 0;
  double it_per_s = 0, eta_s = 0, elapsed_s = 0;
  std::string error;
  int error_code = 0;  // ErrorCode of a failure, as int
  std::vector<JobImage> images;
  std::string preview_png;  // latest preview (PNG bytes), may be empty
  int preview_step = 0;     // the step preview_png shows (previews skip steps: docs/previews.md)
  int previews = 0;         // previews made so far (a new one: a new preview_png)
  uint64_t version = 0;
  double created = 0;
  nlohmann::json echo;
  int64_t seed = 0;
  bool interrupted = false;  // /sdapi/v1/interrupt asked this job to stop
  int stopped_at_step = 0;   // a done job that was interrupted: the last step taken
  std::vector<std::string> warnings;  // GenerationResult::warnings of a done job
};

// The phase as people read it: "Queued (position 2)", "Loading model",
// "Encoding prompt", "Denoising step 3/20", "Decoding", "Saving", "Done",
// "Failed", "Cancelled" (the SSE stream's `label`, A1111's state.job, the CLI bar).
std::string job_phase_label(const JobSnapshot& j);

class JobQueue {
 public:
  // `previews` makes the running job's live previews (pipeline/live_preview.h);
  // nullptr: the cheap approximation at every step.
  JobQueue(ModelRegistry& models, History& history, std::shared_ptr<LivePreviewer> previews = nullptr);
  virtual ~JobQueue();  // cancels everything and joins the worker

  // The methods are virtual: `diffuse serve --queue` replaces this local queue
  // by RedisJobQueue (server/redis_job_queue.h), which runs jobs on remote
  // workers through Redis Streams and answers the same calls.
  virtual std::string submit(JobRequest request);  // returns the job id
  virtual bool cancel(const std::string& id);      // false when unknown or already finished
  // A1111 /interrupt: the running job stops at its next step; one whose
  // params.decode_when_stopped is set then finishes kDone with the partial
  // images (stopped_at_step > 0), others end kCancelled. Returns the number of jobs stopped.
  virtual int cancel_running();
  virtual std::optional<JobSnapshot> get(const std::string& id) const;
  virtual std::vector<JobSnapshot> list() const;   // queued and running, in order, then recent finished
  virtual std::optional<JobSnapshot> running() const;
  // Blocks until the job's version exceeds `seen` or the timeout passes; returns the latest snapshot.
  virtual std::optional<JobSnapshot> wait_update(const std::string& id, uint64_t seen,
                                                 std::chrono::milliseconds timeout) const;
  // Blocks until the job finished (done, failed or cancelled). `abandoned`,
  // when given, is polled about every 250 ms: once it returns true (the HTTP
  // client went away) the job is cancelled, so nobody waits for its images.
  virtual JobSnapshot wait_finished(const std::string& id, const std::function<bool()>& abandoned = {});
  virtual size_t pending() const;
  // GET /metrics: Prometheus text exposition (queue depth, jobs by state, workers).
  virtual std::string metrics_text() const;
  // Server shutdown: refuses new jobs, cancels the queued ones and the running
  // one (at its next step) and wakes every waiter. Idempotent; the destructor calls it.
  virtual void shutdown();
  virtual bool stopping() const;

 protected:
  struct NoWorker {};
  // For a subclass that runs jobs elsewhere: no local worker thread.
  JobQueue(ModelRegistry& models, History& history, NoWorker);

 private:
  struct Job {
    JobSnapshot snap;
    JobRequest request;
    bool cancel_requested = false;
    bool interrupt_requested = false;
  };
  void worker();
  void run_job(const std::shared_ptr<Job>& job);
  void touch(Job& job);  // bump version + notify; mu_ held
  void renumber();       // queue positions; mu_ held

  ModelRegistry& models_;
  History& history_;
  std::shared_ptr<LivePreviewer> previews_;  // before thread_: the worker uses it
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::string> finished_order_;  // bounded memory of finished jobs
  std::shared_ptr<Job> current_;
  bool stopping_ = false;
  uint64_t counter_ = 0;
  std::thread thread_;
};

}  // namespace diffuse::server
