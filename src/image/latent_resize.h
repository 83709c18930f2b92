// Resizing latents [N, C, h, w] exactly as torch.nn.functional.interpolate
// does on CPU f32 tensors with `size=` given (align_corners=False), for
// AUTOMATIC1111's latent upscale modes (its shared.latent_upscale_modes: each
// an interpolate mode + an antialias flag), which its hires fix applies to the
// first pass's latents. docs/hires-fix.md "Latent upscaling" gives the
// formulas; tests/image/test_latent_resize.cpp compares every mode against
// torch 1.13 (tools/reference/latent_upscale_goldens.py), including
// non-integer scales and downscales.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"

namespace diffuse::image {

enum class LatentInterp {
  kBilinear,      // torch "bilinear": 2 taps per axis, source index clamped at 0
  kBicubic,       // torch "bicubic": Keys cubic a = -0.75, 4 taps, border indices clamped
  kNearest,       // torch "nearest": floor(dst * in/out) (legacy, shifted by half a pixel)
  kNearestExact,  // torch "nearest-exact": floor((dst + 0.5) * in/out)
};

struct LatentMode {
  std::string name;  // A1111's display name, e.g. "Latent (bicubic antialiased)"
  LatentInterp interp = LatentInterp::kBilinear;
  // torch's antialias=True (bilinear/bicubic only): separable, a filter
  // widened by in/out when shrinking, weights normalised per output (bicubic
  // then uses a = -0.5, PIL's kernel); the same as without it when growing,
  // except at the borders.
  bool antialias = false;
};

// A1111's six modes in its order: Latent, Latent (antialiased), Latent
// (bicubic), Latent (bicubic antialiased), Latent (nearest), Latent (nearest-exact).
const std::vector<LatentMode>& latent_modes();
// The mode named `name` (A1111's name, case-insensitive); nullptr if none.
const LatentMode* find_latent_mode(const std::string& name);

// x: [N, C, h, w] (any dtype, any device) -> [N, C, out_h, out_w] f32 on x's
// device. Computed on the host in f32 as torch's CPU kernels compute it.
// Throws kInvalidArgument for a non-4-D input or sizes outside 1-16384.
Tensor resize_latents(const Tensor& x, int out_h, int out_w, LatentInterp interp, bool antialias);

}  // namespace diffuse::image
