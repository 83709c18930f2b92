// The Redis job queue end to end (issue 24, docs/deploy.md): the test starts
// its own redis-server (loopback, free port, temp dir, AOF appendfsync always,
// a password), a `diffuse serve --queue` front end and three CPU workers on
// the built-in demo model, then:
//  - 30 jobs through the A1111 and OpenAI APIs, each image equal (decoded RGB
//    bytes) to a single `diffuse generate` with the same seed;
//  - one worker kill -9'd mid-job: all 30 still finish, each exactly once;
//  - Redis SIGTERM'd and restarted mid-run (AOF): nothing lost;
//  - a worker started late picks up queued work;
//  - a cancelled job stops;
//  - a second front end fetches the jobs by id and lists them in its history.
// Every wait is bounded; every process is killed and the temp dir removed at the end.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "io/png.h"
#include "server/base64.h"
#include "server/queue_codec.h"
#include "server/queue_keys.h"
#include "server/redis_client.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace diffuse::testing {
namespace {

TEST(RedisUrl, ParsesUserPasswordHostPortAndDb) {
  server::RedisUrl u = server::RedisUrl::parse("redis://alice:s3cr:et@10.1.2.3:6380/2");
  EXPECT_EQ(u.user, "alice");
  EXPECT_EQ(u.password, "s3cr:et");
  EXPECT_EQ(u.host, "10.1.2.3");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 2);
  EXPECT_EQ(u.redacted(), "redis://alice:***@10.1.2.3:6380/2");
  u = server::RedisUrl::parse("redis://:pw@redis");
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "pw");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.db, 0);
  for (const char* bad : {"http://x:1/0", "redis://x:0/0", "redis://x:70000", "redis://x:1/abc", "redis://:pw@/0"}) {
    EXPECT_EQ(error_of([&] { server::RedisUrl::parse(bad); }).code(), ErrorCode::kInvalidArgument) << bad;
  }
}

