// Image uploads of the editing routes (img2img, inpainting, outpainting):
// base64 / data-URL images in JSON bodies (A1111 /sdapi/v1/img2img, native
// /api/jobs) and files in multipart bodies (OpenAI /v1/images/edits), decoded
// with limits on bytes and pixels checked before any pixel is decoded.
//
// Every function here throws Error(kInvalidArgument) with a message that
// names the request field ("init_images[0]: not a PNG image ..."); the
// routes answer it with HTTP 400.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "image/image_ops.h"
#include "pipeline/pipeline.h"

namespace diffuse::server {

// What one uploaded image may be.
struct UploadLimits {
  size_t max_bytes = size_t{32} << 20;  // the encoded file, after base64 decoding
  int max_side = 4096;                  // width and height in pixels
};

// Bytes of the largest JSON body carrying `images` images at `limits`
// (base64 grows them by 4/3) on top of `text_bytes` of other fields.
size_t max_body_with_images(const UploadLimits& limits, int images, size_t text_bytes);

// Base64 text (plain or "data:image/png;base64,...") -> bytes, refused when
// empty, malformed or decoding to more than limits.max_bytes.
std::vector<uint8_t> decode_base64_upload(std::string_view text, const std::string& field, const UploadLimits& limits);

// Checks that `data` is a PNG whose header states a size within the limits
// (nothing is decompressed); returns {width, height}. A JPEG, WebP or GIF is
// named as such in the message.
std::pair<int, int> check_png_upload(const uint8_t* data, size_t size, const std::string& field,
                                     const UploadLimits& limits);

// A PNG upload as RGB (alpha dropped), after check_png_upload.
image::Rgb decode_rgb_upload(const uint8_t* data, size_t size, const std::string& field, const UploadLimits& limits);
// A PNG upload as a mask (255 = repaint), after check_png_upload.
image::Gray decode_mask_upload(const uint8_t* data, size_t size, const std::string& field, const UploadLimits& limits,
                               image::MaskConvention convention);

// A JSON string field holding a base64 image, decoded as above.
image::Rgb json_rgb_upload(const nlohmann::json& value, const std::string& field, const UploadLimits& limits);
image::Gray json_mask_upload(const nlohmann::json& value, const std::string& field, const UploadLimits& limits);

// "<image WxH>": what request echoes (history, A1111 "parameters") keep
// instead of a multi-megabyte base64 string.
std::string image_summary(int width, int height);

// Strength in [0, 1] (inclusive), or throws naming `field`.
double check_strength(double v, const std::string& field);

// The edit fields of a native /api/jobs body (init_image, mask, strength,
// mask_blur, invert_mask, masked_content, inpaint_area, padding, overlay,
// resize_mode, outpaint); an absent init_image leaves `edit` untouched
// (text-to-image), and edit fields without it are refused. Also replaces the
// images in `echo` by their summaries.
void parse_native_edit(const nlohmann::json& body, const UploadLimits& limits, EditParams* edit, nlohmann::json* echo);

}  // namespace diffuse::server
