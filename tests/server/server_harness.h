// Test helpers for the server hardening and soak tests: the real server
// in-process (port 0, fixture model, temp data dir) or the real `diffuse
// serve` binary as a child process (for crash and kill tests).
#pragma once
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "server/server.h"
#include "test_util.h"

namespace diffuse::testing {

inline std::string sd1_model_dir() { return fixtures_dir() + "/sd1/model"; }

// The server on a free loopback port, serving the tiny sd1 fixture model.
class InProcessServer {
 public:
  explicit InProcessServer(std::string data_dir = temp_dir()) : data_dir_(std::move(data_dir)) {
    server::ServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.model_files = {sd1_model_dir()};
    o.scan_hf_cache = false;
    o.data_dir = data_dir_;
    server_ = std::make_unique<server::Server>(o);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~InProcessServer() {
    server_->stop();
    thread_.join();
  }
  int port() const { return port_; }
  const std::string& data_dir() const { return data_dir_; }
  httplib::Client client(int timeout_s = 120) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(timeout_s, 0);
    c.set_write_timeout(timeout_s, 0);
    c.set_connection_timeout(5, 0);
    return c;
  }

 private:
  std::string data_dir_;
  std::unique_ptr<server::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

// `diffuse serve --port 0` as a child; the port is read from its stderr line
// "diffuse serve: http://127.0.0.1:PORT/".
class ChildServer {
 public:
  explicit ChildServer(const std::string& data_dir) : log_(temp_dir() + "/serve.log") {
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log_.c_str(), "w", stderr);
      (void)f;
      execl(DIFFUSE_BINARY, DIFFUSE_BINARY, "serve", "--port", "0", "--no-hf-cache", "--data-dir", data_dir.c_str(),
            "--model", sd1_model_dir().c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    static const std::regex kPort(R"(http://127\.0\.0\.1:(\d+)/)");
    for (int i = 0; i < 600 && port_ == 0 && alive(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::smatch m;
      std::string text = log();
      if (std::regex_search(text, m, kPort)) port_ = std::stoi(m[1]);
    }
  }
  ~ChildServer() {
    if (pid_ > 0 && alive()) kill9();
  }
  int port() const { return port_; }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  bool alive() {
    if (exited_) return false;
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = st;
    }
    return !exited_;
  }
  int wait_status() const { return status_; }
  void kill9() {
    if (exited_) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
    exited_ = true;
  }
  httplib::Client client(int timeout_s = 60) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(timeout_s, 0);
    c.set_connection_timeout(5, 0);
    return c;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool exited_ = false;
  int status_ = 0;
};

// A cheap native job body (64x64, one step).
inline std::string cheap_job(int64_t seed, int steps = 1) {
  return nlohmann::json({{"prompt", "a red cube"}, {"width", 64}, {"height", 64}, {"steps", steps}, {"seed", seed},
                         {"sampler", "euler"}})
      .dump();
}

// Polls GET /api/jobs/{id} until the job is finished; returns its JSON.
inline nlohmann::json wait_job(httplib::Client& c, const std::string& id, int timeout_s = 120) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = c.Get("/api/jobs/" + id);
    if (r && r->status == 200) {
      auto j = nlohmann::json::parse(r->body);
      const std::string s = j["state"];
      if (s == "done" || s == "failed" || s == "cancelled") return j;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return nlohmann::json{{"state", "timeout"}};
}

}  // namespace diffuse::testing