TEST(QueueCodec, RoundTripsARequestAndRefusesWhatItCannotCarry) {
  server::JobRequest r;
  r.model = "demo";
  r.echo = {{"prompt", "x <lora:a:0.5>"}};
  r.written_prompt = "x <lora:a:0.5>";
  r.warnings = {"w"};
  GenerationParams& p = r.params;
  p.prompt = "x";
  p.negative_prompt = "bad";
  p.width = 64;
  p.height = 72;
  p.steps = 7;
  p.cfg_scale = 6.5f;
  p.sampler = "euler_a";
  p.schedule = "karras";
  p.seed = 1234567890123;
  p.images = 2;
  p.seed_per_image = true;
  p.clip_skip = 2;
  p.decode_when_stopped = true;
  p.loras = {{"/m/a.safetensors", 0.5f, 0.25f}};
  p.edit.init_image = {2, 1, {1, 2, 3, 4, 5, 6}};
  p.edit.mask = {2, 1, {0, 255}};
  p.edit.strength = 0.6;
  p.hires.enabled = true;
  p.hires.upscaler = "Latent (nearest)";
  p.hires.prompt = "hp";
  const server::JobRequest back = server::decode_job_request(json::parse(server::encode_job_request(r).dump()));
  EXPECT_EQ(back.model, "demo");
  EXPECT_EQ(back.written_prompt, r.written_prompt);
  EXPECT_EQ(back.warnings, r.warnings);
  EXPECT_EQ(back.echo, r.echo);
  const GenerationParams& q = back.params;
  EXPECT_EQ(q.prompt, "x");
  EXPECT_EQ(q.negative_prompt, std::optional<std::string>("bad"));
  EXPECT_EQ(q.width, 64);
  EXPECT_EQ(q.height, 72);
  EXPECT_EQ(q.steps, 7);
  EXPECT_EQ(q.cfg_scale, 6.5f);
  EXPECT_EQ(q.sampler, "euler_a");
  EXPECT_EQ(q.schedule, "karras");
  EXPECT_EQ(q.seed, 1234567890123);
  EXPECT_EQ(q.images, 2);
  EXPECT_TRUE(q.seed_per_image);
  EXPECT_EQ(q.clip_skip, 2);
  EXPECT_TRUE(q.decode_when_stopped);
  EXPECT_EQ(q.loras, p.loras);
  EXPECT_EQ(q.edit.init_image.px, p.edit.init_image.px);
  EXPECT_EQ(q.edit.mask.px, p.edit.mask.px);
  EXPECT_EQ(q.edit.strength, 0.6);
  EXPECT_TRUE(q.hires.enabled);
  EXPECT_EQ(q.hires.upscaler, "Latent (nearest)");
  EXPECT_EQ(q.hires.prompt, std::optional<std::string>("hp"));
  EXPECT_FALSE(q.hires.negative_prompt.has_value());
  // ControlNet units travel whole, their control images included.
  server::JobRequest c = r;
  ControlNetUnit u;
  u.path = "/m/control_canny.safetensors";
  u.image = {2, 2, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2}};
  u.weight = 0.75f;
  u.guidance_start = 0.1;
  u.guidance_end = 0.9;
  u.control_mode = ControlMode::kControlNet;
  u.resize_mode = image::ResizeMode::kResizeAndFill;
  u.guess_mode = true;
  u.module = "canny";
  u.pixel_perfect = true;
  u.mask = {2, 2, {0, 255, 128, 7}};  // an inpaint unit's mask
  c.params.controlnets = {u, ControlNetUnit{}};
  c.params.controlnets[1].path = "/m/second";
  c.params.controlnets[1].image = {1, 1, {1, 2, 3}};
  const GenerationParams cq =
      server::decode_job_request(json::parse(server::encode_job_request(c).dump())).params;
  ASSERT_EQ(cq.controlnets.size(), 2u);
  const ControlNetUnit& v = cq.controlnets[0];
  EXPECT_EQ(v.path, u.path);
  EXPECT_EQ(v.image.width, 2);
  EXPECT_EQ(v.image.px, u.image.px);
  EXPECT_EQ(v.weight, 0.75f);
  EXPECT_EQ(v.guidance_start, 0.1);
  EXPECT_EQ(v.guidance_end, 0.9);
  EXPECT_EQ(v.control_mode, ControlMode::kControlNet);
  EXPECT_EQ(v.resize_mode, image::ResizeMode::kResizeAndFill);
  EXPECT_TRUE(v.guess_mode);
  EXPECT_EQ(v.module, "canny");
  EXPECT_TRUE(v.pixel_perfect);
  EXPECT_EQ(v.mask.width, 2);
  EXPECT_EQ(v.mask.px, u.mask.px);
  EXPECT_TRUE(cq.controlnets[1].mask.empty());
  EXPECT_EQ(cq.controlnets[1].path, "/m/second");
  EXPECT_EQ(cq.controlnets[1].control_mode, ControlMode::kBalanced);
  EXPECT_FALSE(cq.controlnets[1].guess_mode);
  // What only lives in this process (latents asked back, given latents) is refused.
  server::JobRequest latents = r;
  latents.params.output_latents = true;
  EXPECT_EQ(error_of([&] { server::encode_job_request(latents); }).code(), ErrorCode::kUnsupported);
  EXPECT_EQ(error_of([&] { server::decode_job_request(json{{"model", "m"}}); }).code(), ErrorCode::kInvalidArgument);
}

#if DIFFUSE_HAVE_HIREDIS

constexpr const char* kPassword = "queue-test-secret";
constexpr int kJobs = 30;
constexpr int kSteps = 16;
constexpr int kSide = 128;

