// Host-side planning of an edit: see edit_plan.h and docs/editing.md.
#include "pipeline/edit_plan.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace diffuse {
namespace {

std::string size_str(int w, int h) { return std::to_string(w) + "x" + std::to_string(h); }

// Places `small` (a mask of rect r's size) into a zero mask of size w x h.
image::Gray place_mask(const image::Gray& small, const image::Rect& r, int w, int h) {
  image::Gray out;
  out.width = w;
  out.height = h;
  out.px.assign(static_cast<size_t>(w) * h, 0);
  for (int y = 0; y < small.height; ++y) {
    for (int x = 0; x < small.width; ++x) {
      out.px[static_cast<size_t>(y + r.y) * w + (x + r.x)] = small.px[static_cast<size_t>(y) * small.width + x];
    }
  }
  return out;
}

image::Gray max_mask(const image::Gray& a, const image::Gray& b) {
  image::Gray out = a;
  for (size_t i = 0; i < out.px.size(); ++i) out.px[i] = std::max(a.px[i], b.px[i]);
  return out;
}

}  // namespace

EditPlan plan_edit(const EditParams& edit, int width, int height, uint64_t seed, std::vector<std::string>& warnings) {
  DIFFUSE_CHECK_ARG(edit.active(), "[edit] no init image");
  DIFFUSE_CHECK_ARG(std::isfinite(edit.strength) && edit.strength >= 0.0 && edit.strength <= 1.0,
                    "denoising strength must be between 0 and 1, got " + std::to_string(edit.strength));
  DIFFUSE_CHECK_ARG(edit.mask_blur >= 0 && edit.mask_blur <= 256,
                    "mask blur must be between 0 and 256 pixels, got " + std::to_string(edit.mask_blur));
  DIFFUSE_CHECK_ARG(edit.only_masked_padding >= 0 && edit.only_masked_padding <= 4096,
                    "inpaint padding must be between 0 and 4096 pixels, got " +
                        std::to_string(edit.only_masked_padding));
  const image::Rgb& in = edit.init_image;
  DIFFUSE_CHECK_ARG(in.px.size() == static_cast<size_t>(in.width) * in.height * 3,
                    "[edit] init image buffer does not match its size " + size_str(in.width, in.height));

  EditPlan plan;
  plan.picture = in;

  // The user's mask at the picture's size, inverted if asked.
  image::Gray mask;
  if (!edit.mask.empty()) {
    mask = edit.mask;
    DIFFUSE_CHECK_ARG(mask.px.size() == static_cast<size_t>(mask.width) * mask.height,
                      "[edit] mask buffer does not match its size " + size_str(mask.width, mask.height));
    if (mask.width != in.width || mask.height != in.height) {
      warnings.push_back("the mask (" + size_str(mask.width, mask.height) + ") was resized to the image's size (" +
                         size_str(in.width, in.height) + ")");
      mask = image::resize(mask, in.width, in.height);
    }
    if (edit.invert_mask) mask = image::invert(mask);
  }

  // Outpainting: a bigger canvas whose new border (and a seam inside the old
  // picture) is masked, together with the user's own mask if any.
  if (edit.outpaint.any()) {
    image::OutpaintCanvas canvas = image::outpaint_canvas(in, edit.outpaint, seed);
    if (!mask.empty()) {
      canvas.mask = max_mask(canvas.mask, place_mask(mask, canvas.original, canvas.image.width, canvas.image.height));
    }
    plan.picture = std::move(canvas.image);
    mask = std::move(canvas.mask);
  }
  const bool inpainting = !mask.empty();
  if (inpainting) mask = image::binarize(mask);

  // The work size: requested, or the picture's rounded down to a multiple of 8.
  if (width == 0 || height == 0) {
    const int w = plan.picture.width / 8 * 8, h = plan.picture.height / 8 * 8;
    if (w != plan.picture.width || h != plan.picture.height) {
      warnings.push_back("the size " + size_str(plan.picture.width, plan.picture.height) +
                         " is not a multiple of 8: working at " + size_str(w, h));
    }
    if (width == 0) width = w;
    if (height == 0) height = h;
  }
  DIFFUSE_CHECK_ARG(width >= 64 && height >= 64,
                    "the image is too small: " + size_str(width, height) + " (at least 64x64 after rounding)");
  plan.width = width;
  plan.height = height;

  if (inpainting && image::all_zero(mask)) {
    warnings.push_back("the mask is all black: nothing to repaint, the image is returned unchanged");
    plan.passthrough = true;
    return plan;
  }
  if (edit.strength == 0.0) {
    warnings.push_back("denoising strength 0: the image is returned unchanged");
    plan.passthrough = true;
    return plan;
  }

  if (inpainting && edit.only_masked) {
    // A1111's "Only masked": the mask's region (plus padding, grown to the
    // work size's aspect ratio) is inpainted at the full work size.
    const image::Rect r = image::masked_crop_region(mask, edit.only_masked_padding, width, height);
    plan.crop = r;
    plan.init = image::resize(image::crop(plan.picture, r), width, height);
    plan.mask = image::binarize(image::resize(image::crop(mask, r), width, height));
    if (edit.overlay) plan.overlay_mask = image::blur(mask, edit.mask_blur);
  } else {
    if (plan.picture.width != width || plan.picture.height != height) {
      warnings.push_back("the image (" + size_str(plan.picture.width, plan.picture.height) + ") was resized to " +
                         size_str(width, height) + " (" + image::resize_mode_name(edit.resize_mode) + ")");
      plan.picture = image::resize(plan.picture, width, height, edit.resize_mode);
      if (inpainting) mask = image::binarize(image::resize(mask, width, height, edit.resize_mode));
    }
    plan.init = plan.picture;
    if (inpainting) {
      plan.mask = mask;
      if (edit.overlay) plan.overlay_mask = image::blur(mask, edit.mask_blur);
      if (image::all_zero(plan.mask)) {
        warnings.push_back("the mask has nothing left to repaint at " + size_str(width, height) +
                           ": the image is returned unchanged");
        plan.passthrough = true;
        return plan;
      }
    }
  }
  if (inpainting && edit.masked_content == MaskedContent::kFill) plan.init = image::fill_masked(plan.init, plan.mask);
  return plan;
}

