// Host-side image operations for editing (img2img, inpainting, outpainting):
// resizing with AUTOMATIC1111's resize modes, masks (reading, inverting,
// blurring, binarising), "inpaint only masked" crop regions, the overlay that
// pastes the original back, masked-content fill and the outpainting canvas.
// Pixels are 8-bit, row-major, no padding. Built on OpenCV's imgproc
// (Debian libopencv-imgproc): resampling, Gaussian and box blurs. (OpenCV's
// photo module, cv::inpaint, is not used: the fill is made of blurs.)
// Every function validates its inputs (sizes 1-16384, pixel counts, rects
// inside images, matching sizes) and throws Error(kInvalidArgument) naming
// the bad value and the accepted range. docs/editing.md "Image operations"
// gives the exact conventions and where they depart from A1111.
//
// Conventions: a mask is white (255) where the image is repainted and black
// (0) where it is kept (A1111, diffusers). Rectangles are [x, x + width) x
// [y, y + height) in pixels.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace diffuse::image {

struct Rgb {
  int width = 0, height = 0;
  std::vector<uint8_t> px;  // width * height * 3
  bool empty() const { return width == 0 || height == 0; }
};

struct Gray {
  int width = 0, height = 0;
  std::vector<uint8_t> px;  // width * height
  bool empty() const { return width == 0 || height == 0; }
};

struct Rect {
  int x = 0, y = 0, width = 0, height = 0;
  bool operator==(const Rect&) const = default;
};

// A1111's resize_mode (the API's integer): 0 just resize (stretch), 1 crop
// and resize (scale to cover, centre crop), 2 resize and fill (scale to fit,
// centre, fill the bars by stretching the image's edge rows/columns, as
// A1111's images.resize_image does).
enum class ResizeMode { kJustResize = 0, kCropAndResize = 1, kResizeAndFill = 2 };
// Parses "just-resize|crop|fill" (and 0|1|2); throws Error(kInvalidArgument) naming the choices.
ResizeMode resize_mode_from_name(const std::string& s);
const char* resize_mode_name(ResizeMode m);  // "just-resize", "crop", "fill"

// Resampling to an exact size, chosen per axis: Lanczos-4 along an axis that
// grows, area averaging along one that shrinks (PIL's antialiased LANCZOS,
// which A1111 and diffusers use, sits between the two; see docs/editing.md).
// Same size: a copy. Sizes 1-16384.
Rgb resize(const Rgb& src, int width, int height);
Gray resize(const Gray& src, int width, int height);
Rgb resize(const Rgb& src, int width, int height, ResizeMode mode);
Gray resize(const Gray& src, int width, int height, ResizeMode mode);

// Decodes a PNG (or any image the PNG reader takes) into a mask, one byte per
// pixel, 255 = repaint:
//  - kLuminance (A1111, diffusers): L as is; RGB by ITU-R 601 luma like PIL's
//    convert('L') ((19595 R + 38470 G + 7471 B + 32768) >> 16); RGBA with any
//    pixel not fully opaque: its alpha channel (A1111's create_binary_mask,
//    without its rounding: binarize() is separate), else its luma. Gray +
//    alpha and images with a tRNS chunk are treated like RGBA.
//  - kTransparentIsEdit (OpenAI /v1/images/edits): 255 - alpha; an image
//    without alpha, or fully opaque, is refused (kInvalidArgument: "the mask
//    has no transparent pixels").
// Throws Error(kIo) for an undecodable file.
enum class MaskConvention { kLuminance, kTransparentIsEdit };
Gray decode_mask(const uint8_t* data, size_t size, MaskConvention convention);
// An RGB image's alpha-derived edit mask, for OpenAI edits where `image`
// itself carries transparency and no mask is sent: 255 where alpha < 255;
// nullopt when the image is fully opaque or has no alpha.
std::optional<Gray> alpha_edit_mask(const uint8_t* data, size_t size);

Gray invert(const Gray& m);
// A1111's mask blur: cv2.GaussianBlur with sigma = radius and a kernel of
// 2 * int(2.5 * radius + 0.5) + 1, in x then y (each pass rounded to 8 bits,
// border reflect-101). radius 0: a copy. radius 0-256.
Gray blur(const Gray& m, int radius);
// diffusers' mask binarisation: 255 where px >= 128 (value/255 >= 0.5), else 0.
Gray binarize(const Gray& m);
// Pixels > 0: nullopt when none.
std::optional<Rect> bounding_box(const Gray& m);
bool all_zero(const Gray& m);

// "Inpaint only masked" (A1111's get_crop_region + expand_crop_region): the
// mask's bounding box grown by `padding` on each side (clipped to the
// image), then grown further along one axis so its aspect ratio equals
// target_width : target_height, staying inside the image where it can.
Rect masked_crop_region(const Gray& mask, int padding, int target_width, int target_height);

Rgb crop(const Rgb& src, const Rect& r);
Gray crop(const Gray& src, const Rect& r);
// dst with `src` (resized to r's size with resize(src, w, h), i.e. stretched)
// written at r, which must lie inside dst. A1111 pastes an "only masked"
// result back with crop-and-resize: call resize(src, r.width, r.height,
// ResizeMode::kCropAndResize) first where the aspect ratios may differ.
Rgb paste(const Rgb& dst, const Rgb& src, const Rect& r);

// A1111's overlay: where mask is 0 the result is `original`, where 255 it is
// `generated`, linear in between (mask / 255 as alpha). All three one size.
Rgb composite(const Rgb& original, const Rgb& generated, const Gray& mask);

// A1111's "fill" masked content (masking.fill): the masked area is replaced
// by colours spread from its surroundings (repeated blurs of the unmasked
// pixels), so the model starts from plausible colours instead of the old
// content. Pixels where the mask is 0 are unchanged, bit for bit; partly
// masked pixels are blended. A fully masked image comes back black.
Rgb fill_masked(const Rgb& src, const Gray& mask);

// Outpainting: the canvas grows by left/right/top/bottom pixels (each >= 0,
// rounded up so the new size is a multiple of 8, the extra going right /
// bottom). The new area is filled with the image's edge pixels stretched
// outwards (kEdge) or with seeded uniform noise (kNoise: bytes of successive
// std::mt19937_64(seed) outputs, low byte first, R G B, row-major over the
// new area). The mask is 255 over the new area and, over a `seam` pixel band
// inside the old image along each side that grew (rounding included), a
// linear ramp from 255 at the old edge towards 0 at the band's inner side;
// then blurred by `feather` pixels (blur() above) and clipped so that nothing
// beyond the seam band is masked and the new area stays 255.
// Each side 0-16384, at least one > 0; canvas at most 16384x16384; seam
// 0-16384; feather 0-256.
struct OutpaintSpec {
  int left = 0, right = 0, top = 0, bottom = 0;
  enum class Fill { kEdge, kNoise } fill = Fill::kEdge;
  int seam = 16;
  int feather = 8;
  bool any() const { return left > 0 || right > 0 || top > 0 || bottom > 0; }
};
// "left=128,right=64,top=0,bottom=32" or "all=64" (each key once, any
// order, missing sides 0, values 0-16384, spaces around parts allowed; "all"
// cannot be combined with the others); throws Error(kInvalidArgument) naming
// the bad part. All zero parses (any() is false); outpaint_canvas refuses it.
OutpaintSpec parse_outpaint(const std::string& s);
struct OutpaintCanvas {
  Rgb image;
  Gray mask;
  Rect original;  // where the input sits in the canvas
};
OutpaintCanvas outpaint_canvas(const Rgb& src, const OutpaintSpec& spec, uint64_t seed);

}  // namespace diffuse::image
