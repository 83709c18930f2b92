// Live previews by TAESD in the server (pipeline/live_preview.h, docs/previews.md):
// with a TAESD decoder in the preview folder a job's preview is the decoder's
// image of the step's latents (checked against the model called directly on
// the same latents, from the same generation run in-process); without one
// it is the cheap approximation; A1111's show_progress_type switches between
// them, and /sdapi/v1/progress shows the TAESD image.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "io/png.h"
#include "models/taesd.h"
#include "pipeline/live_preview.h"
#include "server/base64.h"
#include "server_test_util.h"

namespace diffuse::testing {
namespace {

namespace fs = std::filesystem;

// The width-8 TAESD decoder of the model goldens (tools/reference/taesd_goldens.py),
// whose random weights are scaled to make images over most of [0, 1].
std::string golden_decoder() { return std::string(DIFFUSE_SOURCE_DIR) + "/tests/models/data/taesd/taesd_decoder.pth"; }

constexpr int kSteps = 3;

Json job_body(int steps) {
  return {{"model", "tiny-sd1"}, {"prompt", "a red cube"}, {"steps", steps}, {"width", 64}, {"height", 64},
          {"seed", 42},          {"cfg_scale", 5.0},       {"sampler", "euler"}};
}

// The same generation in-process: its final latents (those of the last step's
// callback) and its image.
GenerationResult reference_run() {
  std::unique_ptr<Pipeline> pipe = Pipeline::load(fixtures_dir() + "/sd1/model");
  GenerationParams p;
  p.prompt = "a red cube";
  p.steps = kSteps;
  p.width = p.height = 64;
  p.seed = 42;
  p.cfg_scale = 5.0f;
  p.sampler = "euler";
  return pipe->generate(p);
}

class TaesdPreview : public TinyServerTest {
 protected:
  // Runs job_body(steps) to the end; the last preview and the stored image.
  void run_job(PngImage* preview, PngImage* image) {
    auto c = server_->client();
    auto r = post_json(*c, "/api/jobs", job_body(kSteps));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string id = parse_json(r)["id"];
    Json j;
    ASSERT_TRUE(eventually(
        [&] {
          j = parse_json(c->Get(("/api/jobs/" + id).c_str()));
          return j.value("state", "") == "done" || j.value("state", "") == "failed";
        },
        std::chrono::seconds(120)));
    ASSERT_EQ(j["state"], "done") << j.dump();
    auto prev = c->Get(("/api/jobs/" + id + "/preview.png").c_str());
    ASSERT_TRUE(prev);
    ASSERT_EQ(prev->status, 200);
    *preview = read_png(reinterpret_cast<const uint8_t*>(prev->body.data()), prev->body.size());
    const std::string file = j["images"][0]["file"];
    const std::string bytes = read_file(data_ + "/images/" + file);
    *image = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }

