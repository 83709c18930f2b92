// Progress that tells the truth (issue 29, part 4): a job goes through named
// phases (loading, encoding, denoising, decoding, saving, done) in this order;
// the SSE stream names them ("label") and never starts with "Step 0/0";
// A1111's /sdapi/v1/progress says the phase in state.job (and textinfo); an
// A1111 request without steps runs the model's default steps and says so in
// `info`; a model folder's README.md and example prompts reach /api/models.
#include <atomic>
#include <fstream>
#include <regex>
#include <thread>

#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

Json small_job(int steps) {
  return {{"model", "tiny-sd1"}, {"prompt", "a red cube"}, {"steps", steps}, {"width", 64},
          {"height", 64},        {"seed", 3},              {"sampler", "euler"}};
}

// The events of an SSE text: (name, data) in order.
std::vector<std::pair<std::string, Json>> parse_events(const std::string& text) {
  std::vector<std::pair<std::string, Json>> out;
  std::regex re(R"(event: (\w+)\ndata: ([^\n]*)\n\n)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    out.emplace_back((*it)[1].str(), Json::parse((*it)[2].str(), nullptr, false));
  }
  return out;
}

int phase_rank(const std::string& phase) {
  static const std::vector<std::string> order = {"queued", "loading", "encoding", "denoising", "decoding", "saving", "done"};
  auto it = std::find(order.begin(), order.end(), phase);
  return it == order.end() ? -1 : static_cast<int>(it - order.begin());
}

class ProgressPhasesTest : public TinyServerTest {};

TEST_F(ProgressPhasesTest, StreamAndJobNameEveryPhaseInOrder) {
  start();
  auto c = server_->client();
  auto r = post_json(*c, "/api/jobs", small_job(4));
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = parse_json(r)["id"];
  std::string stream;
  auto sse = server_->client();
  sse->Get(("/api/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
    stream.append(data, n);
    return stream.find("event: done") == std::string::npos;
  });
  const auto events = parse_events(stream);
  ASSERT_FALSE(events.empty()) << stream;
  // The first event names a phase before denoising: never "Step 0/0".
  const Json& first = events.front().second;
  EXPECT_EQ(events.front().first, "state");
  EXPECT_LE(phase_rank(first.value("phase", "")), phase_rank("encoding")) << first.dump();
  EXPECT_GE(phase_rank(first.value("phase", "")), 0) << first.dump();
  int last_rank = -1;
  bool saw_step4 = false;
  for (const auto& [name, data] : events) {
    if (name != "state" && name != "progress") continue;
    const std::string label = data.value("label", "");
    EXPECT_EQ(label.find("0/0"), std::string::npos) << label;
    EXPECT_FALSE(label.empty()) << name << " " << data.dump();
    const int rank = phase_rank(data.value("phase", ""));
    EXPECT_GE(rank, last_rank) << "phase went back: " << data.dump();  // one pass: never backwards
    last_rank = std::max(last_rank, rank);
    if (label == "Denoising step 4/4") saw_step4 = true;
    if (data.value("phase", "") == "denoising") {
      EXPECT_EQ(label, "Denoising step " + std::to_string(data["step"].get<int>()) + "/4");
    }
  }
  EXPECT_EQ(last_rank, phase_rank("done"));
  EXPECT_TRUE(saw_step4 || stream.find("\"phase\":\"decoding\"") != std::string::npos) << stream.substr(0, 3000);

  // The job's phase log: every phase once, in order, with rising start times.
  Json j = parse_json(c->Get(("/api/jobs/" + id).c_str()));
  EXPECT_EQ(j["phase"], "done");
  EXPECT_EQ(j["label"], "Done");
  std::vector<std::string> phases;
  double prev = -1;
  for (const Json& p : j["phases"]) {
    phases.push_back(p["phase"]);
    EXPECT_GE(p["at_s"].get<double>(), prev);
    prev = p["at_s"].get<double>();
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"loading", "encoding", "denoising", "decoding", "saving", "done"}));

  // The page's A1111-style download names: ?download= makes it an attachment under that name.
  const std::string url = j["images"][0]["url"];
  auto plain = c->Get(url.c_str());
  ASSERT_EQ(plain->status, 200);
  EXPECT_EQ(plain->get_header_value("Content-Disposition").rfind("inline; ", 0), 0u);
  auto named = c->Get((url + "?download=00007-3.png").c_str());
  ASSERT_EQ(named->status, 200);
  EXPECT_EQ(named->get_header_value("Content-Disposition"), "attachment; filename=\"00007-3.png\"");
  EXPECT_EQ(named->body, plain->body);
  EXPECT_EQ(c->Get((url + "?download=..%2Fx.png").c_str())->status, 400);
  EXPECT_EQ(c->Get((url + "?download=a%22b.png").c_str())->status, 400);
}

