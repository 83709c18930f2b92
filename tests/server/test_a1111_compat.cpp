// AUTOMATIC1111 semantics that clients rely on, driven as they send them:
// Open WebUI's HTTP Basic auth (A1111's --api-auth), /interrupt with no body
// and its partial image, numeric strings, CLIP_stop_at_last_layers as an
// option, the CFG bound the page and the server share, and /api/devices'
// CPU description (what the page shows without a GPU).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <regex>

#include "core/error.h"
#include "io/png.h"
#include "server/auth.h"
#include "server/base64.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

constexpr int kLongSteps = 600;  // ~0.1 s per step at 64x64: long enough to interrupt

// Open WebUI (backend/open_webui/routers/images.py, get_automatic1111_api_auth)
// base64-encodes its AUTOMATIC1111_API_AUTH setting ("user:pass") and sends it
// as a lower-case "authorization: Basic <b64>" header with requests'
// GET /sdapi/v1/options (URL check), GET /sdapi/v1/sd-models (model list),
// POST /sdapi/v1/options {"sd_model_checkpoint": title} (model switch) and
// POST /sdapi/v1/txt2img {prompt, batch_size, width, height[, steps]} (json=).
httplib::Headers open_webui_headers(const std::string& user_pass) {
  return {{"authorization", "Basic " + server::base64_encode(user_pass)}};
}

httplib::Result post_with(httplib::Client& c, const std::string& path, const Json& body, const httplib::Headers& h) {
  return c.Post(path.c_str(), h, body.dump(), "application/json");
}

// One raw HTTP/1.1 request (what curl -X POST sends: no Content-Length), answered status code.
int raw_status(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int status = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[512];
    ssize_t n = ::recv(fd, buf, sizeof(buf) - 1, 0);
    if (n > 12) {
      buf[n] = 0;
      std::cmatch m;
      if (std::regex_search(buf, m, std::regex(R"(^HTTP/1\.[01] (\d{3}))"))) status = std::stoi(m[1]);
    }
  }
  ::close(fd);
  return status;
}

std::string bodyless_interrupt() {
  return "POST /sdapi/v1/interrupt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
}

class A1111CompatTest : public TinyServerTest {};

TEST_F(A1111CompatTest, OpenWebUiBasicAuthDrivesTheA1111Api) {
  server::ServerOptions o = tiny_options(models_, data_);
  o.api_auth = "owui:pa:ss,second:pw2";  // a password may hold ':'
  start(o);
  auto c = server_->client();
  const httplib::Headers auth = open_webui_headers("owui:pa:ss");

  auto r = c->Get("/sdapi/v1/options", auth);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  r = c->Get("/sdapi/v1/sd-models", auth);
  ASSERT_EQ(r->status, 200) << r->body;
  Json models = parse_json(r);
  ASSERT_EQ(models.size(), 2u);
  const std::string title = models[1]["title"];
  r = post_with(*c, "/sdapi/v1/options", {{"sd_model_checkpoint", title}}, auth);
  ASSERT_EQ(r->status, 200) << r->body;
  // (Its title gains the hash once loaded.)
  const std::string now = parse_json(c->Get("/sdapi/v1/options", auth))["sd_model_checkpoint"];
  EXPECT_EQ(now.rfind(models[1]["model_name"].get<std::string>(), 0), 0u) << now;
  r = post_with(*c, "/sdapi/v1/txt2img",
                {{"prompt", "a red cube"}, {"batch_size", 1}, {"width", 64}, {"height", 64}, {"steps", 2}}, auth);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json out = parse_json(r);
  ASSERT_EQ(out["images"].size(), 1u);
  std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
  EXPECT_EQ(read_png(png.data(), png.size()).width, 64);
  EXPECT_EQ(Json::parse(out["info"].get<std::string>())["sd_model_name"], models[1]["model_name"]);
  // The second user too.
  EXPECT_EQ(c->Get("/sdapi/v1/sd-models", open_webui_headers("second:pw2"))->status, 200);

  // Wrong password, wrong user, another user's password, no auth, garbage: 401 with a Basic challenge.
  for (const httplib::Headers& bad :
       {open_webui_headers("owui:wrong"), open_webui_headers("nobody:pa:ss"), open_webui_headers("owui:pw2"),
        httplib::Headers{}, httplib::Headers{{"authorization", "Basic !!notbase64"}},
        httplib::Headers{{"authorization", "Bearer pa:ss"}}}) {
    r = c->Get("/sdapi/v1/options", bad);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(r->get_header_value("WWW-Authenticate").rfind("Basic realm=\"diffuse\"", 0), 0u)
        << r->get_header_value("WWW-Authenticate");
  }
  EXPECT_EQ(post_with(*c, "/sdapi/v1/txt2img", {{"prompt", "x"}}, open_webui_headers("owui:nope"))->status, 401);

  // The page and its own requests with the browser's cached Basic credentials.
  auto page = c->Get("/", auth);
  ASSERT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<html"), std::string::npos);
  EXPECT_EQ(c->Get("/api/samplers", auth)->status, 200);
  EXPECT_EQ(c->Get("/static/app.js", auth)->status, 200);
  EXPECT_EQ(c->Get("/")->status, 401);
}

