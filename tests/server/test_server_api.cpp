// The HTTP APIs of `diffuse serve` against a real server on a loopback port,
// with the tiny SD1/SD2 fixture pipelines at 64x64 and a few steps.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "io/png.h"
#include "server/base64.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

// One long job keeps the worker busy (~0.1 s per step at 64x64 on one thread).
constexpr int kLongSteps = 600;

Json small_job(const std::string& model, int steps, int64_t seed) {
  return {{"model", model}, {"prompt", "a red cube"}, {"steps", steps}, {"width", 64},
          {"height", 64},   {"seed", seed},           {"cfg_scale", 5.0},
          {"sampler", "euler"}};  // PNDM (the SD1 default) runs one step more than asked
}

std::string submit(httplib::Client& c, const Json& body, int* position = nullptr) {
  auto r = post_json(c, "/api/jobs", body);
  EXPECT_TRUE(r);
  if (!r) return "";
  EXPECT_EQ(r->status, 202) << r->body;
  Json j = parse_json(r);
  if (position) *position = j.value("position", -1);
  return j.value("id", "");
}

Json job(httplib::Client& c, const std::string& id) { return parse_json(c.Get(("/api/jobs/" + id).c_str())); }

std::string wait_state(httplib::Client& c, const std::string& id, std::chrono::milliseconds timeout) {
  std::string state;
  eventually(
      [&] {
        state = job(c, id).value("state", "");
        return state == "done" || state == "failed" || state == "cancelled";
      },
      timeout);
  return state;
}

bool wait_running_step(httplib::Client& c, const std::string& id, int min_step) {
  return eventually(
      [&] {
        Json j = job(c, id);
        return j.value("state", "") == "running" && j.value("step", 0) >= min_step;
      },
      std::chrono::seconds(60));
}

class ServerApiTest : public TinyServerTest {};

