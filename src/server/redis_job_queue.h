// `diffuse serve --queue redis://...`: the server as a front end. Jobs are put
// on Redis Streams (server/queue_keys.h) instead of the local pipeline; remote
// `diffuse worker`s run them. A poller turns the workers' updates in Redis
// into the same snapshots the local JobQueue makes, so every API (SSE,
// /sdapi/v1/progress, synchronous txt2img, OpenAI) works unchanged. Finished
// jobs' PNGs are copied into this server's history (images dir + SQLite row),
// whichever front end submitted them: results can be fetched by job id from
// any front end, and one that restarts finds the jobs finished meanwhile.
#pragma once
#include <atomic>
#include <set>

#include "server/job_queue.h"
#include "server/redis_client.h"

namespace diffuse::server {

struct QueueOptions {
  std::string url;                 // redis://[user:password@]host:port/db
  int result_ttl_s = 86400;        // finished jobs (and their PNGs) stay in Redis this long
  // (A worker's --results-dir puts a job's PNGs in a shared folder instead; the
  // job's hash then names their paths, which the front end reads.)
};

class RedisJobQueue : public JobQueue {
 public:
  // Connects (throws kIo naming the URL when Redis cannot be reached).
  RedisJobQueue(ModelRegistry& models, History& history, QueueOptions options);
  ~RedisJobQueue() override;

  std::string submit(JobRequest request) override;
  bool cancel(const std::string& id) override;
  int cancel_running() override;
  std::optional<JobSnapshot> get(const std::string& id) const override;
  std::vector<JobSnapshot> list() const override;
  std::optional<JobSnapshot> running() const override;
  std::optional<JobSnapshot> wait_update(const std::string& id, uint64_t seen,
                                         std::chrono::milliseconds timeout) const override;
  JobSnapshot wait_finished(const std::string& id, const std::function<bool()>& abandoned = {}) override;
  size_t pending() const override;
  std::string metrics_text() const override;
  // Stops the poller and wakes every waiter. Jobs are NOT cancelled: they
  // live in Redis and finish on the workers.
  void shutdown() override;
  bool stopping() const override;

 private:
  struct Entry {
    JobSnapshot snap;
    uint64_t remote_version = 0;
    bool submitted_here = false;
  };
  // Reads the job's hash into `e` (materializing a finished job's PNGs into
  // the history first); false when Redis has no such job. `redis` is the
  // caller's client.
  bool refresh(RedisClient& redis, Entry& e) const;
  void poll_loop();
  void sync_finished(RedisClient& redis);
  void materialize(RedisClient& redis, const std::string& id,
                   const std::map<std::string, std::string>& fields, JobSnapshot* snap) const;

  QueueOptions options_;
  History& hist_;
  mutable RedisClient redis_;       // HTTP handler threads (serialized by its mutex)
  mutable RedisClient poll_redis_;  // the poller
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable std::map<std::string, Entry> jobs_;
  mutable std::deque<std::string> order_;  // submission / discovery order, for list()
  std::atomic<bool> stopping_{false};
  double synced_until_ = 0;  // kFinished scores below this are in the history
  std::thread poller_;
};

// The JobQueue of a server: local, or RedisJobQueue when options.url is set.
std::unique_ptr<JobQueue> make_job_queue(ModelRegistry& models, History& history,
                                         std::shared_ptr<LivePreviewer> previews, const QueueOptions& queue);

}  // namespace diffuse::server
