// The Redis names and scripts the queue's front ends and workers share
// (docs/deploy.md "How the queue works" explains them; KEDA scales on the
// streams and the group named here).
#pragma once
#include <cstdio>
#include <string>

namespace diffuse::server::queue {

// A time (server::now_unix) as the job hashes store it: seconds, to the millisecond.
inline std::string unix_text(double t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", t);
  return buf;
}

// One stream per model: "diffuse:jobs:<model id>". Each entry is {id: job id}.
inline std::string stream_key(const std::string& model) { return "diffuse:jobs:" + model; }
inline constexpr const char* kGroup = "workers";           // the consumer group on every job stream
inline constexpr const char* kModels = "diffuse:models";   // set: the models that have a stream
// Hash of one job: its request, state, progress, preview and results.
inline std::string job_key(const std::string& id) { return "diffuse:job:" + id; }
inline constexpr const char* kFinished = "diffuse:finished";  // zset: job id -> unix time it finished
inline constexpr const char* kStats = "diffuse:stats";        // hash: submitted, done, failed, cancelled, ...
inline constexpr const char* kWorkers = "diffuse:workers";    // set: worker names ever seen
// Worker heartbeat (JSON), with a TTL: gone when the worker is.
inline std::string worker_key(const std::string& name) { return "diffuse:worker:" + name; }
inline constexpr int kStreamMaxLen = 100000;  // XADD MAXLEN ~: acknowledged entries are trimmed past this

// KEYS: job hash, stream, models set, stats. ARGV: model, then field/value pairs.
// Idempotent: a job id already present is not queued twice (a retried submit).
inline constexpr const char* kSubmitScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.pcall('XGROUP', 'CREATE', KEYS[2], 'workers', '0', 'MKSTREAM')
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'id', id)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'submitted', 1)
return 1
)lua";

// A worker starts a job. KEYS: job hash. ARGV: worker name, unix time.
// Returns -1: no such job (expired), 0: already finished (acknowledge and
// skip), 1: cancelled while queued is handled by the front end, so here
// n >= 1: the attempt number.
inline constexpr const char* kStartScript = R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], 'finished') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'phase', 'loading', 'worker', ARGV[1], 'started', ARGV[2], 'step', '0')
redis.call('HINCRBY', KEYS[1], 'version', 1)
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
)lua";

// Finishes a job exactly once. KEYS: job hash, stream, finished zset, stats.
// ARGV: stream entry id, worker, state, unix time, result TTL seconds, job id,
// then field/value pairs. The first caller wins (HSETNX finished); a later
// one (a job run twice after XAUTOCLAIM) only acknowledges. Returns 1 / 0.
inline constexpr const char* kFinishScript = R"lua(
if redis.call('HSETNX', KEYS[1], 'finished', ARGV[2]) == 0 then
  if ARGV[1] ~= '' then redis.call('XACK', KEYS[2], 'workers', ARGV[1]) end
  redis.call('HINCRBY', KEYS[4], 'duplicates', 1)
  return 0
end
local fields = {'state', ARGV[3], 'finished_at', ARGV[4]}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
if ARGV[1] ~= '' then redis.call('XACK', KEYS[2], 'workers', ARGV[1]) end
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
return 1
)lua";

// The front end cancels. KEYS: job hash, finished zset, stats. ARGV: unix
// time, result TTL, job id. Returns -1 unknown, 0 already finished,
// 1 cancelled while queued (the worker that reads it skips it), 2 running (the
// worker stops at its next step).
inline constexpr const char* kCancelScript = R"lua(
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return -1 end
if redis.call('HEXISTS', KEYS[1], 'finished') == 1 then return 0 end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'finished', 'front-end', 'state', 'cancelled', 'finished_at', ARGV[1],
             'error', 'cancelled while queued', 'error_code', '4')
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
  redis.call('HINCRBY', KEYS[3], 'cancelled', 1)
  return 1
end
redis.call('HSET', KEYS[1], 'cancel', '1')
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 2
)lua";

}  // namespace diffuse::server::queue
