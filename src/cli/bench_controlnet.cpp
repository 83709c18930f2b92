#include "cli/bench_controlnet.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/controlnet.h"
#include "models/unet.h"

namespace fs = std::filesystem;

namespace diffuse::cli {
namespace {

UNetConfig published_unet(Family f) {
  switch (f) {
    case Family::kSD1: return UNetConfig::sd15();
    case Family::kSD2: return UNetConfig::sd21();
    case Family::kSDXL: return UNetConfig::sdxl_base();
  }
  return UNetConfig::sd15();
}

// A control image with structure (a grid of lines, as an edge map has); the values do not change the speed.
image::Rgb grid_image(int width, int height) {
  image::Rgb im{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3, 0)};
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      if (x % 32 == 0 || y % 32 == 0)
        for (int c = 0; c < 3; ++c) im.px[(static_cast<size_t>(y) * width + x) * 3 + c] = 255;
  return im;
}

}  // namespace

RandomControlNets::RandomControlNets(Family family, int count, int width, int height) {
  DIFFUSE_CHECK_ARG(count >= 0 && count <= 2, "--controlnet takes 0, 1 or 2 (ControlNets per step), got " +
                                                   std::to_string(count));
  if (count == 0) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::string templ = (fs::temp_directory_path() / "diffuse-bench-controlnet-XXXXXX").string();
  DIFFUSE_CHECK(mkdtemp(templ.data()) != nullptr, ErrorCode::kIo,
                "bench --controlnet: cannot make a temporary folder in " + fs::temp_directory_path().string());
  dir_ = templ;
  const ControlNetConfig config = ControlNetConfig::from_unet(published_unet(family));
  // Stored in fp16 (as published ControlNets are); the pipeline converts to its dtype on load.
  const std::string path = dir_ + "/random_controlnet_" + family_name(family) + ".safetensors";
  save_safetensors(path, ControlNet::random_weights(config, 7, DType::kF16));
  write_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int i = 0; i < count; ++i) {
    ControlNetUnit u;
    u.path = path;
    u.image = grid_image(width, height);
    u.weight = 1.0f;
    units_.push_back(std::move(u));
  }
}

RandomControlNets::~RandomControlNets() {
  if (dir_.empty()) return;
  std::error_code ec;
  fs::remove_all(dir_, ec);  // best effort: a destructor does not throw
}

}  // namespace diffuse::cli