TEST_F(ProgressPhasesTest, A1111ProgressSaysThePhaseInStateJob) {
  start();
  auto c = server_->client();
  std::atomic<bool> finished{false};
  std::thread waiter([&] {
    auto w = server_->client();
    post_json(*w, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", 300}, {"width", 64}, {"height", 64}});
    finished = true;
  });
  Json seen;
  const bool denoising = eventually(
      [&] {
        seen = parse_json(c->Get("/sdapi/v1/progress?skip_current_image=true"));
        return seen.is_object() && seen["state"]["sampling_step"].get<int>() >= 2;
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(denoising) << seen.dump();
  // state.job names the kind and the phase; textinfo the phase alone.
  const std::string job = seen["state"]["job"];
  const std::string text = seen["textinfo"];
  std::smatch m;
  ASSERT_TRUE(std::regex_match(job, m, std::regex(R"(txt2img: Denoising step (\d+)/300)"))) << job;
  EXPECT_GE(std::stoi(m[1]), 2);
  EXPECT_TRUE(std::regex_match(text, std::regex(R"(Denoising step \d+/300)"))) << text;
  EXPECT_EQ(post_json(*c, "/sdapi/v1/interrupt", Json::object())->status, 200);
  waiter.join();
  EXPECT_TRUE(finished);
  EXPECT_TRUE(eventually([&] { return parse_json(c->Get("/sdapi/v1/progress"))["state"]["job"] == ""; },
                         std::chrono::seconds(10)));
  EXPECT_TRUE(parse_json(c->Get("/sdapi/v1/progress"))["textinfo"].is_null());
}

TEST_F(ProgressPhasesTest, A1111RequestWithoutStepsRunsTheModelsDefault) {
  start();
  auto c = server_->client();
  // The tiny SD1 fixture: PNDM's folder, whose default is 50 steps; the model
  // list says so, and a request without steps runs that many (not a constant).
  const Json models = parse_json(c->Get("/api/models"));
  const int default_steps = models[0]["defaults"]["steps"];
  auto r = post_json(*c, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"width", 64}, {"height", 64}});
  ASSERT_EQ(r->status, 200) << r->body;
  Json info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["steps"], default_steps);
  ASSERT_EQ(info["notes"].size(), 1u) << info.dump();
  EXPECT_EQ(info["notes"][0], "steps: " + std::to_string(default_steps) + ", the model's default (the request gave none)");
  // Steps given: no note.
  r = post_json(*c, "/sdapi/v1/txt2img", {{"prompt", "x"}, {"steps", 2}, {"width", 64}, {"height", 64}});
  ASSERT_EQ(r->status, 200) << r->body;
  info = Json::parse(parse_json(r)["info"].get<std::string>());
  EXPECT_EQ(info["steps"], 2);
  EXPECT_TRUE(info["notes"].empty());
}

TEST_F(ProgressPhasesTest, ModelReadmeAndExamplePromptsReachTheModelList) {
  // A model folder of our own: the tiny fixture's files, a README.md and
  // example prompts in model_index.json's _diffuse_defaults.
  const fs::path src = fs::path(fixtures_dir()) / "sd1" / "model";
  const fs::path dir = fs::path(temp_dir()) / "shapes";
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(src)) {
    if (e.path().filename() != "model_index.json") fs::create_directory_symlink(e.path(), dir / e.path().filename());
  }
  Json index = Json::parse(std::ifstream(src / "model_index.json"));
  index["_diffuse_defaults"] = {{"example_prompts", {"a red circle on a blue background", "a small star"}}};
  std::ofstream(dir / "model_index.json") << index.dump();
  std::ofstream(dir / "README.md") << "# Shapes\nDraws shapes.\n";
  server::ServerOptions o = tiny_options(dir.parent_path().string(), data_);
  start(o);
  auto c = server_->client();
  const Json models = parse_json(c->Get("/api/models"));
  ASSERT_EQ(models.size(), 1u) << models.dump();
  EXPECT_EQ(models[0]["example_prompts"], Json({"a red circle on a blue background", "a small star"}));
  EXPECT_EQ(models[0]["readme"], "/api/models/shapes/readme");
  auto r = c->Get("/api/models/shapes/readme");
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "# Shapes\nDraws shapes.\n");
  EXPECT_EQ(c->Get("/api/models/nothing/readme")->status, 404);
}

}  // namespace
}  // namespace diffuse::testing