  server::ServerOptions options(const std::string& taesd_dir) {
    server::ServerOptions o = tiny_options(models_, data_);
    o.preview.taesd_dirs = {taesd_dir};
    o.preview.max_overhead = 0;  // every step: the last preview is the last step's
    return o;
  }
};

TEST_F(TaesdPreview, PreviewIsTheTaesdDecodeOfTheStepLatents) {
  const std::string dir = temp_dir();
  fs::copy_file(golden_decoder(), dir + "/taesd_decoder.pth");
  start(options(dir));
  PngImage preview, image;
  run_job(&preview, &image);

  const GenerationResult ref = reference_run();
  ASSERT_EQ(ref.images.size(), 1u);
  ASSERT_EQ(image.rgb, ref.images[0].rgb) << "the in-process run differs from the server's job";
  const TaesdDecoder dec = TaesdDecoder::load(golden_decoder());
  int w = 0, h = 0;
  const std::vector<uint8_t> expected = LivePreviewer::taesd_rgb(dec, ref.final_latents, 0, &w, &h);
  EXPECT_EQ(w, 64);  // 8x the 8x8 latents, not the cheap approximation's 8x8
  EXPECT_EQ(preview.width, w);
  EXPECT_EQ(preview.height, h);
  EXPECT_EQ(preview.rgb, expected);
  // Not a flat image: the decoder's output spans the range.
  const auto [lo, hi] = std::minmax_element(preview.rgb.begin(), preview.rgb.end());
  EXPECT_GT(*hi - *lo, 100) << int(*lo) << " " << int(*hi);
}

TEST_F(TaesdPreview, WithoutADecoderThePreviewIsTheCheapOne) {
  start(options(temp_dir()));  // an empty folder
  PngImage preview, image;
  run_job(&preview, &image);
  const GenerationResult ref = reference_run();
  int w = 0, h = 0;
  const std::vector<uint8_t> expected = Pipeline::preview_rgb(ref.final_latents, 0, Family::kSD1, &w, &h);
  EXPECT_EQ(w, 8);
  EXPECT_EQ(preview.width, 8);
  EXPECT_EQ(preview.rgb, expected);
}

TEST_F(TaesdPreview, A1111OptionsChooseTheMethod) {
  const std::string dir = temp_dir();
  fs::copy_file(golden_decoder(), dir + "/taesd_decoder.pth");
  start(options(dir));
  auto c = server_->client();
  Json o = parse_json(c->Get("/sdapi/v1/options"));
  EXPECT_EQ(o["show_progress_type"], "Approx NN");  // auto
  EXPECT_EQ(o["show_progress_every_n_steps"], 1);
  EXPECT_EQ(o["live_previews_enable"], true);

  // "Full" is refused with a reason and changes nothing; so is an unknown name or period.
  auto r = post_json(*c, "/sdapi/v1/options", {{"show_progress_type", "Full"}, {"show_progress_every_n_steps", 5}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422);
  EXPECT_NE(r->body.find("'Full'"), std::string::npos) << r->body;
  r = post_json(*c, "/sdapi/v1/options", {{"show_progress_type", "Fancy"}});
  EXPECT_EQ(r->status, 422);
  EXPECT_NE(r->body.find("Approx cheap"), std::string::npos) << r->body;
  r = post_json(*c, "/sdapi/v1/options", {{"show_progress_every_n_steps", -2}});
  EXPECT_EQ(r->status, 422);
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/options"))["show_progress_every_n_steps"], 1);

  r = post_json(*c, "/sdapi/v1/options", {{"show_progress_type", "Approx cheap"}});
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(parse_json(c->Get("/sdapi/v1/options"))["show_progress_type"], "Approx cheap");
  PngImage preview, image;
  run_job(&preview, &image);
  EXPECT_EQ(preview.width, 8);  // cheap although a decoder is there

  r = post_json(*c, "/sdapi/v1/options", {{"show_progress_type", "TAESD"}});
  ASSERT_EQ(r->status, 200) << r->body;
  run_job(&preview, &image);
  EXPECT_EQ(preview.width, 64);
}

// /sdapi/v1/progress's current_image during a run is the TAESD preview.
TEST_F(TaesdPreview, ProgressCurrentImageIsTaesd) {
  const std::string dir = temp_dir();
  fs::copy_file(golden_decoder(), dir + "/taesd_decoder.pth");
  start(options(dir));
  auto c = server_->client();
  auto r = post_json(*c, "/api/jobs", job_body(400));
  ASSERT_EQ(r->status, 202);
  const std::string id = parse_json(r)["id"];
  PngImage current;
  EXPECT_TRUE(eventually(
      [&] {
        Json p = parse_json(c->Get("/sdapi/v1/progress"));
        if (!p["current_image"].is_string()) return false;
        const std::vector<uint8_t> png = server::base64_decode(p["current_image"].get<std::string>());
        current = read_png(png.data(), png.size());
        return true;
      },
      std::chrono::seconds(60)));
  EXPECT_EQ(current.width, 64);
  EXPECT_EQ(current.height, 64);
  c->Post(("/api/jobs/" + id + "/cancel").c_str());
}

// The period and the time ceiling (LivePreviewer::Session::due).
TEST(LivePreviewSchedule, PeriodAndCeiling) {
  PreviewOptions o;
  o.method = PreviewMethod::kCheap;
  o.every_n_steps = 2;
  o.max_overhead = 0.1;
  LivePreviewer previewer(o);
  LivePreviewer::Session s = previewer.start(Family::kSD1, Device::kCPU);
  StepProgress p;
  p.latents = Tensor::zeros({1, 4, 8, 8}, DType::kF32);
  p.total_steps = 10;
  p.step = 1;
  p.elapsed_s = 100;
  EXPECT_FALSE(s.due(p));  // not a multiple of 2
  p.step = 2;
  EXPECT_TRUE(s.due(p));   // nothing spent yet, cost unknown
  const LivePreview made = s.make(p);
  EXPECT_EQ(made.method, PreviewMethod::kCheap);
  EXPECT_GT(made.seconds, 0);
  p.step = 4;
  EXPECT_TRUE(s.due(p));             // a tiny cost against 100 s of denoising
  p.elapsed_s = made.seconds * 1.5;  // previews would be most of the time
  EXPECT_FALSE(s.due(p));
  o.enabled = false;
  previewer.set_options(o);
  p.elapsed_s = 100;
  EXPECT_FALSE(previewer.start(Family::kSD1, Device::kCPU).due(p));
  o.enabled = true;
  o.every_n_steps = 0;
  previewer.set_options(o);
  EXPECT_FALSE(previewer.start(Family::kSD1, Device::kCPU).due(p));
}

// A broken decoder file is reported and the cheap approximation is used.
TEST(LivePreviewSchedule, BrokenDecoderFallsBackWithANote) {
  const std::string dir = temp_dir();
  {
    std::ofstream(dir + "/taesd_decoder.safetensors") << "garbage";
  }
  PreviewOptions o;
  o.taesd_dirs = {dir};
  LivePreviewer previewer(o);
  EXPECT_EQ(previewer.decoder(Family::kSD1, Device::kCPU), nullptr);
  EXPECT_NE(previewer.note(Family::kSD1).find("taesd_decoder.safetensors"), std::string::npos)
      << previewer.note(Family::kSD1);
  EXPECT_EQ(previewer.start(Family::kSD1, Device::kCPU).method(), PreviewMethod::kCheap);
  // SDXL looks for taesdxl_decoder, and says so.
  EXPECT_EQ(previewer.decoder(Family::kSDXL, Device::kCPU), nullptr);
  EXPECT_NE(previewer.note(Family::kSDXL).find("taesdxl_decoder"), std::string::npos);
}

}  // namespace
}  // namespace diffuse::testing
