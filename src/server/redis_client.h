// A small synchronous Redis client on hiredis (the C library Debian ships as
// libhiredis-dev; 0.14 in Debian 12): a `redis://` URL with AUTH (password or
// ACL user) and a database, commands as argument vectors (binary safe), RESP
// replies as a C++ value, and reconnection with exponential backoff.
//
// Errors are Error(kIo) for a connection that stays down past
// Options::retry_for, Error(kRuntime) for a Redis error reply ("-ERR ..."),
// both naming the command. A client is safe to share between threads (one
// command at a time); the queue gives each thread its own. Built without
// hiredis, connecting throws kUnsupported (queue_* says how to get it).
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct redisContext;

namespace diffuse::server {

// redis://[[user]:password@]host[:port][/db]  (port 6379, db 0 by default)
struct RedisUrl {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string user;      // ACL user ("" = the default user)
  std::string password;  // "" = no AUTH
  // Throws Error(kInvalidArgument) naming the bad part.
  static RedisUrl parse(const std::string& url);
  std::string redacted() const;  // the URL with the password replaced by "***" (for logs)
};

// One RESP reply.
struct RedisReply {
  enum class Type { kNil, kString, kStatus, kError, kInteger, kArray };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  int64_t integer = 0;
  std::vector<RedisReply> elements;  // kArray

  bool nil() const { return type == Type::kNil; }
  // A bulk / status string, or an integer's digits; "" for nil.
  std::string text() const;
  // An integer reply, or a string holding one; `fallback` otherwise.
  int64_t as_int(int64_t fallback = 0) const;
};

// Were hiredis and the queue compiled in (pkg-config hiredis at configure time)?
bool redis_available();

class RedisClient {
 public:
  struct Options {
    std::chrono::milliseconds connect_timeout{2000};
    // Socket read/write timeout of a command (a blocking command's own timeout
    // must be shorter).
    std::chrono::milliseconds command_timeout{10000};
    // How long command() keeps reconnecting (backoff 50 ms doubling to 2 s)
    // before it throws kIo. A Redis restart with AOF takes a second or two.
    std::chrono::milliseconds retry_for{30000};
  };
  explicit RedisClient(RedisUrl url);
  RedisClient(RedisUrl url, Options options);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Runs one command, reconnecting as needed. Only idempotent commands (or
  // scripts that check before they write) may be given: a command whose
  // reply was lost with the connection is sent again.
  RedisReply command(const std::vector<std::string>& args);
  // Several commands in one round trip (pipelining); the replies in order.
  std::vector<RedisReply> pipeline(const std::vector<std::vector<std::string>>& commands);
  // One attempt, no retry, no throw: nullopt when the connection failed.
  std::optional<RedisReply> try_command(const std::vector<std::string>& args) noexcept;
  // Makes command() give up at once (kIo) from now on: a stopping process.
  void abort();
  const RedisUrl& url() const { return url_; }

 private:
  void connect_locked();  // throws kIo
  void close_locked();
  std::optional<std::vector<RedisReply>> send_locked(const std::vector<std::vector<std::string>>& commands,
                                                     std::string* why);

  RedisUrl url_;
  Options options_;
  std::mutex mu_;
  redisContext* ctx_ = nullptr;
  std::atomic<bool> aborted_{false};
};

}  // namespace diffuse::server
