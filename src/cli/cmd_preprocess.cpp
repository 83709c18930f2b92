// diffuse preprocess MODULE IN.png OUT.png: a ControlNet preprocessor on a PNG
// (image/control_preprocess.h; docs/controlnet.md "Preprocessors"), e.g.
//   diffuse preprocess canny photo.png edges.png --low 100 --high 200
// --list prints the preprocessors with their sliders (the unavailable ones with the reason).
#include <cstdio>
#include <memory>
#include <string>

#include "cli/cli.h"
#include "core/error.h"
#include "image/control_preprocess.h"
#include "io/file_io.h"
#include "io/png.h"

namespace diffuse::cli {
namespace {

struct PreprocessCliOptions {
  std::string module, input, output, mask;
  double resolution = -1, low = -1, high = -1, rate = -1, sigma = -1, threshold_a = -1, threshold_b = -1;
  int64_t seed = 0;
  bool list = false;
};

std::vector<uint8_t> read_bytes(const std::string& path, const char* what) {
  try {
    const std::shared_ptr<MappedFile> f = MappedFile::open(path);
    return std::vector<uint8_t>(f->data(), f->data() + f->size());
  } catch (const Error& e) {
    throw_error(ErrorCode::kIo, std::string(what) + " " + path + ": " + e.what());
  }
}

void print_slider(const char* flag, const std::optional<image::PreprocessorSlider>& s) {
  if (s) std::printf("  %s %s (%g, %g to %g)", flag, s->name.c_str(), s->value, s->min, s->max);
}

int list_preprocessors() {
  for (const image::PreprocessorInfo& p : image::control_preprocessors()) {
    if (!p.available) continue;
    std::printf("%-16s", p.name.c_str());
    print_slider("--res", p.resolution);
    print_slider("-a", p.threshold_a);
    print_slider("-b", p.threshold_b);
    if (p.needs_mask) std::printf("  --mask MASK.png (white = repaint)");
    std::printf("\n");
  }
  std::printf("\nNot available (they run a network, an annotator model, that Diffuse does not implement):\n ");
  for (const image::PreprocessorInfo& p : image::control_preprocessors())
    if (!p.available) std::printf(" %s", p.name.c_str());
  std::printf("\n");
  return kExitOk;
}

int run_preprocess(const PreprocessCliOptions& o) {
  if (o.list) return list_preprocessors();
  DIFFUSE_CHECK_ARG(!o.module.empty() && !o.input.empty() && !o.output.empty(),
                    "usage: diffuse preprocess MODULE IN.png OUT.png (diffuse preprocess --list shows the modules)");
  const image::PreprocessorInfo* info = image::find_control_preprocessor(o.module);
  DIFFUSE_CHECK_ARG(info != nullptr, "unknown preprocessor '" + o.module + "'; the available ones are " +
                                         image::control_preprocessor_list());
  // Named flags are the sliders of the modules that have them; -a / -b work for any.
  image::PreprocessOptions po;
  po.resolution = o.resolution;
  po.threshold_a = o.threshold_a;
  po.threshold_b = o.threshold_b;
  auto take = [&](double v, double* slot, const char* flag, bool applies) {
    if (v < 0) return;
    DIFFUSE_CHECK_ARG(applies, std::string(flag) + " does not apply to '" + info->name + "'");
    *slot = v;
  };
  take(o.low, &po.threshold_a, "--low", info->name == "canny");
  take(o.high, &po.threshold_b, "--high", info->name == "canny");
  take(o.rate, &po.threshold_a, "--rate", info->name == "tile_resample");
  take(o.sigma, &po.threshold_a, "--sigma", info->name == "blur_gaussian");
  DIFFUSE_CHECK_ARG(o.seed >= 0 && o.seed <= 0xFFFFFFFFll, "--seed must be between 0 and 4294967295");
  po.seed = static_cast<uint32_t>(o.seed);
  const std::vector<uint8_t> bytes = read_bytes(o.input, "the input image");
  PngImage png = read_png(bytes.data(), bytes.size());
  const image::Rgb input{png.width, png.height, std::move(png.rgb)};
  if (!o.mask.empty()) {
    DIFFUSE_CHECK_ARG(info->needs_mask, "--mask applies to the inpaint preprocessors only, not '" + info->name + "'");
    const std::vector<uint8_t> m = read_bytes(o.mask, "--mask");
    po.mask = image::decode_mask(m.data(), m.size(), image::MaskConvention::kLuminance);
    if (po.mask.width != input.width || po.mask.height != input.height)
      po.mask = image::resize(po.mask, input.width, input.height);
  }
  const image::ControlMap map = image::preprocess_control(info->name, input, po);
  const image::Rgb out = map.mask.empty() ? map.image : image::inpaint_display(map.image, map.mask);
  write_png(o.output, out.width, out.height, out.px.data());
  std::fprintf(stderr, "%s: %dx%d -> %s (%dx%d)\n", info->name.c_str(), input.width, input.height, o.output.c_str(),
               out.width, out.height);
  return kExitOk;
}

}  // namespace

Action add_preprocess(CLI::App& app) {
  auto o = std::make_shared<PreprocessCliOptions>();
  CLI::App* c = app.add_subcommand("preprocess", "Make a ControlNet control map from an image (canny edges, ...)");
  c->footer(
      "Examples:\n"
      "  diffuse preprocess canny photo.png edges.png --low 100 --high 200\n"
      "  diffuse preprocess canny photo.png edges.png --res 768     (short side 768)\n"
      "  diffuse preprocess tile_resample photo.png tile.png --rate 2\n"
      "  diffuse preprocess shuffle photo.png shuffled.png --seed 7\n"
      "  diffuse preprocess --list\n"
      "Names and sliders as sd-webui-controlnet's (docs/controlnet.md); `diffuse generate --preprocess NAME`\n"
      "runs the same step on --control-image before the generation.");
  c->add_option("module", o->module, "The preprocessor: none, canny, invert, tile_resample, blur_gaussian, shuffle, "
                                     "inpaint, inpaint_only");
  c->add_option("input", o->input, "The input PNG");
  c->add_option("output", o->output, "Where to write the control map (PNG)");
  c->add_option("--res", o->resolution, "processor_res: the short side the image is scaled to (64-2048, default 512)");
  c->add_option("--low", o->low, "canny: low threshold (1-255, default 100)");
  c->add_option("--high", o->high, "canny: high threshold (1-255, default 200)");
  c->add_option("--rate", o->rate, "tile_resample: down-sampling rate (1-8, default 1: unchanged below 1.1)");
  c->add_option("--sigma", o->sigma, "blur_gaussian: sigma (0.01-64, default 9)");
  c->add_option("-a,--threshold-a", o->threshold_a, "The module's first slider (the API's threshold_a)");
  c->add_option("-b,--threshold-b", o->threshold_b, "The module's second slider (the API's threshold_b)");
  c->add_option("--seed", o->seed, "shuffle: the random seed (numpy's np.random.seed; default 0)");
  c->add_option("--mask", o->mask, "inpaint / inpaint_only: the mask PNG (white = repaint); the output shows the "
                                   "masked area at half brightness");
  c->add_flag("--list", o->list, "List the preprocessors and their sliders");
  return [o]() { return run_preprocess(*o); };
}

}  // namespace diffuse::cli
