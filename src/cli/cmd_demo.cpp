// diffuse demo-eval: the prompt-adherence check of the built-in demo model.
//
// Generates one image per held-out caption of models/demo/eval_captions.json
// (captions whose attribute combination never appeared in training) and reads
// each image back with the scorer of pipeline/demo_model.h: background
// colour, shape colour, position and shape. Prints the percentages; with
// --min-* thresholds it exits 1 when one is missed (CI uses this).
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/progress_bar.h"
#include "core/thread_pool.h"
#include "io/png.h"
#include "pipeline/demo_model.h"
#include "pipeline/pipeline.h"
#include "sys/device_select.h"

namespace fs = std::filesystem;

namespace diffuse::cli {
namespace {

struct DemoEvalOptions {
  std::string model = "demo", cases, grid, sampler, device = "cpu";
  int steps = 20, threads = 0;
  float cfg_scale = 7.5f;
  int64_t seed = 1234;
  double min_background = -1, min_colour = -1, min_position = -1, min_shape = -1;
  bool json = false;
};

// The first cols*rows images side by side (all the same size).
void write_grid(const std::string& path, const std::vector<Image>& images, int cols, int rows) {
  const int w = images.at(0).width, h = images.at(0).height;
  const int n = std::min<int>(cols * rows, static_cast<int>(images.size()));
  rows = (n + cols - 1) / cols;
  std::vector<uint8_t> grid(static_cast<size_t>(cols * w) * rows * h * 3, 0);
  for (int i = 0; i < n; ++i) {
    const int gx = (i % cols) * w, gy = (i / cols) * h;
    for (int y = 0; y < h; ++y) {
      const uint8_t* src = images[i].rgb.data() + static_cast<size_t>(y) * w * 3;
      uint8_t* dst = grid.data() + (static_cast<size_t>(gy + y) * cols * w + gx) * 3;
      std::copy(src, src + static_cast<size_t>(w) * 3, dst);
    }
  }
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  write_png(path, cols * w, rows * h, grid.data(), {});
}

int run_demo_eval(const DemoEvalOptions& o) {
  install_signal_handlers();
  if (o.threads > 0) set_num_threads(o.threads);
  const std::string model_path = resolve_model(o.model);
  const std::string cases_path =
      o.cases.empty() ? (fs::path(model_path) / "eval_captions.json").string() : o.cases;
  const DemoEvalSet set = load_demo_eval_set(cases_path);

  LoadOptions load;
  const sys::DeviceChoice device = sys::select_device(o.device);
  std::fprintf(stderr, "%s\n", device.line.c_str());
  load.device = device.device;
  std::unique_ptr<Pipeline> pipe = Pipeline::load(model_path, load);

  GenerationParams p = demo_eval_params(set, o.steps, o.seed);
  p.cfg_scale = o.cfg_scale;
  p.sampler = o.sampler;
  p.validate();
  ProgressBar bar("demo-eval");
  GenerationResult r = pipe->generate(p, [&](const StepProgress& s) {
    bar.update(s.step, s.total_steps);
    return interrupted();
  });
  bar.finish();

  AdherenceScore score;
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < set.cases.size(); ++i) {
    const DemoCase& c = set.cases[i];
    const Image& im = r.images.at(i);
    SceneReading got = read_scene(im.rgb.data(), im.width, im.height, set.palette);
    score.add(c, got);
    rows.push_back({{"caption", c.caption}, {"seed", im.seed},
                    {"expected", {{"background", c.background}, {"colour", c.colour},
                                  {"position", c.position}, {"shape", c.shape}}},
                    {"read", {{"background", got.background}, {"colour", got.colour},
                              {"position", got.position}, {"shape", got.shape}}}});
    if (!o.json) {
      auto mark = [](const std::string& want, const std::string& have) {
        return want == have ? want : want + "!=" + (have.empty() ? "none" : have);
      };
      std::printf("%-70s bg %-16s colour %-16s pos %-16s shape %s\n", c.caption.c_str(),
                  mark(c.background, got.background).c_str(), mark(c.colour, got.colour).c_str(),
                  mark(c.position, got.position).c_str(), mark(c.shape, got.shape).c_str());
    }
  }
  if (!o.grid.empty()) write_grid(o.grid, r.images, 4, 4);

  struct Check {
    const char* name;
    int hits;
    double min;
  };
  const Check checks[] = {{"background", score.background, o.min_background},
                          {"colour", score.colour, o.min_colour},
                          {"position", score.position, o.min_position},
                          {"shape", score.shape, o.min_shape}};
  bool ok = true;
  for (const Check& c : checks) ok = ok && (c.min < 0 || score.percent(c.hits) >= c.min);
  if (o.json) {
    nlohmann::json j = {{"images", score.images}, {"steps", o.steps}, {"cfg_scale", o.cfg_scale},
                        {"seed", o.seed}, {"cases", rows}, {"passed", ok},
                        {"seconds", r.timings.total_s}};
    for (const Check& c : checks) j["percent"][c.name] = score.percent(c.hits);
    std::cout << j.dump(2) << std::endl;
  } else {
    std::printf("\nadherence over %d held-out captions (%d steps, cfg %.1f, seeds %lld..):\n", score.images, o.steps,
                o.cfg_scale, static_cast<long long>(o.seed));
    for (const Check& c : checks) {
      std::printf("  %-10s %5.1f%%%s\n", c.name, score.percent(c.hits),
                  c.min < 0 ? "" : (score.percent(c.hits) >= c.min ? "  (>= min, ok)" : "  (BELOW the minimum)"));
    }
    std::printf("generation took %.2f s for %d images\n", r.timings.total_s, score.images);
  }
  return ok ? kExitOk : kExitRuntime;
}

}  // namespace

Action add_demo_eval(CLI::App& app) {
  auto o = std::make_shared<DemoEvalOptions>();
  CLI::App* c = app.add_subcommand("demo-eval", "Check the demo model's prompt adherence on held-out captions");
  c->footer(
      "Makes one image per caption of eval_captions.json (30 captions whose attribute combinations were held out\n"
      "of training) and reads background colour, shape colour, position and shape back from the pixels.\n"
      "Example: diffuse demo-eval --min-background 80 --min-colour 70 --min-position 70 --grid grid.png");
  c->add_option("-m,--model", o->model, "The model (default: demo, the built-in demo model)");
  c->add_option("--cases", o->cases, "Evaluation set (default: MODEL/eval_captions.json)");
  c->add_option("--steps", o->steps, "Denoising steps (default: 20)")->check(CLI::Range(1, 1000));
  c->add_option("--cfg-scale", o->cfg_scale, "Guidance scale (default: 7.5)");
  c->add_option("--sampler", o->sampler, "Sampler (default: the model's scheduler)");
  c->add_option("-s,--seed", o->seed, "Seed of the first image; image i uses SEED+i (default: 1234)");
  c->add_option("--grid", o->grid, "Write the first 16 images as a 4x4 PNG grid");
  c->add_option("--min-background", o->min_background, "Exit 1 when background adherence is below this percent");
  c->add_option("--min-colour", o->min_colour, "Exit 1 when shape-colour adherence is below this percent");
  c->add_option("--min-position", o->min_position, "Exit 1 when position adherence is below this percent");
  c->add_option("--min-shape", o->min_shape, "Exit 1 when shape adherence is below this percent");
  c->add_option("--device", o->device,
                "auto, cpu, cuda or cuda:N (default: cpu, where the README's scores were measured)");
  c->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  c->add_flag("--json", o->json, "Print the per-caption readings and percentages as JSON");
  return [o]() { return run_demo_eval(*o); };
}

}  // namespace diffuse::cli