TEST_F(ServerApiTest, ModelsListedWithFamilyLicenceAndDefaultsBeforeLoading) {
  start();
  auto c = server_->client();
  auto r = c->Get("/api/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  Json models = parse_json(r);
  ASSERT_EQ(models.size(), 2u) << r->body;
  EXPECT_EQ(models[0]["id"], "tiny-sd1");
  EXPECT_EQ(models[0]["family"], "sd1");
  EXPECT_EQ(models[0]["license"], "CreativeML OpenRAIL-M");
  // diffusers' default size: unet sample_size (16 in the tiny fixtures) x 8.
  EXPECT_EQ(models[0]["defaults"]["width"], 128);
  EXPECT_EQ(models[0]["defaults"]["sampler"], "pndm");
  EXPECT_EQ(models[0]["loaded"], false);
  EXPECT_EQ(models[1]["id"], "tiny-sd2");
  EXPECT_EQ(models[1]["family"], "sd2");
  EXPECT_EQ(models[1]["license"], "CreativeML Open RAIL++-M");
  EXPECT_EQ(models[1]["defaults"]["width"], 128);
  EXPECT_EQ(models[1]["defaults"]["sampler"], "ddim");
  for (const Json& m : models) {
    const std::string hash = m["hash"];
    // Known only from the hash cache before the first load; never a partial value.
    EXPECT_TRUE(hash.empty() || hash.size() == 10u) << hash;
  }
}

TEST_F(ServerApiTest, NativeJobEventsPreviewImagesAndHistory) {
  start();
  auto c = server_->client();
  // A first job keeps the worker busy so the second is still queued when its stream opens.
  const std::string first = submit(*c, small_job("tiny-sd1", 6, 1));
  int position = -1;
  const std::string id = submit(*c, small_job("tiny-sd1", 5, 42), &position);
  ASSERT_FALSE(id.empty());
  EXPECT_GE(position, 1);

  std::string stream;
  auto sse = server_->client();
  auto r = sse->Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
    stream.append(data, n);
    return stream.find("event: done") == std::string::npos;  // stop reading at `done`
  });
  EXPECT_NE(stream.find("event: state"), std::string::npos);
  EXPECT_NE(stream.find("event: progress"), std::string::npos) << stream.substr(0, 2000);
  EXPECT_NE(stream.find("event: preview"), std::string::npos);
  EXPECT_NE(stream.find("data:image/png;base64,"), std::string::npos);
  ASSERT_NE(stream.find("event: done"), std::string::npos) << stream.substr(0, 2000);
  EXPECT_NE(stream.find("\"total_steps\":5"), std::string::npos);

  Json j = job(*c, id);
  EXPECT_EQ(j["state"], "done");
  EXPECT_EQ(j["step"], 5);
  EXPECT_EQ(j["seed"], 42);
  EXPECT_EQ(j["position"], 0);
  ASSERT_EQ(j["images"].size(), 1u);
  const std::string file = j["images"][0]["file"];
  EXPECT_EQ(j["images"][0]["url"], "/images/" + file);
  EXPECT_EQ(j["images"][0]["width"], 64);

  auto prev = c->Get(("/api/jobs/" + id + "/preview.png").c_str());
  ASSERT_TRUE(prev);
  EXPECT_EQ(prev->status, 200);
  EXPECT_EQ(prev->get_header_value("Content-Type"), "image/png");
  EXPECT_TRUE(is_png(prev->body));
  EXPECT_EQ(read_png(reinterpret_cast<const uint8_t*>(prev->body.data()), prev->body.size()).width, 64 / 8);

  // The stored PNG, byte for byte, with its A1111 parameters chunk.
  auto img = c->Get(("/images/" + file).c_str());
  ASSERT_TRUE(img);
  ASSERT_EQ(img->status, 200);
  EXPECT_EQ(img->body, read_file(data_ + "/images/" + file));
  PngText text = read_png_text(reinterpret_cast<const uint8_t*>(img->body.data()), img->body.size());
  ASSERT_TRUE(text.count("parameters"));
  EXPECT_NE(text["parameters"].find("a red cube"), std::string::npos);
  EXPECT_NE(text["parameters"].find("Steps: 5"), std::string::npos) << text["parameters"];
  EXPECT_NE(text["parameters"].find("Seed: 42"), std::string::npos) << text["parameters"];
  EXPECT_NE(text["parameters"].find("Size: 64x64"), std::string::npos) << text["parameters"];
  PngImage decoded = read_png(reinterpret_cast<const uint8_t*>(img->body.data()), img->body.size());
  EXPECT_EQ(decoded.width, 64);

  // The queue listing has both jobs, and the gallery both finished ones.
  EXPECT_EQ(wait_state(*c, first, std::chrono::seconds(60)), "done");
  Json jobs = parse_json(c->Get("/api/jobs"));
  std::set<std::string> ids;
  for (const Json& e : jobs) ids.insert(e["id"].get<std::string>());
  EXPECT_TRUE(ids.count(id) && ids.count(first));
  Json hist = parse_json(c->Get("/api/history?limit=10"));
  EXPECT_EQ(hist["total"], 2);
  ASSERT_EQ(hist["items"].size(), 2u);
  EXPECT_EQ(hist["items"][0]["id"], id);  // newest first
  EXPECT_EQ(hist["items"][0]["images"][0]["file"], file);
  EXPECT_EQ(hist["items"][0]["params"]["steps"], 5);

  // After the first load the hash is known and shown in the title.
  Json models = parse_json(c->Get("/api/models"));
  EXPECT_EQ(models[0]["loaded"], true);
  const std::string hash = models[0]["hash"];
  EXPECT_EQ(hash.size(), 10u);
  EXPECT_EQ(models[0]["title"], "tiny-sd1 [" + hash + "]");
  EXPECT_EQ(text["parameters"].find("Model hash: " + hash) != std::string::npos, true) << text["parameters"];
}

