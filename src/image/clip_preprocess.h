// CLIP image preprocessing as transformers' CLIPImageProcessor does it for
// IP-Adapter (diffusers' feature_extractor): the shortest side resized to
// `size` with PIL's bicubic filter (Image.resize(..., BICUBIC): a = -0.5 cubic,
// widened by the scale factor when shrinking, i.e. antialiased, 8-bit fixed-point
// coefficients, one horizontal then one vertical pass each rounded to 8 bits),
// the long side to int(size * long / short); a centre crop of size x size
// (top = (h - size) / 2, left = (w - size) / 2, rounded down); x / 255; then
// (x - mean) / std with CLIP's mean and std. OpenCV's INTER_CUBIC (a = -0.75,
// no antialiasing) gives other pixels when shrinking, so the two passes are
// PIL's algorithm (Pillow's libImaging/Resample.c), written here from its
// description; the result is bit-exact to PIL's for 8-bit RGB images.
#pragma once
#include <vector>

#include "image/image_ops.h"

namespace diffuse::image {

// PIL's Image.resize(size, Image.BICUBIC) of an 8-bit RGB image. Sizes 1-16384.
Rgb resize_bicubic_pil(const Rgb& src, int width, int height);

// pixel_values [3, size, size] (channel-major) for a CLIP image encoder, as
// described above. size 1-4096; the image must not be empty.
std::vector<float> clip_pixel_values(const Rgb& src, int size);

}  // namespace diffuse::image
