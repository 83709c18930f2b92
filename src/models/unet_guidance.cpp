// The guidance-scale embedding of LCM-distilled UNets (see unet.h): diffusers'
// get_guidance_scale_embedding, after VDM's sinusoidal embedding
// (google-research/vdm model_vdm.py get_timestep_embedding). Every float32
// rounding torch makes is made here too: log(10000) and the frequencies in
// float32, w * 1000 and the products in float32, then sin / cos of those floats.
#include <cmath>

#include "models/unet.h"

namespace diffuse {

Tensor guidance_scale_embedding(const std::vector<float>& w, int dim) {
  DIFFUSE_CHECK_ARG(dim >= 4, "[guidance_scale_embedding] dim must be >= 4, got " + std::to_string(dim));
  DIFFUSE_CHECK_ARG(!w.empty(), "[guidance_scale_embedding] no guidance scale given");
  const int half = dim / 2;
  const float step = std::log(10000.0f) / static_cast<float>(half - 1);  // torch.log(tensor(10000.)) / (half - 1)
  std::vector<float> freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) freq[static_cast<size_t>(i)] = std::exp(static_cast<float>(i) * -step);
  std::vector<float> out(w.size() * static_cast<size_t>(dim), 0.0f);
  for (size_t b = 0; b < w.size(); ++b) {
    DIFFUSE_CHECK_ARG(std::isfinite(w[b]), "[guidance_scale_embedding] guidance scale is not finite");
    const float scaled = w[b] * 1000.0f;
    float* row = out.data() + b * static_cast<size_t>(dim);
    for (int i = 0; i < half; ++i) {
      const double arg = static_cast<double>(scaled * freq[static_cast<size_t>(i)]);  // float32 product
      row[i] = static_cast<float>(std::sin(arg));
      row[half + i] = static_cast<float>(std::cos(arg));
    }
  }
  return Tensor::from_vector(out, {static_cast<int64_t>(w.size()), dim});
}

}  // namespace diffuse