TEST_F(ServerApiTest, CancelRunningJobAndUnknownJob) {
  start();
  auto c = server_->client();
  const std::string id = submit(*c, small_job("tiny-sd1", kLongSteps, 7));
  ASSERT_TRUE(wait_running_step(*c, id, 1));
  auto r = c->Post(("/api/jobs/" + id + "/cancel").c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(parse_json(r)["cancelled"], true);
  EXPECT_EQ(wait_state(*c, id, std::chrono::seconds(20)), "cancelled");
  EXPECT_LT(job(*c, id)["step"].get<int>(), kLongSteps);
  // A cancelled job leaves nothing in the gallery.
  EXPECT_EQ(parse_json(c->Get("/api/history"))["total"], 0);
  // Cancelling again is a no-op; unknown ids are 404.
  EXPECT_EQ(parse_json(c->Post(("/api/jobs/" + id + "/cancel").c_str()))["cancelled"], false);
  EXPECT_EQ(c->Post("/api/jobs/0123abcd/cancel")->status, 404);
  EXPECT_EQ(c->Get("/api/jobs/0123abcd")->status, 404);
  EXPECT_EQ(c->Get("/api/jobs/0123abcd/events")->status, 404);
}

TEST_F(ServerApiTest, QueueIsFifoWithPositionsAndQueuedCancel) {
  start();
  auto c = server_->client();
  std::vector<std::string> ids;
  std::vector<int> positions;
  for (int i = 0; i < 5; ++i) {
    int pos = -1;
    ids.push_back(submit(*c, small_job("tiny-sd1", 8, 100 + i), &pos));
    positions.push_back(pos);
  }
  // Each job is queued behind the earlier ones: positions never go down, and
  // the queued jobs hold positions 1, 2, 3... in submission order.
  for (int i = 1; i < 5; ++i) EXPECT_GE(positions[i], positions[i - 1]) << i;
  EXPECT_GE(positions[4], 3);
  // The queued jobs of one snapshot (GET /api/jobs is taken under the queue's
  // lock: a job finishing between two single-job requests would shift the
  // positions) hold positions 1, 2, 3... in submission order.
  auto queued_positions = [&] {
    std::vector<std::pair<std::string, int>> q;
    for (const Json& j : parse_json(c->Get("/api/jobs")))
      if (j["state"] == "queued") q.emplace_back(j["id"].get<std::string>(), j["position"].get<int>());
    return q;
  };
  auto expect_consecutive_in_submission_order = [&](const std::vector<std::pair<std::string, int>>& q) {
    size_t next_id = 0;
    for (size_t k = 0; k < q.size(); ++k) {
      EXPECT_EQ(q[k].second, static_cast<int>(k) + 1) << q[k].first;
      while (next_id < ids.size() && ids[next_id] != q[k].first) ++next_id;
      EXPECT_LT(next_id, ids.size()) << q[k].first << " out of submission order";
    }
  };
  const auto before_cancel = queued_positions();
  expect_consecutive_in_submission_order(before_cancel);
  EXPECT_GE(before_cancel.size(), 3u);  // at least 3 still queued: jobs take about a second
  Json third = job(*c, ids[2]);
  ASSERT_EQ(third["state"], "queued");
  EXPECT_EQ(parse_json(c->Post(("/api/jobs/" + ids[2] + "/cancel").c_str()))["cancelled"], true);
  Json cancelled = job(*c, ids[2]);
  EXPECT_EQ(cancelled["state"], "cancelled");
  EXPECT_EQ(cancelled["position"], 0);
  // The jobs behind it moved up: still consecutive from 1, without it.
  const auto after_cancel = queued_positions();
  expect_consecutive_in_submission_order(after_cancel);
  for (const auto& [id, pos] : after_cancel) EXPECT_NE(id, ids[2]);

  // Record the order in which jobs finish.
  std::vector<std::string> finished_order;
  std::set<std::string> seen;
  ASSERT_TRUE(eventually(
      [&] {
        for (const std::string& id : ids) {
          if (seen.count(id)) continue;
          const std::string st = job(*c, id).value("state", "");
          if (st == "done" || st == "failed" || st == "cancelled") {
            seen.insert(id);
            finished_order.push_back(id);
          }
        }
        return seen.size() == ids.size();
      },
      std::chrono::seconds(90)));
  std::vector<std::string> done_order;
  for (const std::string& id : finished_order) {
    if (id != ids[2]) done_order.push_back(id);
  }
  EXPECT_EQ(done_order, (std::vector<std::string>{ids[0], ids[1], ids[3], ids[4]}));
  for (int i : {0, 1, 3, 4}) EXPECT_EQ(job(*c, ids[i])["state"], "done") << i;
  EXPECT_EQ(job(*c, ids[2])["state"], "cancelled");
  EXPECT_EQ(job(*c, ids[2])["step"], 0);  // never ran
  EXPECT_EQ(parse_json(c->Get("/api/history"))["total"], 4);
}

TEST_F(ServerApiTest, DevicesReportCpuAndQueue) {
  start();
  auto c = server_->client();
  auto r = c->Get("/api/devices");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  Json d = parse_json(r);
  EXPECT_GT(d["cpu"]["ram_total"].get<double>(), 0);
  EXPECT_TRUE(d["gpus"].is_array());
  EXPECT_TRUE(d["gpu_available"].is_boolean());
  EXPECT_FALSE(d["devices"].is_null());
  EXPECT_EQ(d["queue"], 0);
}

TEST_F(ServerApiTest, HistorySurvivesRestart) {
  std::string id, file, bytes;
  {
    start();
    auto c = server_->client();
    id = submit(*c, small_job("tiny-sd1", 2, 5));
    ASSERT_EQ(wait_state(*c, id, std::chrono::seconds(60)), "done");
    Json j = job(*c, id);
    file = j["images"][0]["file"];
    bytes = c->Get(("/images/" + file).c_str())->body;
    server_.reset();
  }
  start();
  auto c = server_->client();
  Json hist = parse_json(c->Get("/api/history"));
  ASSERT_EQ(hist["total"], 1);
  EXPECT_EQ(hist["items"][0]["id"], id);
  EXPECT_EQ(hist["items"][0]["prompt"], "a red cube");
  EXPECT_EQ(hist["items"][0]["images"][0]["seed"], 5);
  auto img = c->Get(("/images/" + file).c_str());
  ASSERT_TRUE(img);
  EXPECT_EQ(img->status, 200);
  EXPECT_EQ(img->body, bytes);
  EXPECT_EQ(c->Get("/api/history?limit=0")->status, 400);
  EXPECT_EQ(c->Get("/api/history?limit=x")->status, 400);
  EXPECT_EQ(parse_json(c->Get("/api/history?offset=1"))["items"].size(), 0u);
}

TEST_F(ServerApiTest, A1111Txt2ImgBatchSizeAndCount) {
  start();
  auto c = server_->client();
  Json body = {{"prompt", "a blue sphere"}, {"negative_prompt", "blurry"}, {"seed", 1000}, {"steps", 2},
               {"width", 64}, {"height", 64}, {"batch_size", 2}, {"n_iter", 2}, {"sampler_name", "Euler a"},
               {"cfg_scale", 6}};
  auto r = post_json(*c, "/sdapi/v1/txt2img", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json out = parse_json(r);
  ASSERT_EQ(out["images"].size(), 4u);
  ASSERT_TRUE(out["info"].is_string());
  Json info = Json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["all_seeds"], (std::vector<int64_t>{1000, 1001, 1002, 1003}));
  EXPECT_EQ(info["seed"], 1000);
  EXPECT_EQ(info["sampler_name"], "Euler a");
  EXPECT_EQ(info["sd_model_name"], "tiny-sd1");
  EXPECT_EQ(info["batch_size"], 2);
  EXPECT_EQ(info["negative_prompt"], "blurry");
  ASSERT_EQ(info["infotexts"].size(), 4u);
  EXPECT_NE(info["infotexts"][3].get<std::string>().find("Seed: 1003"), std::string::npos);
  EXPECT_EQ(out["parameters"]["n_iter"], 2);
  for (const Json& b64 : out["images"]) {
    std::vector<uint8_t> png = server::base64_decode(b64.get<std::string>());
    PngImage im = read_png(png.data(), png.size());
    EXPECT_EQ(im.width, 64);
    EXPECT_EQ(im.height, 64);
  }
  // Different seeds give different images.
  EXPECT_NE(out["images"][0], out["images"][1]);
}

TEST_F(ServerApiTest, A1111ModelsSamplersSchedulersAndOptionsSwitchModel) {
  start();
  auto c = server_->client();
  Json samplers = parse_json(c->Get("/sdapi/v1/samplers"));
  std::set<std::string> names;
  for (const Json& s : samplers) names.insert(s["name"].get<std::string>());
  for (const char* want : {"Euler a", "Euler", "DPM++ 2M", "DDIM", "LMS", "UniPC"}) EXPECT_TRUE(names.count(want)) << want;
  Json schedulers = parse_json(c->Get("/sdapi/v1/schedulers"));
  std::set<std::string> sched;
  for (const Json& s : schedulers) sched.insert(s["name"].get<std::string>());
  EXPECT_TRUE(sched.count("karras"));

  // Switch to SD2 through options, by id; txt2img then uses it.
  auto r = post_json(*c, "/sdapi/v1/options", {{"sd_model_checkpoint", "tiny-sd2"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json opts = parse_json(c->Get("/sdapi/v1/options"));
  const std::string title2 = opts["sd_model_checkpoint"];
  EXPECT_EQ(title2.rfind("tiny-sd2 [", 0), 0u) << title2;  // loaded: "name [hash]"
  Json t2i = {{"prompt", "x"}, {"steps", 2}, {"width", 64}, {"height", 64}, {"seed", 3}};
  r = post_json(*c, "/sdapi/v1/txt2img", t2i);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["sd_model_name"], "tiny-sd2");

  // sd-models titles are "name [hash]" once the hash is known.
  Json models = parse_json(c->Get("/sdapi/v1/sd-models"));
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[1]["model_name"], "tiny-sd2");
  const std::string hash2 = models[1]["hash"];
  EXPECT_EQ(models[1]["title"], "tiny-sd2 [" + hash2 + "]");
  EXPECT_EQ(models[1]["sha256"].get<std::string>().substr(0, 10), hash2);
  EXPECT_EQ(title2, models[1]["title"]);
  EXPECT_EQ(info["sd_model_hash"], hash2);

  // Switch back by title (what Open WebUI sends).
  r = post_json(*c, "/sdapi/v1/options", {{"sd_model_checkpoint", models[0]["title"]}});
  ASSERT_EQ(r->status, 200) << r->body;
  r = post_json(*c, "/sdapi/v1/txt2img", t2i);
  ASSERT_EQ(r->status, 200) << r->body;
  info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["sd_model_name"], "tiny-sd1");
  models = parse_json(c->Get("/sdapi/v1/sd-models"));
  EXPECT_EQ(models[0]["title"], "tiny-sd1 [" + models[0]["hash"].get<std::string>() + "]");

  // An unknown checkpoint is a 404 and changes nothing.
  r = post_json(*c, "/sdapi/v1/options", {{"sd_model_checkpoint", "no-such-model"}});
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/options"))["sd_model_checkpoint"], models[0]["title"]);
}

TEST_F(ServerApiTest, A1111ProgressAndInterrupt) {
  start();
  auto c = server_->client();
  Json idle = parse_json(c->Get("/sdapi/v1/progress"));
  EXPECT_EQ(idle["progress"], 0.0);
  EXPECT_TRUE(idle["current_image"].is_null());

  int t2i_status = 0;
  std::string t2i_body;
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    auto c2 = server_->client();
    auto r = post_json(*c2, "/sdapi/v1/txt2img",
                       {{"prompt", "long"}, {"steps", kLongSteps}, {"width", 64}, {"height", 64}, {"seed", 9}});
    if (r) {
      t2i_status = r->status;
      t2i_body = r->body;
    }
    returned = true;
  });
  Json prog;
  const bool saw = eventually(
      [&] {
        prog = parse_json(c->Get("/sdapi/v1/progress"));
        return prog.is_object() && prog["progress"].get<double>() > 0 && !prog["current_image"].is_null();
      },
      std::chrono::seconds(60));
  EXPECT_TRUE(saw) << prog.dump();
  if (saw) {
    EXPECT_GT(prog["progress"].get<double>(), 0.0);
    EXPECT_LT(prog["progress"].get<double>(), 1.0);
    EXPECT_EQ(prog["state"]["sampling_steps"], kLongSteps);
    EXPECT_GE(prog["state"]["sampling_step"].get<int>(), 1);
    std::vector<uint8_t> png = server::base64_decode(prog["current_image"].get<std::string>());
    EXPECT_EQ(read_png(png.data(), png.size()).width, 64 / 8);  // latent-resolution approximation
    Json skip = parse_json(c->Get("/sdapi/v1/progress?skip_current_image=true"));
    EXPECT_TRUE(skip["current_image"].is_null());
  }
  EXPECT_FALSE(returned);
  auto r = c->Post("/sdapi/v1/interrupt");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(eventually([&] { return returned.load(); }, std::chrono::seconds(20)));
  waiter.join();
  EXPECT_EQ(t2i_status, 200);
  // As A1111: the partial image of the interrupted step (tests/server/test_a1111_compat.cpp checks it further).
  EXPECT_EQ(Json::parse(t2i_body, nullptr, false)["images"].size(), 1u);
  Json jobs = parse_json(c->Get("/api/jobs"));
  ASSERT_FALSE(jobs.empty());
  EXPECT_EQ(jobs[0]["state"], "done");
  EXPECT_LT(jobs[0]["step"].get<int>(), kLongSteps);
}

