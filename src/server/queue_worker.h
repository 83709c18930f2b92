// `diffuse worker`: runs the jobs of a Redis job queue (docs/deploy.md, "How
// the queue works"). It reads the streams of the models it can serve through
// the consumer group "workers" (models it has loaded first: affinity), claims
// entries whose worker went silent (XAUTOCLAIM past the visibility timeout),
// publishes progress and previews into the job's hash, stores the PNGs with
// their infotext, and finishes each job exactly once (a Lua script: the first
// finisher wins) before it acknowledges the entry. A heartbeat key with a TTL
// says what it holds, its it/s and its load.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "pipeline/live_preview.h"
#include "server/model_registry.h"

namespace diffuse::server {

struct WorkerOptions {
  std::string url;   // redis://[user:password@]host:port/db
  std::string name;  // consumer name; "" = hostname-pid
  std::string device_name = "cpu";  // for the heartbeat and /metrics
  ModelRegistry::Options models;
  std::vector<std::string> upscaler_dirs;  // hires-fix upscaler models
  PreviewOptions preview;
  // An entry read but not acknowledged for this long is claimed by another
  // worker. The worker holding a job refreshes it (XCLAIM ... JUSTID) every
  // third of this, so only a dead or frozen worker loses its job.
  int visibility_timeout_s = 60;
  int heartbeat_s = 2;        // heartbeat period; the key lives 3 periods
  int max_attempts = 3;       // a job whose workers died this many times fails (a poison job)
  int result_ttl_s = 86400;   // finished jobs stay in Redis this long
  std::string results_dir;    // "": PNGs in Redis; else this shared folder
  int max_jobs = 0;           // stop after this many jobs (0: never; benchmarks)
  void validate() const;      // throws kInvalidArgument
};

class QueueWorker {
 public:
  explicit QueueWorker(WorkerOptions options);  // connects; throws kIo / kInvalidArgument
  ~QueueWorker();
  QueueWorker(const QueueWorker&) = delete;
  QueueWorker& operator=(const QueueWorker&) = delete;

  // Serves until `stop()` returns true (polled between jobs and while idle):
  // a running job is finished first. Redis outages are waited out.
  void run(const std::function<bool()>& stop);
  const std::string& name() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse::server
