#include "server/redis_client.h"

#include <charconv>
#include <cstdio>
#include <thread>

#include "core/error.h"

#if DIFFUSE_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

namespace diffuse::server {

RedisUrl RedisUrl::parse(const std::string& url) {
  const std::string scheme = "redis://";
  DIFFUSE_CHECK_ARG(url.rfind(scheme, 0) == 0,
                    "--queue must be a redis:// URL (redis://[user:password@]host:port/db), got '" + url + "'");
  RedisUrl u;
  std::string rest = url.substr(scheme.size());
  const size_t at = rest.rfind('@');
  if (at != std::string::npos) {
    const std::string cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = cred.find(':');
    if (colon == std::string::npos) {
      u.password = cred;  // redis://password@host (no user)
    } else {
      u.user = cred.substr(0, colon);
      u.password = cred.substr(colon + 1);
    }
  }
  const size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) {
    const std::string db = rest.substr(slash + 1);
    if (!db.empty()) {
      int v = -1;
      auto [p, ec] = std::from_chars(db.data(), db.data() + db.size(), v);
      DIFFUSE_CHECK_ARG(ec == std::errc() && p == db.data() + db.size() && v >= 0 && v < 65536,
                        "the database of a redis:// URL must be a number, got '" + db + "'");
      u.db = v;
    }
  }
  const size_t colon = hostport.rfind(':');
  if (colon != std::string::npos && hostport.find(']') == std::string::npos) {
    const std::string port = hostport.substr(colon + 1);
    int v = -1;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    DIFFUSE_CHECK_ARG(ec == std::errc() && p == port.data() + port.size() && v > 0 && v < 65536,
                      "the port of a redis:// URL must be 1-65535, got '" + port + "'");
    u.port = v;
    hostport = hostport.substr(0, colon);
  }
  DIFFUSE_CHECK_ARG(!hostport.empty(), "a redis:// URL needs a host, got '" + url + "'");
  u.host = hostport;
  return u;
}

std::string RedisUrl::redacted() const {
  std::string cred;
  if (!user.empty() || !password.empty()) cred = user + (password.empty() ? "" : ":***") + "@";
  return "redis://" + cred + host + ":" + std::to_string(port) + "/" + std::to_string(db);
}

std::string RedisReply::text() const {
  if (type == Type::kInteger) return std::to_string(integer);
  return str;
}

int64_t RedisReply::as_int(int64_t fallback) const {
  if (type == Type::kInteger) return integer;
  if (type != Type::kString && type != Type::kStatus) return fallback;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(str.data(), str.data() + str.size(), v);
  return ec == std::errc() && p == str.data() + str.size() ? v : fallback;
}

RedisClient::RedisClient(RedisUrl url) : RedisClient(std::move(url), Options{}) {}
RedisClient::RedisClient(RedisUrl url, Options options) : url_(std::move(url)), options_(options) {}

RedisClient::~RedisClient() {
  std::lock_guard<std::mutex> lock(mu_);
  close_locked();
}

void RedisClient::abort() { aborted_ = true; }

#if DIFFUSE_HAVE_HIREDIS

bool redis_available() { return true; }

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<long>(ms.count() / 1000);
  tv.tv_usec = static_cast<long>((ms.count() % 1000) * 1000);
  return tv;
}

RedisReply convert(const redisReply* r) {
  RedisReply out;
  if (!r) return out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default: break;  // REDIS_REPLY_NIL
  }
  return out;
}

}  // namespace

void RedisClient::close_locked() {
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
}