std::string redis_server_binary() {
  if (const char* p = std::getenv("DIFFUSE_REDIS_SERVER")) return p;
  return "/usr/bin/redis-server";
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

// A child process with its stdout and stderr in a log file; killed (SIGKILL) when destroyed.
class Child {
 public:
  Child(const std::vector<std::string>& argv, std::string log) : log_(std::move(log)) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::fflush(nullptr);  // the child must not write our buffered output again
    pid_ = fork();
    if (pid_ == 0) {
      setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
      if (!std::freopen(log_.c_str(), "a", stdout)) _exit(126);
      dup2(fileno(stdout), fileno(stderr));
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Child() { kill9(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  bool alive() {
    if (exited_) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      exited_ = true;
      status_ = st;
    }
    return !exited_;
  }
  void kill9() {
    if (pid_ <= 0 || exited_) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
    exited_ = true;
  }
  // SIGTERM, then waits up to `timeout`; true when it exited by itself with status 0.
  bool term(std::chrono::seconds timeout) {
    if (exited_) return false;
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (alive() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (alive()) {
      kill9();
      return false;
    }
    return WIFEXITED(status_) && WEXITSTATUS(status_) == 0;
  }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // Waits (bounded) until the log matches `re`; returns the first group ("" on timeout / exit).
  std::string wait_log(const std::regex& re, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline && alive()) {
      std::smatch m;
      const std::string text = log();
      if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

template <class F>
bool wait_until(F&& cond, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

class Cluster {
 public:
  Cluster() : dir_(temp_dir()), redis_port_(free_port()) {}
  ~Cluster() {
    workers_.clear();
    fronts_.clear();
    redis_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }
  std::string url() const { return "redis://:" + std::string(kPassword) + "@127.0.0.1:" + std::to_string(redis_port_) + "/0"; }

  void start_redis() {
    fs::create_directories(dir_ + "/redis");
    redis_ = std::make_unique<Child>(
        std::vector<std::string>{redis_server_binary(), "--port", std::to_string(redis_port_), "--bind", "127.0.0.1",
                                 "--dir", dir_ + "/redis", "--appendonly", "yes", "--appendfsync", "always", "--save",
                                 "", "--requirepass", kPassword, "--daemonize", "no"},
        dir_ + "/redis.log");
    ASSERT_FALSE(redis_->wait_log(std::regex("Ready to accept connections"), std::chrono::seconds(20)).empty())
        << redis_->log();
  }
  bool stop_redis() { return redis_->term(std::chrono::seconds(20)); }

  // A front end; returns its port.
  int start_front(const std::string& name) {
    fronts_[name] = std::make_unique<Child>(
        std::vector<std::string>{DIFFUSE_BINARY, "serve", "--port", "0", "--no-hf-cache", "--threads", "1",
                                 "--data-dir", dir_ + "/" + name, "--queue", url()},
        dir_ + "/" + name + ".log");
    const std::string port =
        fronts_[name]->wait_log(std::regex(R"(http://127\.0\.0\.1:(\d+)/)"), std::chrono::seconds(60));
    EXPECT_FALSE(port.empty()) << fronts_[name]->log();
    return port.empty() ? 0 : std::stoi(port);
  }
  // results_dir: the worker writes its PNGs there (a shared folder) instead of Redis.
  void start_worker(const std::string& name, const std::string& results_dir = "") {
    std::vector<std::string> argv = {DIFFUSE_BINARY, "worker", "--queue", url(), "--name", name, "--no-hf-cache",
                                     "--threads", "1", "--visibility-timeout", "3", "--heartbeat", "1"};
    if (!results_dir.empty()) argv.insert(argv.end(), {"--results-dir", results_dir});
    workers_[name] = std::make_unique<Child>(argv, dir_ + "/" + name + ".log");
    EXPECT_FALSE(workers_[name]->wait_log(std::regex("serving"), std::chrono::seconds(60)).empty())
        << workers_[name]->log();
  }
  Child& worker(const std::string& name) { return *workers_.at(name); }
  Child& front(const std::string& name) { return *fronts_.at(name); }

 private:
  std::string dir_;
  int redis_port_;
  std::unique_ptr<Child> redis_;
  std::map<std::string, std::unique_ptr<Child>> fronts_;
  std::map<std::string, std::unique_ptr<Child>> workers_;
};

httplib::Client client(int port, int timeout_s = 170) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(timeout_s, 0);
  c.set_write_timeout(30, 0);
  c.set_connection_timeout(5, 0);
  return c;
}

std::string prompt_of(int i) {
  static const char* kColours[] = {"red", "green", "blue", "yellow", "purple"};
  static const char* kShapes[] = {"circle", "square", "triangle"};
  return std::string("a ") + kColours[i % 5] + " " + kShapes[i % 3] + " on a white background";
}

// The decoded RGB of `diffuse generate` for one job (the demo model, one thread, as the workers).
std::vector<uint8_t> reference_rgb(const std::string& dir, const std::string& prompt, int64_t seed, bool a1111) {
  const std::string out = dir + "/ref-" + std::to_string(seed) + (a1111 ? "-a" : "-o") + ".png";
  std::string cmd = std::string("OMP_WAIT_POLICY=PASSIVE ") + DIFFUSE_BINARY + " generate --model demo --threads 1" +
                    " -p " + shell_quote(prompt) + " --seed " + std::to_string(seed) + " --steps " +
                    std::to_string(kSteps) + " -W " + std::to_string(kSide) + " -H " + std::to_string(kSide) +
                    " -o " + shell_quote(out);
  if (a1111) cmd += " --sampler euler_a --cfg-scale 7 -n ''";
  const RunResult r = run_command(cmd);
  EXPECT_EQ(r.code, 0) << r.out;
  const std::string png = read_file(out);
  return read_png(reinterpret_cast<const uint8_t*>(png.data()), png.size()).rgb;
}

int64_t seed_in_infotext(const std::string& png) {
  const PngText t = read_png_text(reinterpret_cast<const uint8_t*>(png.data()), png.size());
  static const std::regex kSeed(R"(Seed: (\d+))");
  std::smatch m;
  const std::string p = t.count("parameters") ? t.at("parameters") : "";
  return std::regex_search(p, m, kSeed) ? std::stoll(m[1]) : -1;
}

// Job hashes by id (the test reads Redis directly to see who ran what).
std::map<std::string, std::map<std::string, std::string>> jobs_in_redis(server::RedisClient& r) {
  std::map<std::string, std::map<std::string, std::string>> out;
  const server::RedisReply keys = r.command({"KEYS", "diffuse:job:*"});
  for (const server::RedisReply& k : keys.elements) {
    const server::RedisReply h =
        r.command({"HMGET", k.str, "state", "worker", "finished", "step", "total_steps", "attempts"});
    const char* names[] = {"state", "worker", "finished", "step", "total_steps", "attempts"};
    auto& m = out[k.str.substr(std::string("diffuse:job:").size())];
    for (size_t i = 0; i < h.elements.size(); ++i) m[names[i]] = h.elements[i].str;
  }
  return out;
}

int64_t stat(server::RedisClient& r, const char* name) {
  return r.command({"HGET", server::queue::kStats, name}).as_int(0);
}

struct Reply {
  int status = 0;
  std::string body;
};

TEST(RedisQueue, ThirtyJobsExactlyOnceThroughAWorkerKillAndARedisRestart) {
  ASSERT_TRUE(fs::exists(redis_server_binary())) << "redis-server is missing: scripts/install_deps.sh installs it";
  Cluster c;
  ASSERT_NO_FATAL_FAILURE(c.start_redis());
  const int port = c.start_front("front1");
  ASSERT_GT(port, 0);
  c.start_worker("w1");
  c.start_worker("w2");
  server::RedisClient redis(server::RedisUrl::parse(c.url()));
  {
    // A wrong password stops a worker at once, as a usage error naming the URL (password hidden).
    std::string bad = c.url();
    bad.replace(bad.find(kPassword), std::string(kPassword).size(), "not-the-password-42");
    const RunResult r = run_command(std::string(DIFFUSE_BINARY) + " worker --no-hf-cache --queue " + bad + " 2>&1");
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_NE(r.out.find("AUTH on redis://:***@127.0.0.1"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("not-the-password-42"), std::string::npos) << r.out;
  }
  const auto t_start = std::chrono::steady_clock::now();

  // 30 synchronous requests: even ones through A1111 (seed given), odd ones through OpenAI (seed random).
  std::vector<Reply> replies(kJobs);
  std::vector<std::thread> clients;
  // A failed ASSERT returns early: stop the front end (its requests then fail at once) and join.
  struct Joiner {
    Cluster& c;
    std::vector<std::thread>& threads;
    ~Joiner() {
      c.front("front1").kill9();
      for (std::thread& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{c, clients};
  for (int i = 0; i < kJobs; ++i) {
    clients.emplace_back([&replies, port, i] {
      httplib::Client h = client(port);
      const json a1111 = {{"prompt", prompt_of(i)}, {"negative_prompt", ""}, {"seed", 1000 + i},
                          {"sampler_name", "Euler a"}, {"steps", kSteps}, {"cfg_scale", 7},
                          {"width", kSide},         {"height", kSide}};
      const json openai = {{"prompt", prompt_of(i)}, {"size", std::to_string(kSide) + "x" + std::to_string(kSide)},
                           {"steps", kSteps},        {"response_format", "b64_json"}};
      httplib::Result r = i % 2 == 0 ? h.Post("/sdapi/v1/txt2img", a1111.dump(), "application/json")
                                     : h.Post("/v1/images/generations", openai.dump(), "application/json");
      if (r) replies[i] = {r->status, r->body};
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  // kill -9 a worker while it runs a job.
  std::string victim_job;
  ASSERT_TRUE(wait_until(
      [&] {
        for (const auto& [id, h] : jobs_in_redis(redis)) {
          if (h.at("state") == "running" && h.at("worker") == "w1" && h.at("step") != "0") victim_job = id;
        }
        return !victim_job.empty();
      },
      std::chrono::seconds(90)))
      << c.worker("w1").log();
  c.worker("w1").kill9();
  // A worker started late takes queued work; it keeps its PNGs in a shared folder, not in Redis.
  const std::string shared_results = c.dir() + "/shared-results";
  c.start_worker("w3", shared_results);
  // Redis stopped (SIGTERM) and restarted mid-run, with AOF.
  ASSERT_TRUE(wait_until([&] { return stat(redis, "done") >= 10; }, std::chrono::seconds(120)));
  const int64_t done_before_restart = stat(redis, "done");
  EXPECT_LT(done_before_restart, kJobs) << "the restart must come mid-run";
  EXPECT_TRUE(c.stop_redis());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_NO_FATAL_FAILURE(c.start_redis());

  for (std::thread& t : clients) t.join();
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  // Every request answered, each image equal to `diffuse generate` with its seed.
  std::set<std::string> seen_files;
  for (int i = 0; i < kJobs; ++i) {
    SCOPED_TRACE("job " + std::to_string(i));
    ASSERT_EQ(replies[i].status, 200) << replies[i].body.substr(0, 400);
    const json j = json::parse(replies[i].body);
    std::string png;
    if (i % 2 == 0) {
      ASSERT_EQ(j["images"].size(), 1u);
      const auto bytes = server::base64_decode(j["images"][0].get<std::string>());
      png.assign(bytes.begin(), bytes.end());
    } else {
      ASSERT_EQ(j["data"].size(), 1u);
      const auto bytes = server::base64_decode(j["data"][0]["b64_json"].get<std::string>());
      png.assign(bytes.begin(), bytes.end());
    }
    const int64_t seed = seed_in_infotext(png);
    if (i % 2 == 0) {
      EXPECT_EQ(seed, 1000 + i);
    }
    ASSERT_GE(seed, 0);
    const PngImage got = read_png(reinterpret_cast<const uint8_t*>(png.data()), png.size());
    EXPECT_EQ(got.width, kSide);
    EXPECT_TRUE(got.rgb == reference_rgb(c.dir(), prompt_of(i), seed, i % 2 == 0))
        << "the queued image differs from diffuse generate --seed " << seed;
  }

  // Exactly once: 30 jobs finished, each once; the killed worker's job was
  // claimed again and finished by another worker; the late worker ran some.
  const auto jobs = jobs_in_redis(redis);
  EXPECT_EQ(jobs.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(stat(redis, "submitted"), kJobs);
  EXPECT_EQ(stat(redis, "done"), kJobs);
  EXPECT_EQ(stat(redis, "failed"), 0);
  EXPECT_GE(stat(redis, "reclaimed"), 1);
  int by_w3 = 0;
  for (const auto& [id, h] : jobs) {
    EXPECT_EQ(h.at("state"), "done") << id;
    by_w3 += h.at("finished") == "w3";
  }
  ASSERT_TRUE(jobs.count(victim_job));
  EXPECT_NE(jobs.at(victim_job).at("finished"), "");
  EXPECT_NE(jobs.at(victim_job).at("finished"), "w1");  // killed mid-job: another worker finished it
  EXPECT_GE(std::stoi(jobs.at(victim_job).at("attempts")), 2);
  EXPECT_GE(by_w3, 1) << "the worker started late ran no job";
  int shared_files = 0;
  for (const auto& e : fs::directory_iterator(shared_results)) shared_files += e.path().extension() == ".png";
  // (more than by_w3 only if w3 also ran a job that another worker finished first)
  EXPECT_GE(shared_files, by_w3) << "w3's PNGs belong in its --results-dir";
  std::printf("[queue] %d jobs in %.1f s; Redis restarted after %lld done; reclaimed %lld, duplicate runs %lld, "
              "late worker ran %d; victim job %s took %s attempts\n",
              kJobs, run_s, static_cast<long long>(done_before_restart), static_cast<long long>(stat(redis, "reclaimed")),
              static_cast<long long>(stat(redis, "duplicates")), by_w3, victim_job.c_str(),
              jobs.at(victim_job).at("attempts").c_str());
  // The front end's history: each job once.
  httplib::Client h = client(port, 30);
  auto hist = h.Get("/api/history?limit=100");
  ASSERT_TRUE(hist);
  const json hj = json::parse(hist->body);
  EXPECT_EQ(hj["total"], kJobs);
  std::set<std::string> ids;
  for (const json& e : hj["items"]) ids.insert(e["id"].get<std::string>());
  EXPECT_EQ(ids.size(), static_cast<size_t>(kJobs));

  // A cancelled job stops (a long one, cancelled once it runs).
  const json long_job = {{"prompt", "a blue square"}, {"steps", 400}, {"width", kSide}, {"height", kSide}, {"seed", 7}};
  auto sub = h.Post("/api/jobs", long_job.dump(), "application/json");
  ASSERT_TRUE(sub);
  ASSERT_EQ(sub->status, 202) << sub->body;
  const std::string cid = json::parse(sub->body)["id"];
  ASSERT_TRUE(wait_until(
      [&] {
        auto g = h.Get("/api/jobs/" + cid);
        return g && json::parse(g->body)["step"].get<int>() >= 1;
      },
      std::chrono::seconds(60)));
  auto cancel = h.Post("/api/jobs/" + cid + "/cancel");
  ASSERT_TRUE(cancel);
  EXPECT_EQ(json::parse(cancel->body)["cancelled"], true);
  json cj;
  ASSERT_TRUE(wait_until(
      [&] {
        auto g = h.Get("/api/jobs/" + cid);
        if (g) cj = json::parse(g->body);
        return g && cj["state"] != "running" && cj["state"] != "queued";
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(cj["state"], "cancelled") << cj.dump();
  EXPECT_LT(cj["step"].get<int>(), 400);
  EXPECT_EQ(stat(redis, "cancelled"), 1);

  // Metrics: the queue is empty, w2 and w3 are alive, 30 done.
  auto metrics = h.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("diffuse_queue_depth 0\n"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("diffuse_worker_up{worker=\"w2\"} 1"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("diffuse_worker_up{worker=\"w3\"} 1"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("diffuse_jobs{state=\"done\"} 30"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("diffuse_queue_lag{model=\"demo\"} 0"), std::string::npos) << metrics->body;

  // Another front end (a restarted one: fresh data dir) finds every job by id and in its history.
  const int port2 = c.start_front("front2");
  ASSERT_GT(port2, 0);
  httplib::Client h2 = client(port2, 30);
  auto j0 = h2.Get("/api/jobs/" + victim_job);
  ASSERT_TRUE(j0);
  ASSERT_EQ(j0->status, 200) << j0->body;
  const json j0j = json::parse(j0->body);
  EXPECT_EQ(j0j["state"], "done");
  ASSERT_EQ(j0j["images"].size(), 1u);
  auto img = h2.Get(j0j["images"][0]["url"].get<std::string>());
  ASSERT_TRUE(img);
  EXPECT_EQ(img->status, 200);
  EXPECT_TRUE(wait_until(
      [&] {
        auto g = h2.Get("/api/history?limit=100");
        return g && json::parse(g->body)["total"] == kJobs;
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(h2.Get("/api/jobs/ffffffffffffffff")->status, 404);

  // Workers stop gracefully on SIGTERM.
  EXPECT_TRUE(c.worker("w2").term(std::chrono::seconds(30))) << c.worker("w2").log();
  EXPECT_TRUE(c.worker("w3").term(std::chrono::seconds(30))) << c.worker("w3").log();
}

TEST(RedisQueue, NoRedisOrABadUrlIsAClearError) {
  const int port = free_port();
  RunResult r = run_command(std::string(DIFFUSE_BINARY) + " worker --no-hf-cache --queue redis://127.0.0.1:" +
                            std::to_string(port) + "/0 2>&1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("cannot connect to redis://127.0.0.1:" + std::to_string(port)), std::string::npos) << r.out;
  r = run_command(std::string(DIFFUSE_BINARY) + " serve --port 0 --no-hf-cache --queue http://x 2>&1");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("redis:// URL"), std::string::npos) << r.out;
}

#else

TEST(RedisQueue, WithoutHiredisQueueIsAClearError) {
  const RunResult r = run_command(std::string(DIFFUSE_BINARY) + " worker --queue redis://127.0.0.1:1/0 2>&1");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("built without hiredis"), std::string::npos) << r.out;
}

#endif

}  // namespace
}  // namespace diffuse::testing