TEST_F(A1111CompatTest, ApiKeyAlsoOpensThePageAsBasicPassword) {
  server::ServerOptions o = tiny_options(models_, data_);
  o.api_key = "k3y";
  start(o);
  auto c = server_->client();
  auto r = c->Get("/");
  EXPECT_EQ(r->status, 401);
  EXPECT_FALSE(r->get_header_value("WWW-Authenticate").empty());  // the browser shows its prompt
  EXPECT_EQ(c->Get("/", open_webui_headers("anyone:k3y"))->status, 200);
  EXPECT_EQ(c->Get("/api/samplers", open_webui_headers(":k3y"))->status, 200);
  EXPECT_EQ(c->Get("/", open_webui_headers("anyone:k3"))->status, 401);
  EXPECT_EQ(c->Get("/", open_webui_headers("k3y"))->status, 401);  // no ':'
  EXPECT_EQ(c->Get("/", {{"Authorization", "Bearer k3y"}})->status, 200);
}

TEST_F(A1111CompatTest, LoopbackWithoutAuthNeedsNone) {
  start();
  auto c = server_->client();
  EXPECT_EQ(c->Get("/sdapi/v1/options")->status, 200);
  EXPECT_EQ(c->Get("/sdapi/v1/options", open_webui_headers("any:thing"))->status, 200);  // ignored, as A1111
  EXPECT_EQ(c->Get("/")->status, 200);
}