void RedisClient::connect_locked() {
  close_locked();
  redisContext* c = redisConnectWithTimeout(url_.host.c_str(), url_.port, to_timeval(options_.connect_timeout));
  if (!c) throw_error(ErrorCode::kIo, "redis: cannot allocate a connection to " + url_.redacted());
  if (c->err) {
    std::string why = c->errstr;
    redisFree(c);
    throw_error(ErrorCode::kIo, "redis: cannot connect to " + url_.redacted() + ": " + why);
  }
  redisSetTimeout(c, to_timeval(options_.command_timeout));
  ctx_ = c;
  // AUTH and SELECT on every (re)connection.
  std::vector<std::vector<std::string>> setup;
  if (!url_.password.empty()) {
    if (url_.user.empty()) setup.push_back({"AUTH", url_.password});
    else setup.push_back({"AUTH", url_.user, url_.password});
  }
  if (url_.db != 0) setup.push_back({"SELECT", std::to_string(url_.db)});
  for (const auto& cmd : setup) {
    std::string why;
    auto r = send_locked({cmd}, &why);
    if (!r) {
      close_locked();
      throw_error(ErrorCode::kIo, "redis: " + cmd[0] + " on " + url_.redacted() + " failed: " + why);
    }
    if ((*r)[0].type == RedisReply::Type::kError) {
      const std::string msg = (*r)[0].str;
      close_locked();
      // A wrong password is the user's to fix, not a reason to retry.
      throw_error(ErrorCode::kInvalidArgument, "redis: " + cmd[0] + " on " + url_.redacted() + " refused: " + msg);
    }
  }
}

std::optional<std::vector<RedisReply>> RedisClient::send_locked(const std::vector<std::vector<std::string>>& commands,
                                                                std::string* why) {
  if (!ctx_) {
    *why = "not connected";
    return std::nullopt;
  }
  for (const auto& cmd : commands) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
      *why = ctx_->errstr;
      close_locked();
      return std::nullopt;
    }
  }
  std::vector<RedisReply> out;
  for (size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(ctx_, &raw) != REDIS_OK || !raw) {
      *why = ctx_->errstr[0] ? ctx_->errstr : "connection lost";
      close_locked();
      return std::nullopt;
    }
    auto* r = static_cast<redisReply*>(raw);
    out.push_back(convert(r));
    freeReplyObject(r);
  }
  return out;
}

std::vector<RedisReply> RedisClient::pipeline(const std::vector<std::vector<std::string>>& commands) {
  if (commands.empty()) return {};
  std::lock_guard<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + options_.retry_for;
  auto backoff = std::chrono::milliseconds(50);
  std::string why;
  for (;;) {
    if (aborted_) throw_error(ErrorCode::kIo, "redis: " + commands[0][0] + ": the process is stopping");
    try {
      if (!ctx_) connect_locked();
      if (auto r = send_locked(commands, &why)) {
        // Redis answers -LOADING while it reads its AOF after a restart: wait like a lost connection.
        bool loading = false;
        for (const RedisReply& x : *r) loading |= x.type == RedisReply::Type::kError && x.str.rfind("LOADING", 0) == 0;
        if (!loading) return std::move(*r);
        why = "Redis is loading its data set";
      }
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kIo) throw;
      why = e.what();
    }
    if (std::chrono::steady_clock::now() + backoff > deadline) {
      throw_error(ErrorCode::kIo, "redis: " + commands[0][0] + " on " + url_.redacted() + " failed: " + why);
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

RedisReply RedisClient::command(const std::vector<std::string>& args) {
  RedisReply r = std::move(pipeline({args})[0]);
  if (r.type == RedisReply::Type::kError) throw_error(ErrorCode::kRuntime, "redis: " + args[0] + ": " + r.str);
  return r;
}

std::optional<RedisReply> RedisClient::try_command(const std::vector<std::string>& args) noexcept {
  try {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ctx_) connect_locked();
    std::string why;
    auto r = send_locked({args}, &why);
    if (!r) return std::nullopt;
    return std::move((*r)[0]);
  } catch (...) {
    return std::nullopt;
  }
}

#else  // built without hiredis

bool redis_available() { return false; }

void RedisClient::close_locked() {}
void RedisClient::connect_locked() {
  throw_error(ErrorCode::kUnsupported,
              "this diffuse was built without hiredis: install libhiredis-dev (scripts/install_deps.sh) and rebuild "
              "to use --queue");
}
std::optional<std::vector<RedisReply>> RedisClient::send_locked(const std::vector<std::vector<std::string>>&,
                                                                std::string* why) {
  *why = "no hiredis";
  return std::nullopt;
}
std::vector<RedisReply> RedisClient::pipeline(const std::vector<std::vector<std::string>>&) {
  connect_locked();
  return {};
}
RedisReply RedisClient::command(const std::vector<std::string>&) {
  connect_locked();
  return {};
}
std::optional<RedisReply> RedisClient::try_command(const std::vector<std::string>&) noexcept { return std::nullopt; }

#endif

}  // namespace diffuse::server
