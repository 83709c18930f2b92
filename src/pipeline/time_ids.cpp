// SDXL's micro-conditioning ("add_time_ids"), as diffusers' SDXL pipelines
// build it (_get_add_time_ids): the base model takes original size, crop
// top-left and target size, (h, w) each; the refiner
// (StableDiffusionXLImg2ImgPipeline with requires_aesthetics_score) takes
// original size, crop top-left and an aesthetic score, the negative score on
// the unconditional rows.
#include "core/tensor.h"
#include "pipeline/pipeline_impl.h"

namespace diffuse {

Tensor Pipeline::Impl::time_ids(const GenerationParams& p, int n, bool cfg) const {
  const std::array<int, 2> orig = p.original_size[0] ? p.original_size : std::array<int, 2>{p.height, p.width};
  const std::array<int, 2> target = p.target_size[0] ? p.target_size : std::array<int, 2>{p.height, p.width};
  const int64_t rows = cfg ? 2 * n : n;
  const int64_t per_row = requires_aesthetics_score ? 5 : 6;
  std::vector<float> ids;
  ids.reserve(static_cast<size_t>(rows * per_row));
  for (int64_t b = 0; b < rows; ++b) {
    for (int v : {orig[0], orig[1], p.crops_coords_top_left[0], p.crops_coords_top_left[1]}) {
      ids.push_back(static_cast<float>(v));
    }
    if (requires_aesthetics_score) {
      const bool uncond_row = cfg && b < n;
      ids.push_back(static_cast<float>(uncond_row ? p.refiner.negative_aesthetic_score : p.refiner.aesthetic_score));
    } else {
      ids.push_back(static_cast<float>(target[0]));
      ids.push_back(static_cast<float>(target[1]));
    }
  }
  return Tensor::from_vector(ids, {rows, per_row});
}

}  // namespace diffuse
