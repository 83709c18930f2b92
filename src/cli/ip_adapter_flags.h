// The IP-Adapter flags of `diffuse generate` (docs/ip-adapter.md):
//   --ip-adapter MODEL          an IP-Adapter file (.safetensors / .bin), or its name in --controlnet-dir
//   --ip-image FILE             a reference image (repeatable: the images' tokens are concatenated)
//   --ip-scale S                its scale on every cross-attention (default 1, 0 to 2)
//   --ip-block-scales JSON      diffusers' set_ip_adapter_scale dict instead, e.g. '{"up": {"block_0": [0, 1, 0]}}'
//   --ip-image-encoder PATH     the CLIP image encoder (default: image_encoder/ beside the adapter)
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace diffuse::cli {

struct IpAdapterFlags {
  std::string model, encoder, block_scales;
  std::vector<std::string> images;
  float scale = 1.0f;
};

void add_ip_adapter_flags(CLI::App* c, IpAdapterFlags& f);
// Fills p.ip_adapter (reads the images); names are looked up in `dirs` (the
// ControlNet folders, where A1111 keeps IP-Adapters). An image without
// --ip-adapter or the reverse, a bad scale: Error(kInvalidArgument) naming the
// flag (exit 2); an unreadable image: Error(kIo) naming it.
void apply_ip_adapter_flags(const IpAdapterFlags& f, const std::vector<std::string>& dirs, GenerationParams& p);

}  // namespace diffuse::cli
