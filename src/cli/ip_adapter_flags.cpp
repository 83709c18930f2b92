#include "cli/ip_adapter_flags.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/file_io.h"
#include "io/png.h"
#include "pipeline/controlnet_library.h"

namespace diffuse::cli {

void add_ip_adapter_flags(CLI::App* c, IpAdapterFlags& f) {
  const std::string group = "IP-Adapter";
  c->add_option("--ip-adapter", f.model,
                "An IP-Adapter (ip-adapter_sd15, -plus_sd15, _sdxl, _sdxl_vit-h, -plus_sdxl_vit-h, the face "
                "variants; .safetensors or .bin), or its name in --controlnet-dir. Its CLIP image encoder is the "
                "image_encoder/ folder beside it (h94/IP-Adapter's layout) or --ip-image-encoder")
      ->group(group);
  c->add_option("--ip-image", f.images,
                "A reference image (PNG) for --ip-adapter. Repeatable: the images' tokens are concatenated")
      ->group(group)
      ->allow_extra_args(false);
  c->add_option("--ip-scale", f.scale, "The image prompt's scale on every cross-attention (default 1, 0 to 2)")
      ->group(group);
  c->add_option("--ip-block-scales", f.block_scales,
                "Per-block scales as diffusers' set_ip_adapter_scale, JSON: e.g. '{\"up\": {\"block_0\": [0.0, 1.0, "
                "0.0]}}' (style only, SDXL) or '{\"down\": {\"block_2\": [0.0, 1.0]}, \"up\": {\"block_0\": [0.0, "
                "1.0, 0.0]}}' (style and layout); unnamed blocks get 0. Replaces --ip-scale")
      ->group(group);
  c->add_option("--ip-image-encoder", f.encoder,
                "The CLIP vision encoder: a diffusers image_encoder folder (config.json + model.safetensors) or a "
                "weights file (default: image_encoder/ beside the adapter, or ../models/image_encoder)")
      ->group(group);
}

void apply_ip_adapter_flags(const IpAdapterFlags& f, const std::vector<std::string>& dirs, GenerationParams& p) {
  if (f.model.empty()) {
    DIFFUSE_CHECK_ARG(f.images.empty() && f.encoder.empty() && f.block_scales.empty(),
                      "--ip-image / --ip-image-encoder / --ip-block-scales need --ip-adapter");
    return;
  }
  DIFFUSE_CHECK_ARG(!f.images.empty(), "--ip-adapter needs at least one --ip-image");
  IpAdapterParams& ip = p.ip_adapter;
  std::error_code ec;
  ip.model = std::filesystem::is_regular_file(f.model, ec)
                 ? f.model
                 : resolve_controlnet(f.model, dirs.empty() ? std::vector<std::string>{"models/ControlNet"} : dirs);
  ip.image_encoder = f.encoder;
  ip.scale = f.scale;
  ip.block_scales = f.block_scales;
  for (const std::string& path : f.images) {
    try {
      const std::shared_ptr<MappedFile> file = MappedFile::open(path);
      PngImage im = read_png(file->data(), file->size());
      ip.images.push_back(image::Rgb{im.width, im.height, std::move(im.rgb)});
    } catch (const Error& e) {
      throw_error(ErrorCode::kIo, "--ip-image " + path + ": " + e.what());
    }
  }
  DIFFUSE_CHECK_ARG(std::isfinite(f.scale) && f.scale >= 0.0f && f.scale <= 2.0f,
                    "--ip-scale must be between 0 and 2, got " + std::to_string(f.scale));
  validate_ip_adapter(ip);
}

}  // namespace diffuse::cli
