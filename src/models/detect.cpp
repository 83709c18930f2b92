// Single-file family detection (see detect.h for the evidence used).
#include "models/detect.h"

#include <string>

#include "core/error.h"

namespace diffuse {

namespace {

bool has_prefix(const TensorMap& t, const std::string& prefix) {
  auto it = t.lower_bound(prefix);
  return it != t.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

// Cross-attention context width of the UNet (attn2.to_k input dim), 0 if none.
int64_t unet_context_dim(const TensorMap& t) {
  const std::string prefix = "model.diffusion_model.";
  const std::string suffix = ".attn2.to_k.weight";
  for (auto it = t.lower_bound(prefix); it != t.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    const std::string& k = it->first;
    if (k.size() > suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        it->second.ndim() == 2)
      return it->second.dim(1);
  }
  return 0;
}

}  // namespace

Detected detect_single_file(const TensorMap& t) {
  Detected d;
  if (t.count("conditioner.embedders.1.model.ln_final.weight")) {
    d.family = Family::kSDXL;
  } else if (has_prefix(t, "conditioner.embedders.0.model.")) {
    throw_error(ErrorCode::kUnsupported,
                "SDXL refiner checkpoints (OpenCLIP-bigG only, conditioner.embedders.0.model.*) are not supported");
  } else if (t.count("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight")) {
    d.family = Family::kSD2;
  } else if (has_prefix(t, "cond_stage_model.transformer.")) {
    d.family = Family::kSD1;
  } else {
    switch (unet_context_dim(t)) {
      case 768: d.family = Family::kSD1; break;
      case 1024: d.family = Family::kSD2; break;
      case 2048: d.family = Family::kSDXL; break;
      default:
        throw_error(ErrorCode::kInvalidArgument,
                    "not a Stable Diffusion 1.x/2.x/XL checkpoint: no CLIP text encoder "
                    "(cond_stage_model.* / conditioner.embedders.*) and no UNet cross-attention of width "
                    "768/1024/2048 (" + std::to_string(t.size()) + " tensors)");
    }
  }

  auto in = t.find("model.diffusion_model.input_blocks.0.0.weight");
  d.unet_in_channels = in != t.end() && in->second.ndim() == 4 ? static_cast<int>(in->second.dim(1)) : 0;
  d.inpaint = d.unet_in_channels == 9;
  d.pix2pix = d.unet_in_channels == 8;
  d.v_prediction_key = t.count("v_pred") > 0 || has_prefix(t, "edm_vpred.");
  return d;
}

}  // namespace diffuse