image::Rgb finish_edit(const EditPlan& plan, const image::Rgb& generated, const EditParams& edit) {
  if (plan.crop) {
    // Back to the region's size (its aspect ratio is the work size's unless
    // the region was clipped at the picture's border: then crop, as A1111).
    const image::Rgb piece =
        image::resize(generated, plan.crop->width, plan.crop->height, image::ResizeMode::kCropAndResize);
    const image::Rgb pasted = image::paste(plan.picture, piece, *plan.crop);
    return plan.overlay_mask.empty() ? pasted : image::composite(plan.picture, pasted, plan.overlay_mask);
  }
  if (!plan.overlay_mask.empty()) return image::composite(plan.picture, generated, plan.overlay_mask);
  return generated;
}

std::vector<std::pair<std::string, std::string>> edit_infotext(const EditParams& edit, bool inpainting) {
  std::vector<std::pair<std::string, std::string>> out;
  if (inpainting) {
    out.emplace_back("Mask blur", std::to_string(edit.mask_blur));
    if (edit.only_masked) {
      out.emplace_back("Inpaint area", "Only masked");
      out.emplace_back("Masked area padding", std::to_string(edit.only_masked_padding));
    }
    if (edit.masked_content != MaskedContent::kOriginal) {
      out.emplace_back("Masked content", masked_content_name(edit.masked_content));
    }
    if (edit.invert_mask) out.emplace_back("Mask mode", "Inpaint not masked");
  }
  if (edit.outpaint.any()) {
    const image::OutpaintSpec& o = edit.outpaint;
    out.emplace_back("Outpaint", "left=" + std::to_string(o.left) + " right=" + std::to_string(o.right) +
                                     " top=" + std::to_string(o.top) + " bottom=" + std::to_string(o.bottom));
  }
  return out;
}

}  // namespace diffuse
