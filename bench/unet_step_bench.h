// The inputs of one UNet evaluation of a CFG batch on full-size random weights
// (speed does not depend on values), shared by the adapter benches:
// arch 0 = SD1.5 at 512 px (64x64 latents), 1 = SDXL at 1024 px (128x128).
#pragma once
#include <cstdint>

#include "core/ops.h"
#include "models/unet.h"

namespace diffuse {

struct UNetStepInputs {
  Tensor x, t, ctx, pooled, ids;  // pooled / ids: SDXL's text_time inputs, else undefined
  int64_t side = 0;               // latent side
};

inline UNetStepInputs unet_step_inputs(const UNet& unet, int arch, Device device, int64_t batch = 2) {
  const DType dt = unet.dtype();
  UNetStepInputs in;
  in.side = arch == 0 ? 64 : 128;
  const int64_t D = unet.config().cross_attention_dim[0];
  in.x = Tensor::full({batch, 4, in.side, in.side}, 0.1f).to(dt).to(device);
  in.t = Tensor::full({batch}, 500.0f).to(device);
  in.ctx = Tensor::full({batch, 77, D}, 0.01f).to(dt).to(device);
  if (unet.config().has_text_time()) {
    in.pooled = Tensor::full({batch, 1280}, 0.01f).to(dt).to(device);
    std::vector<float> ids;
    for (int64_t b = 0; b < batch; ++b) ids.insert(ids.end(), {1024, 1024, 0, 0, 1024, 1024});
    in.ids = Tensor::from_vector(ids, {batch, 6}).to(device);
  }
  return in;
}

}  // namespace diffuse