TEST_F(ServerApiTest, OpenAIGenerationsModelsAndErrors) {
  start();
  auto c = server_->client();
  Json models = parse_json(c->Get("/v1/models"));
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][0]["id"], "tiny-sd1");
  EXPECT_EQ(models["data"][0]["object"], "model");

  auto r = post_json(*c, "/v1/images/generations",
                     {{"prompt", "a lamp"}, {"n", 2}, {"size", "64x64"}, {"steps", 2}, {"response_format", "b64_json"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  Json out = parse_json(r);
  EXPECT_TRUE(out["created"].is_number_integer());
  ASSERT_EQ(out["data"].size(), 2u);
  for (const Json& d : out["data"]) {
    std::vector<uint8_t> png = server::base64_decode(d["b64_json"].get<std::string>());
    PngImage im = read_png(png.data(), png.size());
    EXPECT_EQ(im.width, 64);
    EXPECT_EQ(im.height, 64);
  }

  r = post_json(*c, "/v1/images/generations",
                {{"prompt", "a lamp"}, {"model", "tiny-sd2"}, {"size", "64x64"}, {"steps", 2}, {"response_format", "url"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  out = parse_json(r);
  ASSERT_EQ(out["data"].size(), 1u);
  const std::string url = out["data"][0]["url"];
  const std::string prefix = "http://127.0.0.1:" + std::to_string(server_->port());
  ASSERT_EQ(url.rfind(prefix, 0), 0u) << url;
  auto img = c->Get(url.substr(prefix.size()).c_str());
  ASSERT_TRUE(img);
  EXPECT_EQ(img->status, 200);
  EXPECT_TRUE(is_png(img->body));

  auto expect_error = [&](const Json& body, int status, const char* param) {
    auto e = post_json(*c, "/v1/images/generations", body);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->status, status) << body.dump() << " -> " << e->body;
    Json j = parse_json(e);
    ASSERT_TRUE(j.contains("error")) << e->body;
    const Json& err = j["error"];
    EXPECT_TRUE(err["message"].is_string() && !err["message"].get<std::string>().empty()) << e->body;
    EXPECT_EQ(err["type"], "invalid_request_error") << e->body;
    EXPECT_TRUE(err.contains("param") && err.contains("code")) << e->body;
    if (param) {
      EXPECT_EQ(err["param"], param) << e->body;
    }
  };
  expect_error({{"prompt", "x"}, {"n", 0}}, 400, "n");
  expect_error({{"prompt", "x"}, {"n", 11}}, 400, "n");
  expect_error({{"prompt", "x"}, {"n", "two"}}, 400, "n");
  expect_error({{"prompt", "x"}, {"n", 10000000000LL}}, 400, "n");
  expect_error({{"n", 1}}, 400, "prompt");
  expect_error({{"prompt", 5}}, 400, "prompt");
  expect_error({{"prompt", "x"}, {"size", "big"}}, 400, "size");
  expect_error({{"prompt", "x"}, {"size", "100x100"}}, 400, "size");
  expect_error({{"prompt", "x"}, {"size", "64x64junk"}}, 400, "size");
  expect_error({{"prompt", "x"}, {"size", 64}}, 400, "size");
  expect_error({{"prompt", "x"}, {"response_format", "gif"}}, 400, "response_format");
  expect_error({{"prompt", "x"}, {"response_format", nullptr}, {"size", "63x64"}}, 400, "size");
  expect_error({{"prompt", "x"}, {"model", "no-such-model"}}, 404, "model");
  auto bad = c->Post("/v1/images/generations", "{not json", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_TRUE(parse_json(bad)["error"]["message"].is_string());
}

TEST_F(ServerApiTest, BadInputIs4xxWithMessageAndServerStaysUp) {
  start();
  auto c = server_->client();
  auto expect_status = [&](const char* path, const std::string& body, int status, const std::string& needle) {
    auto r = c->Post(path, body, "application/json");
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, status) << path << " " << body << " -> " << r->body;
    Json j = parse_json(r);
    ASSERT_TRUE(j.is_object()) << r->body;
    const std::string detail = j.value("detail", "");
    EXPECT_NE(detail.find(needle), std::string::npos) << body << " -> " << r->body;
  };
  const std::string base = R"("model":"tiny-sd1","prompt":"x","width":64,"height":64)";
  expect_status("/api/jobs", "{bad json", 400, "JSON");
  expect_status("/api/jobs", "[1,2]", 400, "JSON object");
  expect_status("/api/jobs", "{" + base + R"(,"steps":"ten"})", 422, "steps");
  expect_status("/api/jobs", "{" + base + R"(,"steps":10000000000})", 422, "steps");
  expect_status("/api/jobs", "{" + base + R"(,"steps":1000000})", 422, "steps");
  expect_status("/api/jobs", "{" + base + R"(,"steps":2.5})", 422, "steps");
  expect_status("/api/jobs", "{" + base + R"(,"seed":1e400})", 400, "JSON");  // not valid JSON for the parser
  expect_status("/api/jobs", "{" + base + R"(,"cfg_scale":"high"})", 422, "cfg_scale");
  expect_status("/api/jobs", "{" + base + R"(,"images":1000})", 422, "images");
  expect_status("/api/jobs", R"({"model":"tiny-sd1","width":65,"height":64})", 422, "multiple of 8");
  expect_status("/api/jobs", R"({"model":"tiny-sd1","width":99999999,"height":64})", 422, "width");
  expect_status("/api/jobs", "{" + base + R"(,"sampler":"nope"})", 404, "Sampler not found");
  expect_status("/api/jobs", "{" + base + R"(,"schedule":"weird"})", 422, "schedule");
  expect_status("/api/jobs", R"({"model":"no-such-model"})", 404, "not found");
  expect_status("/api/jobs", R"({"model":5})", 422, "model");
  expect_status("/sdapi/v1/txt2img", "{bad", 400, "JSON");
  expect_status("/sdapi/v1/txt2img", R"({"sampler_name":"nope","width":64,"height":64,"steps":1})", 404,
                "Sampler not found");
  expect_status("/sdapi/v1/txt2img", R"({"steps":"ten"})", 422, "steps");
  expect_status("/sdapi/v1/txt2img", R"({"width":60,"height":64,"steps":1})", 422, "multiple of 8");
  expect_status("/sdapi/v1/txt2img", R"({"batch_size":100000000000,"steps":1})", 422, "batch_size");
  expect_status("/sdapi/v1/txt2img", R"({"override_settings":5})", 422, "override_settings");
  expect_status("/sdapi/v1/txt2img", R"({"override_settings":{"sd_model_checkpoint":"nope"},"steps":1})", 404,
                "not found");
  expect_status("/sdapi/v1/options", R"({"sd_model_checkpoint":7})", 422, "sd_model_checkpoint");

  // Path traversal and unknown files are plain 404s.
  std::filesystem::create_directories(data_ + "/images");
  for (const char* path : {"/images/../history.db", "/images/..%2Fhistory.db", "/images/%2e%2e/history.db",
                           "/images/nope.png", "/static/..", "/static/../history.db", "/static/%2e%2e%2fhistory.db",
                           "/api/jobs/zz", "/no/such/route"}) {
    auto r = c->Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 404) << path << " -> " << r->body.substr(0, 200);
    EXPECT_EQ(r->body.find("SQLite"), std::string::npos) << path;
  }
  // Oversized bodies are refused.
  auto big = c->Post("/api/jobs", std::string(2 << 20, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);

  // Nothing was queued and the server still answers.
  EXPECT_EQ(parse_json(c->Get("/api/jobs")).size(), 0u);
  auto ok = c->Get("/api/models");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  auto page = c->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
}

TEST_F(ServerApiTest, ApiKeyRequired) {
  server::ServerOptions o = tiny_options(models_, data_);
  o.api_key = "s3cret";
  start(o);
  auto c = server_->client();
  auto r = c->Get("/api/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(parse_json(r).value("detail", "").find("API key"), std::string::npos) << r->body;
  EXPECT_EQ(c->Get("/sdapi/v1/sd-models")->status, 401);
  EXPECT_EQ(post_json(*c, "/v1/images/generations", {{"prompt", "x"}})->status, 401);
  EXPECT_EQ(c->Get("/api/models", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(c->Get("/api/models", {{"Authorization", "Bearer s3cret"}})->status, 200);
  EXPECT_EQ(c->Get("/api/models", {{"X-API-Key", "s3cret"}})->status, 200);
  c->set_bearer_token_auth("s3cret");
  EXPECT_EQ(c->Get("/sdapi/v1/sd-models")->status, 200);
}

TEST(ServerOptionsTest, NonLoopbackHostNeedsApiKey) {
  server::ServerOptions o;
  o.host = "0.0.0.0";
  try {
    o.validate();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("--api-key"), std::string::npos);
  }
  o.api_key = "k";
  EXPECT_NO_THROW(o.validate());
  server::ServerOptions local;
  for (const char* h : {"127.0.0.1", "localhost", "::1"}) {
    local.host = h;
    EXPECT_NO_THROW(local.validate()) << h;
  }
  local.host = "192.168.1.5";
  EXPECT_THROW(local.validate(), Error);
  local.host = "127.0.0.1";
  local.port = 70000;
  EXPECT_THROW(local.validate(), Error);
  server::ServerOptions with_bad_host;
  with_bad_host.host = "10.0.0.1";
  EXPECT_THROW(server::Server{with_bad_host}, Error);
}

TEST_F(ServerApiTest, ClientHangingUpCancelsSynchronousJob) {
  start();
  auto c = server_->client();
  {
    auto impatient = server_->client(/*read_timeout_s=*/1);
    auto r = post_json(*impatient, "/sdapi/v1/txt2img",
                       {{"prompt", "long"}, {"steps", kLongSteps}, {"width", 64}, {"height", 64}, {"seed", 9}});
    EXPECT_FALSE(r);  // timed out: the client closes its socket
  }
  Json jobs = parse_json(c->Get("/api/jobs"));
  ASSERT_EQ(jobs.size(), 1u);
  const std::string id = jobs[0]["id"];
  EXPECT_EQ(wait_state(*c, id, std::chrono::seconds(20)), "cancelled");
  // Same for the OpenAI endpoint.
  {
    auto impatient = server_->client(1);
    EXPECT_FALSE(post_json(*impatient, "/v1/images/generations",
                           {{"prompt", "long"}, {"steps", kLongSteps}, {"size", "64x64"}}));
  }
  jobs = parse_json(c->Get("/api/jobs"));
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(wait_state(*c, jobs[0]["id"], std::chrono::seconds(20)), "cancelled");
}

TEST_F(ServerApiTest, StopWhileStreamingAndWaitingReturnsPromptly) {
  start();
  auto c = server_->client();
  const std::string id = submit(*c, small_job("tiny-sd1", kLongSteps, 1));
  const std::string queued = submit(*c, small_job("tiny-sd1", 4, 2));
  ASSERT_TRUE(wait_running_step(*c, id, 1));
  std::atomic<bool> sse_ended{false}, a1111_ended{false};
  std::thread sse([&] {
    auto s = server_->client();
    s->Get(("/api/jobs/" + queued + "/events").c_str(), [&](const char*, size_t) { return true; });
    sse_ended = true;
  });
  std::thread sync([&] {
    auto s = server_->client();
    post_json(*s, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", 4}, {"width", 64}, {"height", 64}});
    a1111_ended = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  server_->stop();  // joins run(): must not wait for the 600-step job, the stream or the waiter
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 15.0);
  sse.join();
  sync.join();
  EXPECT_TRUE(sse_ended && a1111_ended);
  server_.reset();
  // The cancelled jobs left no history and no stray PNGs.
  start();
  auto c2 = server_->client();
  EXPECT_EQ(parse_json(c2->Get("/api/history"))["total"], 0);
  EXPECT_TRUE(fs::is_empty(data_ + "/images"));
}

// The real binary: `diffuse serve --port 0` prints its URL; SIGTERM cancels the
// running job at its next step and exits 0 with a consistent history.
TEST_F(ServerApiTest, BinaryServesAndExitsCleanlyOnSigterm) {
  int err_pipe[2];
  ASSERT_EQ(pipe(err_pipe), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(err_pipe[1], 2);
    close(err_pipe[0]);
    close(err_pipe[1]);
    execl(DIFFUSE_BINARY, DIFFUSE_BINARY, "serve", "--port", "0", "--models", models_.c_str(), "--data-dir",
          data_.c_str(), "--no-hf-cache", "--threads", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(err_pipe[1]);
  FILE* err = fdopen(err_pipe[0], "r");
  std::string all;
  int port = 0;
  char line[1024];
  while (port == 0 && fgets(line, sizeof line, err)) {
    all += line;
    std::sscanf(line, "diffuse serve: http://127.0.0.1:%d/", &port);
  }
  ASSERT_GT(port, 0) << all;
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  auto r = c.Get("/api/models");
  ASSERT_TRUE(r);
  // The built-in demo model first, then the two fixture models of --models.
  const Json listed = parse_json(r);
  ASSERT_EQ(listed.size(), 3u) << r->body;
  EXPECT_EQ(listed[0]["id"], "demo");
  const std::string done = submit(c, small_job("tiny-sd1", 2, 11));
  EXPECT_EQ(wait_state(c, done, std::chrono::seconds(60)), "done");
  const std::string id = submit(c, small_job("tiny-sd1", kLongSteps, 12));
  ASSERT_TRUE(wait_running_step(c, id, 1));
  const auto t0 = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  while (fgets(line, sizeof line, err)) all += line;
  fclose(err);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 20.0);
  ASSERT_TRUE(WIFEXITED(status)) << all;
  EXPECT_EQ(WEXITSTATUS(status), 0) << all;
  EXPECT_NE(all.find("stopped"), std::string::npos) << all;
  // The finished job is in the history, the cancelled one is not.
  start();
  auto c2 = server_->client();
  Json hist = parse_json(c2->Get("/api/history"));
  ASSERT_EQ(hist["total"], 1);
  EXPECT_EQ(hist["items"][0]["id"], done);
  size_t pngs = 0;
  for (const auto& f : fs::directory_iterator(data_ + "/images")) pngs += f.path().extension() == ".png";
  EXPECT_EQ(pngs, 1u);
}

}  // namespace
}  // namespace diffuse::testing
