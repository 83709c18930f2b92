// Helpers for the server API tests: a real Server on a free loopback port
// (port 0), the tiny fixture models under stable names, and small HTTP/JSON
// helpers. Header-only: CMake builds one executable per tests/server/test_*.cpp.
#pragma once
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "server/server.h"
#include "test_util.h"

namespace diffuse::testing {

using Json = nlohmann::json;

// A folder with the tiny SD1 and SD2 fixture pipelines linked as "tiny-sd1"
// and "tiny-sd2" (both fixture folders are called "model").
inline std::string tiny_models_dir() {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir();
  fs::create_directory_symlink(fs::path(fixtures_dir()) / "sd1" / "model", fs::path(dir) / "tiny-sd1");
  fs::create_directory_symlink(fs::path(fixtures_dir()) / "sd2" / "model", fs::path(dir) / "tiny-sd2");
  return dir;
}

// The Server, serving from a thread until stop() or destruction.
class RunningServer {
 public:
  explicit RunningServer(server::ServerOptions options) {
    set_num_threads(1);  // a loaded 2-core box: one compute thread is fastest for 64x64 images
    options.host = "127.0.0.1";
    options.port = 0;
    options.scan_hf_cache = false;
    server_ = std::make_unique<server::Server>(options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
  }
  ~RunningServer() { stop(); }
  void stop() {
    if (!server_) return;
    server_->stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }
  int port() const { return port_; }
  std::unique_ptr<httplib::Client> client(int read_timeout_s = 120) const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(read_timeout_s, 0);
    c->set_connection_timeout(10, 0);
    return c;
  }

 private:
  std::unique_ptr<server::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

inline server::ServerOptions tiny_options(const std::string& models_dir, const std::string& data_dir) {
  server::ServerOptions o;
  o.model_dirs = {models_dir};
  o.data_dir = data_dir;
  o.scan_hf_cache = false;
  return o;
}

// A test that starts the server on the tiny fixture models (start()), or with
// options of its own (start(o)).
class TinyServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DIFFUSE_REQUIRE_FIXTURES();
    models_ = tiny_models_dir();
    data_ = temp_dir();
  }
  void start(server::ServerOptions o) { server_ = std::make_unique<RunningServer>(std::move(o)); }
  void start() { start(tiny_options(models_, data_)); }
  std::string models_, data_;
  std::unique_ptr<RunningServer> server_;
};

inline Json parse_json(const httplib::Result& r) {
  if (!r) return Json();
  return Json::parse(r->body, nullptr, false);
}

inline httplib::Result post_json(httplib::Client& c, const std::string& path, const Json& body) {
  return c.Post(path.c_str(), body.dump(), "application/json");
}

// Polls `pred` every 20 ms until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

inline bool is_png(const std::string& bytes) {
  return bytes.size() > 8 && bytes.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) == 0;
}

}  // namespace diffuse::testing
