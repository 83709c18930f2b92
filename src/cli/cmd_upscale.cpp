// diffuse upscale: A1111's Extras "Upscale" on PNG files (adapters/upscalers.h):
// Lanczos, Nearest, or an ESRGAN / Real-ESRGAN model from the upscaler
// folders (models/ESRGAN) or a path. The output keeps the input's PNG text
// (its "parameters") and adds A1111's "postprocessing" chunk:
//   Postprocess upscale by: 4, Postprocess upscaler: 4x-UltraSharp
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "adapters/upscalers.h"
#include "cli/cli.h"
#include "core/error.h"
#include "io/file_io.h"
#include "io/png.h"
#include "sys/device_select.h"

namespace diffuse::cli {
namespace {

struct UpscaleOptions {
  std::vector<std::string> inputs;
  std::string output;
  double scale = 4.0;
  int width = 0, height = 0;
  bool no_crop = false;
  std::string model = "Lanczos", model_2 = "None";
  double model_2_visibility = 0.0;
  std::vector<std::string> upscaler_dirs;
  int tile = 192, tile_overlap = 16;
  std::string device = "auto";
  bool list = false;
};

std::string default_output(const std::string& input) {
  std::filesystem::path p(input);
  return (p.parent_path() / (p.stem().string() + "-upscaled.png")).string();
}

int run_upscale(const UpscaleOptions& o) {
  sys::parse_device_spec(o.device);  // a bad value is a usage error before anything runs
  UpscalerLibrary lib(o.upscaler_dirs);
  if (o.list) {
    for (const UpscalerInfo& u : lib.list())
      std::printf("%-28s %-8s x%d  %s\n", u.name.c_str(), u.kind.c_str(), u.scale, u.path.c_str());
    return kExitOk;
  }
  DIFFUSE_CHECK_ARG(!o.inputs.empty(), "[upscale] give an input PNG (diffuse upscale IN.png --model NAME)");
  DIFFUSE_CHECK_ARG(o.output.empty() || o.inputs.size() == 1, "[upscale] -o/--output takes one input image");
  DIFFUSE_CHECK_ARG((o.width == 0) == (o.height == 0), "[upscale] --width and --height go together");
  lib.set_allow_paths(true);
  lib.set_tiling({o.tile, o.tile_overlap});
  ExtrasUpscale x;
  x.resize_mode = o.width > 0 ? 1 : 0;
  x.scale_by = o.scale;
  if (o.width > 0) {
    x.to_width = o.width;
    x.to_height = o.height;
  }
  x.crop = !o.no_crop;
  x.upscaler_1 = o.model;
  x.upscaler_2 = o.model_2;
  x.upscaler_2_visibility = o.model_2_visibility;
  x.validate();
  UpscalerInfo u;  // an unknown name or a bad file fails before any work
  try {
    u = lib.find(o.model);
    if (x.upscaler_2 != "None") lib.find(x.upscaler_2);
  } catch (const Error& e) {
    // An unknown --model is a usage error (exit 2), like an unknown --sampler.
    if (e.code() == ErrorCode::kNotFound) throw_error(ErrorCode::kInvalidArgument, e.what());
    throw;
  }
  Device device = Device::kCPU;
  if (u.kind == "esrgan") {
    const sys::DeviceChoice choice = sys::select_device(o.device);
    std::fprintf(stderr, "%s\n", choice.line.c_str());
    device = choice.device;
  }
  for (const std::string& in_path : o.inputs) {
    const std::shared_ptr<MappedFile> file = MappedFile::open(in_path);
    PngImage png = read_png(file->data(), file->size());
    PngText text = read_png_text(file->data(), file->size());
    image::Rgb in{png.width, png.height, std::move(png.rgb)};
    const auto t0 = std::chrono::steady_clock::now();
    ExtrasResult r = run_extras_upscale(lib, in, x, device);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (interrupted()) throw_error(ErrorCode::kCancelled, "interrupted");
    if (!r.infotext.empty()) text["postprocessing"] = r.infotext;  // A1111 keeps "parameters" and adds this
    const std::string out = o.output.empty() ? default_output(in_path) : o.output;
    write_png(out, r.image.width, r.image.height, r.image.px.data(), text);
    std::printf("%s: %dx%d -> %dx%d (%s, %.2f s)\n", out.c_str(), in.width, in.height, r.image.width, r.image.height,
                r.infotext.empty() ? "unchanged" : r.infotext.c_str(), secs);
  }
  return kExitOk;
}

}  // namespace

Action add_upscale(CLI::App& app) {
  auto o = std::make_shared<UpscaleOptions>();
  CLI::App* c = app.add_subcommand("upscale", "Upscale PNG images with Lanczos or an ESRGAN / Real-ESRGAN model (A1111 Extras)");
  c->footer(
      "Examples:\n"
      "  diffuse upscale photo.png --scale 4 --model 4x-UltraSharp      (models/ESRGAN/4x-UltraSharp.pth)\n"
      "  diffuse upscale photo.png -o big.png --scale 2 --model ~/RealESRGAN_x4plus.pth --tile 256\n"
      "  diffuse upscale photo.png --width 1920 --height 1080 --model Lanczos   (cover, then centre-crop)\n"
      "  diffuse upscale --list                                         (the upscalers found)\n"
      "A model runs at its own factor (repeated, up to 3 times, while the image is smaller than the\n"
      "target), then Lanczos makes the exact size; \"Scale by\" sizes are int(side * scale) rounded down\n"
      "to a multiple of 8, as A1111 makes them. Exit codes: 0 ok, 1 runtime error, 2 usage error.");
  c->add_option("input", o->inputs, "Input PNG file(s)");
  c->add_option("-o,--output", o->output, "Output PNG (default: INPUT-upscaled.png beside the input)");
  c->add_option("--scale", o->scale, "Scale by this factor (default: 4)")->check(CLI::Range(0.01, 16.0));
  c->add_option("--width", o->width, "Scale to this width (with --height) instead of --scale")->check(CLI::Range(1, 16384));
  c->add_option("--height", o->height, "Scale to this height (with --width)")->check(CLI::Range(1, 16384));
  c->add_flag("--no-crop", o->no_crop, "With --width/--height: keep the covering size instead of centre-cropping");
  c->add_option("--model", o->model,
                "Upscaler: Lanczos, Nearest, a model's name (its file stem under --upscaler-dir) or a path to a "
                ".pth / .safetensors ESRGAN / Real-ESRGAN file (default: Lanczos)");
  c->add_option("--model-2", o->model_2, "A second upscaler blended in (A1111's Upscaler 2; default: None)");
  c->add_option("--model-2-visibility", o->model_2_visibility, "Weight of --model-2 in the blend, 0-1 (default: 0)")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--upscaler-dir", o->upscaler_dirs,
                "Folder of upscaler models, searched recursively; repeatable (default: models/ESRGAN)");
  c->add_option("--tile", o->tile,
                "Tile edge in input pixels for model upscalers, 0 = whole image in one pass (default: 192)");
  c->add_option("--tile-overlap", o->tile_overlap, "Context pixels around each tile (default: 16)");
  c->add_option("--device", o->device, sys::kDeviceHelp);
  c->add_flag("--list", o->list, "List the upscalers found and exit");
  return [o] { return run_upscale(*o); };
}

}  // namespace diffuse::cli