TEST(ApiAuthTest, ParsingValidationAndComparison) {
  EXPECT_EQ(server::parse_api_auth("a:b,c:d:e").size(), 2u);
  EXPECT_EQ(server::parse_api_auth("a:b,c:d:e")[1].second, "d:e");
  for (const char* bad : {"nocolon", "a:b,", ":pw", "user:", "a:b,,c:d"}) {
    EXPECT_THROW(server::parse_api_auth(bad), Error) << bad;
  }
  server::ServerOptions o;
  o.host = "0.0.0.0";
  o.api_auth = "u:p";
  EXPECT_NO_THROW(o.validate());  // --api-auth alone allows a non-loopback bind
  o.api_auth = "up";
  EXPECT_THROW(o.validate(), Error);
  o.api_auth.clear();
  try {
    o.validate();
    FAIL() << "a non-loopback bind without auth must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--api-auth"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(server::constant_time_equal("secret", "secret"));
  EXPECT_FALSE(server::constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(server::constant_time_equal("secret", "secret2"));
  EXPECT_FALSE(server::constant_time_equal("secret2", "secret"));
  EXPECT_FALSE(server::constant_time_equal("", "x"));
  server::Authenticator none("", "");
  EXPECT_TRUE(none.allows("", ""));
}

TEST_F(A1111CompatTest, InterruptWithoutBodyStopsTheRunAndReturnsThePartialImage) {
  start();
  auto c = server_->client();
  // Nothing running: no body, an empty JSON object and curl's bare POST all answer 200.
  EXPECT_EQ(raw_status(server_->port(), bodyless_interrupt()), 200);
  EXPECT_EQ(post_json(*c, "/sdapi/v1/interrupt", Json::object())->status, 200);
  EXPECT_EQ(c->Post("/sdapi/v1/interrupt")->status, 200);

  Json out;
  int status = 0;
  std::thread waiter([&] {
    auto c2 = server_->client();
    auto r = post_json(*c2, "/sdapi/v1/txt2img",
                       {{"prompt", "long"}, {"steps", kLongSteps}, {"width", 64}, {"height", 64}, {"seed", 5},
                        {"n_iter", 2}});
    if (r) {
      status = r->status;
      out = parse_json(r);
    }
  });
  const bool running = eventually(
      [&] {
        Json p = parse_json(c->Get("/sdapi/v1/progress?skip_current_image=true"));
        return p.is_object() && p["state"]["sampling_step"].get<int>() >= 2;
      },
      std::chrono::seconds(60));
  EXPECT_TRUE(running);
  EXPECT_EQ(raw_status(server_->port(), bodyless_interrupt()), 200);
  waiter.join();
  ASSERT_EQ(status, 200) << out.dump().substr(0, 300);
  // One partial image (the second iteration never ran), decoded at full size.
  ASSERT_EQ(out["images"].size(), 1u);
  std::vector<uint8_t> png = server::base64_decode(out["images"][0].get<std::string>());
  auto im = read_png(png.data(), png.size());
  EXPECT_EQ(im.width, 64);
  EXPECT_EQ(im.height, 64);
  Json info = Json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["interrupted"], true);
  EXPECT_GE(info["interrupted_at_step"].get<int>(), 2);
  EXPECT_LT(info["interrupted_at_step"].get<int>(), kLongSteps);
  EXPECT_EQ(info["all_seeds"].size(), 1u);
  // The queue is idle again, and a later run is not interrupted.
  EXPECT_TRUE(eventually([&] { return parse_json(c->Get("/sdapi/v1/progress"))["state"]["job"] == ""; },
                         std::chrono::seconds(10)));
  auto r = post_json(*c, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", 2}, {"width", 64}, {"height", 64}});
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(Json::parse(parse_json(r)["info"].get<std::string>())["interrupted"], false);
}

TEST_F(A1111CompatTest, NumericStringsAreAcceptedAsPydanticDoes) {
  start();
  auto c = server_->client();
  auto r = post_json(*c, "/sdapi/v1/txt2img",
                     {{"prompt", "x"}, {"steps", "2"}, {"cfg_scale", "7"}, {"seed", " 42 "}, {"width", "64"},
                      {"height", "64"}, {"batch_size", "1"}, {"n_iter", "1"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json out = parse_json(r);
  EXPECT_EQ(out["parameters"]["steps"], 2);
  EXPECT_EQ(out["parameters"]["cfg_scale"], 7.0);
  EXPECT_EQ(out["parameters"]["width"], 64);
  EXPECT_EQ(Json::parse(out["info"].get<std::string>())["seed"], 42);
  r = post_json(*c, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", "2"}, {"seed", "-1"}, {"cfg_scale", "6.5"},
                                          {"width", "64"}, {"height", "64"}});
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_GE(Json::parse(parse_json(r)["info"].get<std::string>())["seed"].get<int64_t>(), 0);

  // Non-numeric strings (and integers written as decimals) stay 422, naming the field.
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"steps", "twenty"}, {"steps", "2.5"}, {"steps", ""}, {"cfg_scale", "nan"}, {"cfg_scale", "inf"},
           {"seed", "0x10"}, {"width", "64px"}, {"height", "1e999"}}) {
    Json body = {{"prompt", "x"}, {"steps", 2}, {"width", 64}, {"height", 64}};
    body[field] = value;
    r = post_json(*c, "/sdapi/v1/txt2img", body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << field << "=" << value << ": " << r->body;
    EXPECT_NE(r->body.find(field), std::string::npos) << r->body;
  }
  EXPECT_EQ(c->Get("/sdapi/v1/options")->status, 200);  // still up
}

TEST_F(A1111CompatTest, ClipSkipOptionIsTheDefaultForLaterRequests) {
  start();
  auto c = server_->client();
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/options"))["CLIP_stop_at_last_layers"], 1);
  auto r = post_json(*c, "/sdapi/v1/options", {{"CLIP_stop_at_last_layers", 2}});
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/options"))["CLIP_stop_at_last_layers"], 2);
  const Json job = {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}, {"seed", 1}};
  r = post_json(*c, "/sdapi/v1/txt2img", job);
  ASSERT_EQ(r->status, 200) << r->body;
  Json info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["clip_skip"], 2);
  EXPECT_NE(info["infotexts"][0].get<std::string>().find("Clip skip: 2"), std::string::npos) << info["infotexts"][0];
  // override_settings still wins for its one request.
  Json with_override = job;
  with_override["override_settings"] = {{"CLIP_stop_at_last_layers", 1}};
  r = post_json(*c, "/sdapi/v1/txt2img", with_override);
  EXPECT_EQ(Json::parse(parse_json(r)["info"].get<std::string>())["clip_skip"], 1);
  // Out of range or not a number: 422, and the option keeps its value.
  for (const Json& bad : {Json(0), Json(13), Json("two"), Json(1.5)}) {
    r = post_json(*c, "/sdapi/v1/options", {{"CLIP_stop_at_last_layers", bad}});
    EXPECT_EQ(r->status, 422) << bad.dump() << ": " << r->body;
    EXPECT_NE(r->body.find("CLIP_stop_at_last_layers"), std::string::npos) << r->body;
  }
  EXPECT_EQ(post_json(*c, "/sdapi/v1/options", {{"CLIP_stop_at_last_layers", "3"}})->status, 200);
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/options"))["CLIP_stop_at_last_layers"], 3);
}

