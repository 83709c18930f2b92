// The host side of an edit (img2img / inpainting / outpainting), around the
// tensor work of Pipeline::generate: what picture and mask the denoising sees
// (plan_edit), and how its output becomes the user's image again
// (finish_edit: "only masked" paste-back and A1111's overlay). Internal to
// src/pipeline; the rules are in docs/editing.md.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "image/image_ops.h"
#include "pipeline/pipeline.h"

namespace diffuse {

struct EditPlan {
  // What the denoising works on, at the work size (a multiple of 8).
  image::Rgb init;
  image::Gray mask;  // binarised (0 / 255); empty: img2img
  int width = 0, height = 0;

  // The whole picture the result goes back into (the init image, or the
  // outpainting canvas), and the blurred mask of the overlay at its size.
  image::Rgb picture;
  image::Gray overlay_mask;  // empty: no overlay
  std::optional<image::Rect> crop;  // "only masked": where the work area sits in `picture`

  // Nothing to denoise (strength 0, or a mask with nothing to repaint):
  // the result is `picture` as it is.
  bool passthrough = false;
};

// width / height: the requested work size (0: the init image's, rounded down
// to a multiple of 8); on return the size the denoising runs at. Notes for
// the user (resizing, rounding, an empty mask) go to `warnings`. Throws
// Error(kInvalidArgument) for a strength outside [0, 1] and other bad values.
EditPlan plan_edit(const EditParams& edit, int width, int height, uint64_t seed, std::vector<std::string>& warnings);

// The generated work-size image -> the user's image (same size as
// plan.picture when cropping, else the work size).
image::Rgb finish_edit(const EditPlan& plan, const image::Rgb& generated, const EditParams& edit);

// The A1111 infotext fields of an edit ("Denoising strength", "Mask blur", ...).
std::vector<std::pair<std::string, std::string>> edit_infotext(const EditParams& edit, bool inpainting);

}  // namespace diffuse
