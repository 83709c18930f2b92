// Server abuse: malformed and hostile request bodies, hostile image uploads
// (img2img / inpainting), oversized bodies, path
// traversal, clients that vanish mid-job, pathological JSON nesting, the bind
// policy (loopback by default, --api-key required elsewhere), and SIGKILL
// during history writes (the real `diffuse serve` binary, restarted on the
// same data dir). The soak test lives in test_soak.cpp.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <set>
#include <string>
#include <vector>

#include "io/png.h"
#include "server/base64.h"
#include "server/server.h"
#include "server_harness.h"

namespace diffuse {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ChildServer;
using testing::InProcessServer;

// Sends `request` verbatim (no client-side URL normalisation) and returns the
// raw response, or "" when the server closed without answering.
std::string raw_http(int port, const std::string& request, int read_timeout_ms = 10000) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  timeval tv{read_timeout_ms / 1000, (read_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string get_raw(int port, const std::string& path) {
  return raw_http(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

void expect_alive(httplib::Client& c) {
  auto r = c.Get("/api/models");
  ASSERT_TRUE(r) << "server did not answer";
  EXPECT_EQ(r->status, 200);
}

TEST(ServerHardening, MalformedBodiesGet4xxAndServerStaysUp) {
  DIFFUSE_REQUIRE_FIXTURES();
  InProcessServer srv;
  auto c = srv.client();
  // Not JSON objects: every route answers 400.
  const std::vector<std::string> not_objects = {
      "{",
      "[]",
      "null",
      "\"just a string\"",
      "12",
      std::string("\xff\xfe{\"prompt\":1}", 14),
      "{\"prompt\": \"\\ud800\"}",  // lone surrogate
      "{\"prompt\": NaN}",
      "{\"prompt\": \"x\"",
  };
  // Wrong types (numeric strings such as "20" are numbers, as in A1111) and huge
  // or out-of-range numbers, for fields the native and
  // A1111 routes share.
  const std::vector<std::string> shared = {
      "{\"prompt\": 5}",
      "{\"prompt\": \"x\", \"steps\": \"twenty\"}",
      "{\"prompt\": \"x\", \"width\": [64]}",
      "{\"prompt\": \"x\", \"seed\": {\"a\": 1}}",
      "{\"prompt\": \"x\", \"cfg_scale\": \"high\"}",
      "{\"prompt\": \"x\", \"width\": 1e300, \"steps\": 1}",
      "{\"prompt\": \"x\", \"height\": -1e300, \"steps\": 1}",
      "{\"prompt\": \"x\", \"steps\": 1e300}",
      "{\"prompt\": \"x\", \"cfg_scale\": 1e300, \"steps\": 1}",
      "{\"prompt\": \"x\", \"width\": -9223372036854775809, \"steps\": 1}",
      "{\"prompt\": \"x\", \"steps\": 18446744073709551616}",
      "{\"prompt\": \"x\", \"width\": 100, \"steps\": 1}",
      "{\"prompt\": \"x\", \"steps\": 5000}",
      "{\"prompt\": \"x\", \"steps\": -1}",
  };
  const std::vector<std::string> native = {
      "{\"prompt\": \"x\", \"images\": 1000, \"steps\": 1}",
      "{\"prompt\": \"x\", \"sampler\": \"nope\", \"steps\": 1}",
      "{\"prompt\": \"x\", \"schedule\": \"nope\", \"steps\": 1}",
      "{\"prompt\": \"x\", \"model\": \"../../etc/passwd\", \"steps\": 1}",
      "{\"prompt\": \"x\", \"clip_skip\": 99, \"steps\": 1}",
  };
  const std::vector<std::string> a1111 = {
      "{\"prompt\": \"x\", \"batch_size\": 1000, \"steps\": 1}",
      "{\"prompt\": \"x\", \"n_iter\": 0, \"steps\": 1}",
      "{\"prompt\": \"x\", \"sampler_name\": \"nope\", \"steps\": 1}",
      "{\"prompt\": \"x\", \"override_settings\": {\"CLIP_stop_at_last_layers\": \"two\"}, \"steps\": 1}",
  };
  const std::vector<std::string> openai = {
      "{\"prompt\": 5}",
      "{\"size\": \"64x64\"}",
      "{\"prompt\": \"x\", \"n\": \"two\"}",
      "{\"prompt\": \"x\", \"n\": 1e300}",
      "{\"prompt\": \"x\", \"n\": 0}",
      "{\"prompt\": \"x\", \"size\": \"99999999999x64\"}",
      "{\"prompt\": \"x\", \"size\": \"100x100\"}",
      "{\"prompt\": \"x\", \"size\": \"64x64x\"}",
      "{\"prompt\": \"x\", \"response_format\": 5}",
      "{\"prompt\": \"x\", \"size\": \"64x64\", \"steps\": 5000}",
  };
  auto expect_4xx = [&](const std::string& path, const std::vector<std::string>& bodies) {
    for (const std::string& body : bodies) {
      auto r = c.Post(path, body, "application/json");
      ASSERT_TRUE(r) << path << " " << body << ": no answer";
      EXPECT_GE(r->status, 400) << path << " " << body << " -> " << r->status << " " << r->body;
      EXPECT_LT(r->status, 500) << path << " " << body << " -> " << r->status << " " << r->body;
    }
  };
  for (const char* path : {"/api/jobs", "/sdapi/v1/txt2img", "/v1/images/generations"}) expect_4xx(path, not_objects);
  expect_4xx("/api/jobs", shared);
  expect_4xx("/api/jobs", native);
  expect_4xx("/sdapi/v1/txt2img", shared);
  expect_4xx("/sdapi/v1/txt2img", a1111);
  expect_4xx("/v1/images/generations", openai);
  expect_alive(c);
}

// Integer fields must not wrap: nlohmann's get<int>() truncates 2^32 + 64 to
// 64 and 2^63 to 0 ("use the default"); the handlers now read fields with
// json_field (src/server/server_state.h), which refuses them.
TEST(ServerHardening, IntegerFieldsDoNotWrap) {
  DIFFUSE_REQUIRE_FIXTURES();
  InProcessServer srv;
  auto c = srv.client();
  const std::vector<std::string> bodies = {
      "{\"prompt\": \"x\", \"width\": 4294967360, \"height\": 64, \"steps\": 1}",
      "{\"prompt\": \"x\", \"width\": 9223372036854775808, \"height\": 64, \"steps\": 1}",
      "{\"prompt\": \"x\", \"width\": 64, \"height\": 64, \"steps\": 4294967297}",
      "{\"prompt\": \"x\", \"width\": 64.5, \"height\": 64, \"steps\": 1}",
  };
  for (const char* path : {"/api/jobs", "/sdapi/v1/txt2img"}) {
    for (const std::string& body : bodies) {
      auto r = c.Post(path, body, "application/json");
      ASSERT_TRUE(r);
      EXPECT_GE(r->status, 400) << path << " " << body << " -> " << r->status;
    }
  }
  auto r = c.Post("/v1/images/generations", "{\"prompt\": \"x\", \"n\": 4294967297, \"size\": \"64x64\"}",
                  "application/json");
  ASSERT_TRUE(r);
  EXPECT_GE(r->status, 400) << r->body;
}

// A PNG signature and IHDR claiming width x height, followed by `tail`
// (nothing decodable): what a decompression bomb's header looks like.
std::string png_header(uint32_t width, uint32_t height, const std::string& tail = std::string(64, 'x')) {
  auto be32 = [](std::string& s, uint32_t v) {
    for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  std::string out("\x89PNG\r\n\x1a\n", 8);
  be32(out, 13);
  out += "IHDR";
  be32(out, width);
  be32(out, height);
  out += std::string("\x08\x02\x00\x00\x00", 5);
  be32(out, 0);  // CRC (wrong: refused anyway)
  return out + tail;
}

// Uploads: refused with 400 from their header before any pixel is decoded
// (a 100000 x 100000 "image" would need 28 GiB), undecodable ones named by
// field, edit fields of the wrong type or range; the server keeps serving.
TEST(ServerHardening, HostileUploadsAre4xxAndServerStaysUp) {
  DIFFUSE_REQUIRE_FIXTURES();
  InProcessServer srv;
  auto c = srv.client();
  auto b64 = [](const std::string& bytes) { return server::base64_encode(bytes); };
  const std::string bomb = b64(png_header(100000, 100000));
  const std::string tiny = b64(png_header(64, 64));           // a valid header, garbage after it
  const std::string zero = b64(png_header(0, 64));
  std::vector<uint8_t> rgb(64 * 64 * 3, 90);
  const std::vector<uint8_t> good_png = encode_png(64, 64, rgb.data());
  const std::string good = b64(std::string(good_png.begin(), good_png.end()));
  auto post = [&](const std::string& path, const json& body) { return c.Post(path, body.dump(), "application/json"); };
  auto expect_status = [&](const std::string& path, const json& body, int lo, int hi) {
    auto r = post(path, body);
    ASSERT_TRUE(r) << path << " " << body.dump().substr(0, 200) << ": no answer";
    EXPECT_GE(r->status, lo) << path << " " << body.dump().substr(0, 200) << " -> " << r->body.substr(0, 300);
    EXPECT_LE(r->status, hi) << path << " " << body.dump().substr(0, 200) << " -> " << r->body.substr(0, 300);
  };
  const json a1111_bad_images[] = {
      {{"init_images", {bomb}}},
      {{"init_images", {tiny}}},
      {{"init_images", {zero}}},
      {{"init_images", {""}}},
      {{"init_images", {"data:image/png;base64,"}}},
      {{"init_images", {"data:text/plain,hello"}}},
      {{"init_images", {std::string(1000, '=')}}},
      {{"init_images", {good, bomb}}},                  // the others are checked too
      {{"init_images", json::array({json::array({good})})}},
      {{"init_images", {5}}},
      {{"init_images", "not a list"}},
      {{"init_images", {good}}, {"mask", bomb}},
      {{"init_images", {good}}, {"mask", tiny}},
      {{"init_images", {good}}, {"mask", {{"a", 1}}}},
      {{"init_images", {good}}, {"denoising_strength", "high"}},
      {{"init_images", {good}}, {"denoising_strength", 1e300}},
      {{"init_images", {good}}, {"mask_blur", -1}},
      {{"init_images", {good}}, {"mask_blur", 1e12}},
      {{"init_images", {good}}, {"inpaint_full_res_padding", -5}},
      {{"init_images", {good}}, {"inpainting_mask_invert", 2}},
      {{"init_images", {good}}, {"inpainting_fill", -1}},
      {{"init_images", {good}}, {"resize_mode", "stretch"}},
  };
  for (json body : a1111_bad_images) {
    body["prompt"] = "x";
    body["steps"] = 1;
    expect_status("/sdapi/v1/img2img", body, 400, 400);
  }
  const json native_bad[] = {
      {{"init_image", bomb}},
      {{"init_image", tiny}},
      {{"init_image", 7}},
      {{"init_image", good}, {"mask", bomb}},
      {{"init_image", good}, {"strength", "0.5x"}},
      {{"init_image", good}, {"strength", 2}},
      {{"init_image", good}, {"padding", 1e300}},
      {{"init_image", good}, {"overlay", "yes"}},
      {{"init_image", good}, {"outpaint", {{"left", 1e300}}}},
      {{"init_image", good}, {"outpaint", {{"middle", 8}}}},
      {{"init_image", good}, {"outpaint", "left=abc"}},
      {{"init_image", good}, {"outpaint", 5}},
      {{"strength", 0.5}},  // an edit field without an image
  };
  for (json body : native_bad) {
    body["prompt"] = "x";
    body["steps"] = 1;
    expect_status("/api/jobs", body, 400, 400);
  }
  // PNG Info reads only text chunks: a header with any size is fine to look at, garbage is a 400.
  expect_status("/sdapi/v1/png-info", {{"image", bomb}}, 200, 400);
  expect_status("/sdapi/v1/png-info", {{"image", "@@@"}}, 400, 400);
  expect_status("/sdapi/v1/png-info", {{"image", 5}}, 400, 422);
  // OpenAI edits: a bomb header, garbage and a body that is not multipart.
  for (const std::string& image : {png_header(100000, 100000), png_header(64, 64), std::string("GIF89a...")}) {
    auto r = c.Post("/v1/images/edits",
                    httplib::MultipartFormDataItems{{"image", image, "i.png", "image/png"}, {"prompt", "x", "", ""}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_NE(r->body.find("\"param\":\"image\""), std::string::npos) << r->body;
  }
  auto r = c.Post("/v1/images/edits", "--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data; boundary=x");
  ASSERT_TRUE(r);
  EXPECT_GE(r->status, 400);
  EXPECT_LT(r->status, 500);
  // A route without uploads refuses a body over 1 MiB from its Content-Length, before it arrives.
  const std::string claim = raw_http(srv.port(),
                                     "POST /sdapi/v1/options HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                     "Content-Length: 50000000\r\n\r\n{\"prompt\":",
                                     1500);  // the answer comes at once (the connection then idles)
  EXPECT_EQ(status_of(claim), 413) << claim.substr(0, 200);
  EXPECT_EQ(c.Get("/api/jobs")->body, "[]") << "nothing was queued";
  expect_alive(c);
}

TEST(ServerHardening, BodyOverOneMebibyteIsRefused) {
  DIFFUSE_REQUIRE_FIXTURES();
  InProcessServer srv;
  auto c = srv.client();
  std::string body = "{\"prompt\": \"" + std::string((1 << 20) + 16, 'a') + "\"}";
  auto r = c.Post("/api/jobs", body, "application/json");
  if (r) {  // or the connection is closed: both refuse
    EXPECT_EQ(r->status, 413) << r->body.substr(0, 200);
  }
  // Just under the limit but over the 64 KiB prompt limit: a 4xx naming the limit.
  std::string big = "{\"prompt\": \"" + std::string(100 * 1024, 'a') + "\", \"steps\": 1}";
  r = c.Post("/api/jobs", big, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("65536"), std::string::npos) << r->body;
  expect_alive(c);
}

TEST(ServerHardening, PathTraversalIsRefused) {
  DIFFUSE_REQUIRE_FIXTURES();
  InProcessServer srv;
  auto c = srv.client();
  // A real image first (positive control; it also creates images/ and history.db).
  auto r = c.Post("/api/jobs", testing::cheap_job(7), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  json done = testing::wait_job(c, json::parse(r->body)["id"]);
  ASSERT_EQ(done["state"], "done") << done.dump();
  const std::string file = done["images"][0]["file"];
  std::string ok = get_raw(srv.port(), "/images/" + file);
  EXPECT_EQ(status_of(ok), 200);
  EXPECT_NE(ok.find("\x89PNG"), std::string::npos);
  // A secret beside the data dir that no URL may reach.
  {
    std::ofstream(srv.data_dir() + "/secret.txt") << "TOPSECRET";
  }
  const std::vector<std::string> attacks = {
      "/images/../history.db",
      "/images/..%2fhistory.db",
      "/images/%2e%2e%2fhistory.db",
      "/images/%2E%2E/secret.txt",
      "/images/..%5csecret.txt",
      "/images/....//secret.txt",
      "/images//etc/passwd",
      "/images/%2fetc%2fpasswd",
      "/images/" + file + "%00.txt",
      "/images/" + file + "/../../secret.txt",
      "/static/../../../../etc/passwd",
      "/static/..%2f..%2f..%2fetc%2fpasswd",
      "/static/%2e%2e",
      "/static/..",
      "/static/.",
      "/../../../../etc/passwd",
      "/%2e%2e/%2e%2e/etc/passwd",
  };
  for (const std::string& path : attacks) {
    std::string resp = get_raw(srv.port(), path);
    int st = status_of(resp);
    EXPECT_TRUE(st == 0 || st >= 400) << path << " -> " << st;
    EXPECT_EQ(resp.find("TOPSECRET"), std::string::npos) << path;
    EXPECT_EQ(resp.find("SQLite format 3"), std::string::npos) << path;
    EXPECT_EQ(resp.find("root:x:0:0"), std::string::npos) << path;
  }
  expect_alive(c);
}

size_t count_entries(const char* dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

// Open descriptors and threads of this process (the in-process server's).
struct ProcessResources {
  size_t fds = count_entries("/proc/self/fd");
  size_t threads = count_entries("/proc/self/task");
};

// Clients send a long synchronous txt2img (A1111) or OpenAI request and hang
// up while it runs. Each job must be cancelled (not run to its end), commit
// no history row, and give back what it held: after the hang-ups the process
// has no more open descriptors or threads than before (polled briefly, since
// the server closes a socket after its handler returns), and the server
// still runs the next job.
TEST(ServerHardening, ClientDisconnectMidJob) {
  DIFFUSE_REQUIRE_FIXTURES();
  InProcessServer srv;
  auto c = srv.client();
  // Warm-up: the model is loaded and the worker threads exist before counting.
  auto first = c.Post("/api/jobs", testing::cheap_job(10), "application/json");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 202);
  ASSERT_EQ(testing::wait_job(c, json::parse(first->body)["id"])["state"], "done");
  const ProcessResources before;
  const int kSteps = 900;  // minutes of work: only a cancellation ends it within the deadline
  const std::vector<std::pair<std::string, json>> hangups{
      {"/sdapi/v1/txt2img", {{"prompt", "disconnect 0"}, {"width", 64}, {"height", 64}, {"steps", kSteps}, {"seed", 3}}},
      {"/v1/images/generations", {{"prompt", "disconnect 1"}, {"size", "64x64"}, {"steps", kSteps}}},
      {"/sdapi/v1/txt2img", {{"prompt", "disconnect 2"}, {"width", 64}, {"height", 64}, {"steps", kSteps}, {"seed", 4}}},
  };
  for (const auto& [path, body_json] : hangups) {
    const std::string body = body_json.dump();
    const std::string prompt = body_json["prompt"];
    raw_http(srv.port(),
             "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                 "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body,
             /*read_timeout_ms=*/500);  // then close the socket
    std::string id, state;
    int step = -1;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = c.Get("/api/jobs");
      ASSERT_TRUE(r);
      for (const json& j : json::parse(r->body)) {
        if (j["prompt"] == prompt) {
          id = j["id"];
          state = j["state"];
          step = j["step"];
        }
      }
      if (state == "done" || state == "failed" || state == "cancelled") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_FALSE(id.empty()) << path << ": the job never appeared";
    EXPECT_EQ(state, "cancelled") << path;
    EXPECT_LT(step, kSteps) << path;
    std::printf("[ disconnect ] %s job %s: cancelled at step %d of %d\n", path.c_str(), id.c_str(), step, kSteps);
  }
  // Only the warm-up job is in the history; its image is the only file.
  auto h = c.Get("/api/history");
  ASSERT_TRUE(h);
  EXPECT_EQ(json::parse(h->body)["total"], 1) << h->body;
  EXPECT_EQ(count_entries((srv.data_dir() + "/images").c_str()), 1u);
  // Descriptors and threads are back to their level before the hang-ups.
  ProcessResources after;
  for (int i = 0; i < 50 && (after.fds > before.fds || after.threads > before.threads); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = ProcessResources{};
  }
  EXPECT_LE(after.fds, before.fds) << "descriptors leaked by hung-up requests";
  EXPECT_LE(after.threads, before.threads) << "threads left behind by hung-up requests";
  // The server still serves a new job.
  auto r = c.Post("/api/jobs", testing::cheap_job(11), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202);
  EXPECT_EQ(testing::wait_job(c, json::parse(r->body)["id"])["state"], "done");
}

// 100k-deep JSON arrays in an otherwise valid body (200 KB, under the body
// limit): parsing, echoing the body and storing it in history must not
// overflow the stack. Run against a child process so a crash is observable.
// Regression test of bug 2 in docs/reliability.md (the server died with
// SIGSEGV before bodies nested deeper than kMaxJsonDepth were refused).
TEST(ServerHardening, DeeplyNestedJsonDoesNotCrash) {
  DIFFUSE_REQUIRE_FIXTURES();
  std::string data = testing::temp_dir();
  ChildServer srv(data);
  ASSERT_GT(srv.port(), 0) << srv.log();
  auto c = srv.client();
  const int depth = 100000;
  std::string junk = std::string(depth, '[') + std::string(depth, ']');
  std::string body = "{\"prompt\": \"deep\", \"width\": 64, \"height\": 64, \"steps\": 1, \"junk\": " + junk + "}";
  for (const char* path : {"/api/jobs", "/sdapi/v1/txt2img", "/v1/images/generations"}) {
    auto r = c.Post(path, body, "application/json");
    if (r && r->status == 202) testing::wait_job(c, json::parse(r->body)["id"]);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_TRUE(srv.alive()) << path << ": the server died (status " << srv.wait_status() << ")\n" << srv.log();
  }
  auto h = c.Get("/api/history");
  ASSERT_TRUE(h) << srv.log();
  EXPECT_EQ(h->status, 200);
}

// SIGKILL while jobs are finishing (PNG write + SQLite commit), then restart
// on the same data dir: every history image exists and decodes, and no PNG is
// left without a history row.
TEST(ServerHardening, KillNineDuringHistoryWritesKeepsHistoryConsistent) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string data = testing::temp_dir();
  int committed_before_kill = 0;
  for (int round = 0; round < 3; ++round) {
    ChildServer srv(data);
    ASSERT_GT(srv.port(), 0) << srv.log();
    auto c = srv.client();
    for (int i = 0; i < 12; ++i) {
      auto r = c.Post("/api/jobs", testing::cheap_job(100 * round + i), "application/json");
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 202) << r->body;
    }
    // Kill at a different point each round: after 1, 3, 5 newly finished jobs.
    const int target = committed_before_kill + 1 + 2 * round;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    int total = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      auto h = c.Get("/api/history?limit=1");
      if (h && h->status == 200) total = json::parse(h->body)["total"];
      if (total >= target) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GE(total, target);
    srv.kill9();
    committed_before_kill = total;
  }
  ChildServer srv(data);
  ASSERT_GT(srv.port(), 0) << srv.log();
  auto c = srv.client();
  auto h = c.Get("/api/history?limit=500");
  ASSERT_TRUE(h);
  json hist = json::parse(h->body);
  EXPECT_GE(hist["total"].get<int>(), committed_before_kill);  // committed rows survive
  std::set<std::string> listed;
  for (const json& item : hist["items"]) {
    for (const json& im : item["images"]) {
      const std::string file = im["file"];
      listed.insert(file);
      const std::string path = data + "/images/" + file;
      ASSERT_TRUE(fs::exists(path)) << file;
      std::string bytes = testing::read_file(path);
      PngImage img = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      EXPECT_EQ(img.width, 64);
      EXPECT_EQ(img.height, 64);
      EXPECT_EQ(read_png_text(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()).count("parameters"), 1u);
    }
  }
  for (const auto& e : fs::directory_iterator(data + "/images")) {
    EXPECT_TRUE(listed.count(e.path().filename().string())) << "orphan file " << e.path();
  }
  std::printf("[ kill -9 ] %d history rows after 3 kills, %zu images, all valid\n", hist["total"].get<int>(),
              listed.size());
}

// `diffuse serve ARGS...` with stderr in a log file; the bound address and
// port are read from its "diffuse serve: http://HOST:PORT/" line.
class ServeWithArgs {
 public:
  explicit ServeWithArgs(std::vector<std::string> args) : log_(testing::temp_dir() + "/serve_args.log") {
    args.insert(args.begin(), {DIFFUSE_BINARY, "serve", "--port", "0", "--no-hf-cache", "--data-dir",
                               testing::temp_dir(), "--model", testing::sd1_model_dir()});
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log_.c_str(), "w", stderr);
      (void)f;
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(DIFFUSE_BINARY, argv.data());
      _exit(127);
    }
    static const std::regex kUrl(R"(diffuse serve: http://([^ ]+):(\d+)/)");
    for (int i = 0; i < 600 && port_ == 0 && !exited(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::smatch m;
      std::string text = log();
      if (std::regex_search(text, m, kUrl)) {
        host_ = m[1];
        port_ = std::stoi(m[2]);
      }
    }
  }
  ~ServeWithArgs() {
    if (!exited()) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
    }
  }
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  std::string log() const {
    std::ifstream f(log_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  bool exited() {
    if (!exited_ && waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }
  int status() const { return status_; }

 private:
  std::string log_;
  pid_t pid_ = -1;
  std::string host_;
  int port_ = 0;
  bool exited_ = false;
  int status_ = 0;
};

// The local IPv4 address (as /proc/net/tcp writes it: hex, host byte order)
// of the socket listening on `port`, or "" when none listens.
std::string listening_address(int port) {
  std::ifstream f("/proc/net/tcp");
  std::string line;
  std::getline(f, line);  // header
  char want[8];
  std::snprintf(want, sizeof want, "%04X", port);
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state;
    in >> slot >> local >> remote >> state;
    if (state == "0A" && local.size() == 13 && local.substr(9) == want) return local.substr(0, 8);
  }
  return "";
}

TEST(ServerHardening, BindsLoopbackByDefaultAndNeedsApiKeyElsewhere) {
  DIFFUSE_REQUIRE_FIXTURES();
  EXPECT_EQ(server::ServerOptions{}.host, "127.0.0.1");
  {
    // No --host: the listening socket is 127.0.0.1 (0100007F), not 0.0.0.0.
    ServeWithArgs srv({});
    ASSERT_GT(srv.port(), 0) << srv.log();
    EXPECT_EQ(srv.host(), "127.0.0.1");
    EXPECT_EQ(listening_address(srv.port()), "0100007F") << "port " << srv.port();
  }
  {
    // Any other address without --api-key: refused before binding, exit != 0.
    ServeWithArgs srv({"--host", "0.0.0.0"});
    for (int i = 0; i < 300 && !srv.exited(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(srv.exited()) << "diffuse serve --host 0.0.0.0 without --api-key kept running\n" << srv.log();
    EXPECT_EQ(srv.port(), 0) << srv.log();
    ASSERT_TRUE(WIFEXITED(srv.status())) << srv.log();
    EXPECT_NE(WEXITSTATUS(srv.status()), 0) << srv.log();
    EXPECT_NE(srv.log().find("--api-key"), std::string::npos) << srv.log();
  }
  {
    // With --api-key it binds every interface and every route wants the key.
    ServeWithArgs srv({"--host", "0.0.0.0", "--api-key", "k3y"});
    ASSERT_GT(srv.port(), 0) << srv.log();
    EXPECT_EQ(listening_address(srv.port()), "00000000");
    httplib::Client c("127.0.0.1", srv.port());
    c.set_read_timeout(30, 0);
    for (const char* path : {"/api/models", "/api/history", "/sdapi/v1/sd-models"}) {
      auto r = c.Get(path);
      ASSERT_TRUE(r) << path;
      EXPECT_EQ(r->status, 401) << path;
    }
    auto post = c.Post("/api/jobs", testing::cheap_job(1), "application/json");
    ASSERT_TRUE(post);
    EXPECT_EQ(post->status, 401);
    EXPECT_EQ(c.Get("/api/models", {{"Authorization", "Bearer wrong"}})->status, 401);
    EXPECT_EQ(c.Get("/api/models", {{"Authorization", "Bearer k3y"}})->status, 200);
  }
}

}  // namespace
}  // namespace diffuse