TEST_F(A1111CompatTest, CfgBoundIsTheSameOnThePageAndTheServer) {
  start();
  auto c = server_->client();
  auto page = c->Get("/");
  ASSERT_EQ(page->status, 200);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(page->body, m, std::regex(R"re(<input id="cfg"[^>]*\bmax="([0-9.]+)")re")));
  const double page_max = std::stod(m[1]);
  EXPECT_EQ(page_max, 100.0);
  const Json job = {{"prompt", "x"}, {"steps", 1}, {"width", 64}, {"height", 64}};
  Json over = job;
  over["cfg_scale"] = page_max + 0.5;
  auto r = post_json(*c, "/sdapi/v1/txt2img", over);
  EXPECT_EQ(r->status, 422);
  EXPECT_NE(r->body.find("<= 100"), std::string::npos) << r->body;
  Json at = job;
  at["cfg_scale"] = page_max;
  EXPECT_EQ(post_json(*c, "/sdapi/v1/txt2img", at)->status, 200);
}

// What the page's device panel shows without a GPU (web/devices.js refreshDevices).
TEST_F(A1111CompatTest, DevicesDescribeTheCpu) {
  start();
  auto c = server_->client();
  Json d = parse_json(c->Get("/api/devices"));
  const Json& cpu = d["devices"]["cpu"];
  ASSERT_TRUE(cpu.is_object()) << d.dump();
  EXPECT_FALSE(cpu.value("model", "").empty());
  EXPECT_GE(cpu.value("cores", 0), 1);
  EXPECT_GE(cpu.value("threads", 0), cpu.value("cores", 0));
  EXPECT_TRUE(cpu["isa"].is_array());
}

}  // namespace
}  // namespace diffuse::testing
