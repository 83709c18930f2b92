#include "server/edit_request.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "io/png.h"
#include "server/base64.h"
#include "server/server_state.h"

namespace diffuse::server {
namespace {

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw_error(ErrorCode::kInvalidArgument, field + ": " + what);
}

std::string mib(size_t bytes) {
  if (bytes % (size_t{1} << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes) + " bytes";
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// What a non-PNG upload is, for the message.
std::string sniff(const uint8_t* d, size_t n) {
  auto starts = [&](std::string_view magic) {
    return n >= magic.size() && std::equal(magic.begin(), magic.end(), reinterpret_cast<const char*>(d));
  };
  if (starts("\xff\xd8\xff")) return "a JPEG image";
  if (n >= 12 && starts("RIFF") && std::string_view(reinterpret_cast<const char*>(d) + 8, 4) == "WEBP") {
    return "a WebP image";
  }
  if (starts("GIF8")) return "a GIF image";
  if (starts("BM")) return "a BMP image";
  return "not an image";
}

}  // namespace

size_t max_body_with_images(const UploadLimits& limits, int images, size_t text_bytes) {
  return text_bytes + static_cast<size_t>(images) * ((limits.max_bytes + 2) / 3 * 4 + 64);
}

std::vector<uint8_t> decode_base64_upload(std::string_view text, const std::string& field, const UploadLimits& limits) {
  // Whitespace around it and line breaks inside are fine; the decoded size is bounded
  // from the text's length before anything is decoded.
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos || text.substr(0, comma).find(";base64") == std::string_view::npos) {
      bad(field, "a data: URL must be base64 (data:image/png;base64,...)");
    }
  }
  if (text.empty() || text == "data:" || (text.rfind("data:", 0) == 0 && text.back() == ',')) {
    bad(field, "the image is empty");
  }
  if (text.size() / 4 * 3 > limits.max_bytes + 3 * 1024) {
    bad(field, "the image is larger than the upload limit of " + mib(limits.max_bytes));
  }
  std::vector<uint8_t> bytes;
  try {
    bytes = base64_decode(text);
  } catch (const Error& e) {
    bad(field, std::string("not valid base64 (") + e.what() + ")");
  }
  if (bytes.empty()) bad(field, "the image is empty");
  if (bytes.size() > limits.max_bytes) {
    bad(field, "the image is " + std::to_string(bytes.size()) + " bytes, over the upload limit of " +
                   mib(limits.max_bytes));
  }
  return bytes;
}

std::pair<int, int> check_png_upload(const uint8_t* data, size_t size, const std::string& field,
                                     const UploadLimits& limits) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size > limits.max_bytes) {
    bad(field, "the image is " + std::to_string(size) + " bytes, over the upload limit of " + mib(limits.max_bytes));
  }
  if (size < 8 || !std::equal(kSignature, kSignature + 8, data)) {
    const std::string what = sniff(data, size);
    bad(field, "not a PNG image (" + what + "); upload a PNG" +
                   (what == "not an image" ? std::string(" (corrupt base64 or a wrong field?)") : std::string()));
  }
  // IHDR is the first chunk: length 13, type, width, height.
  if (size < 33 || be32(data + 8) != 13 || std::string_view(reinterpret_cast<const char*>(data) + 12, 4) != "IHDR") {
    bad(field, "a corrupt PNG (no IHDR header)");
  }
  const uint32_t w = be32(data + 16), h = be32(data + 20);
  if (w == 0 || h == 0) bad(field, "a corrupt PNG (zero width or height)");
  if (w > static_cast<uint32_t>(limits.max_side) || h > static_cast<uint32_t>(limits.max_side)) {
    bad(field, "the image is " + std::to_string(w) + "x" + std::to_string(h) + " pixels, over the limit of " +
                   std::to_string(limits.max_side) + "x" + std::to_string(limits.max_side));
  }
  return {static_cast<int>(w), static_cast<int>(h)};
}

image::Rgb decode_rgb_upload(const uint8_t* data, size_t size, const std::string& field, const UploadLimits& limits) {
  check_png_upload(data, size, field, limits);
  PngImage png;
  try {
    png = read_png(data, size);
  } catch (const Error& e) {
    bad(field, std::string("a corrupt PNG (") + e.what() + ")");
  }
  image::Rgb out;
  out.width = png.width;
  out.height = png.height;
  out.px = std::move(png.rgb);
  return out;
}

image::Gray decode_mask_upload(const uint8_t* data, size_t size, const std::string& field, const UploadLimits& limits,
                               image::MaskConvention convention) {
  check_png_upload(data, size, field, limits);
  try {
    return image::decode_mask(data, size, convention);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kInvalidArgument) bad(field, e.what());  // e.g. "the mask has no transparent pixels"
    bad(field, std::string("a corrupt PNG (") + e.what() + ")");
  }
}

image::Rgb json_rgb_upload(const nlohmann::json& value, const std::string& field, const UploadLimits& limits) {
  if (!value.is_string()) bad(field, "must be a base64 PNG string");
  const std::vector<uint8_t> bytes = decode_base64_upload(value.get_ref<const std::string&>(), field, limits);
  return decode_rgb_upload(bytes.data(), bytes.size(), field, limits);
}

image::Gray json_mask_upload(const nlohmann::json& value, const std::string& field, const UploadLimits& limits) {
  if (!value.is_string()) bad(field, "must be a base64 PNG string");
  const std::vector<uint8_t> bytes = decode_base64_upload(value.get_ref<const std::string&>(), field, limits);
  return decode_mask_upload(bytes.data(), bytes.size(), field, limits, image::MaskConvention::kLuminance);
}

std::string image_summary(int width, int height) {
  return "<image " + std::to_string(width) + "x" + std::to_string(height) + ">";
}

double check_strength(double v, const std::string& field) {
  if (!std::isfinite(v) || v < 0.0 || v > 1.0) {
    std::ostringstream ss;
    ss << v;
    bad(field, "must be between 0 and 1, got " + ss.str());
  }
  return v;
}

void parse_native_edit(const nlohmann::json& body, const UploadLimits& limits, EditParams* edit, nlohmann::json* echo) {
  auto has = [&](const char* k) { return body.contains(k) && !body[k].is_null(); };
  static const char* const kEditOnly[] = {"mask",         "strength", "mask_blur",   "invert_mask", "masked_content",
                                          "inpaint_area", "padding",  "overlay",     "resize_mode", "outpaint"};
  if (!has("init_image")) {
    for (const char* k : kEditOnly) {
      if (has(k)) bad(k, "needs an init_image to edit");
    }
    return;
  }
  EditParams e;
  e.init_image = json_rgb_upload(body["init_image"], "init_image", limits);
  (*echo)["init_image"] = image_summary(e.init_image.width, e.init_image.height);
  if (has("mask")) {
    e.mask = json_mask_upload(body["mask"], "mask", limits);
    (*echo)["mask"] = image_summary(e.mask.width, e.mask.height);
  }
  e.strength = check_strength(json_field<double>(body, "strength", e.strength), "strength");
  e.mask_blur = json_field<int>(body, "mask_blur", e.mask_blur);
  if (e.mask_blur < 0 || e.mask_blur > 256) bad("mask_blur", "must be between 0 and 256 pixels");
  e.invert_mask = json_field<bool>(body, "invert_mask", e.invert_mask);
  if (has("masked_content")) {
    const std::string mc = json_field<std::string>(body, "masked_content", "");
    try {
      e.masked_content = masked_content_from_name(mc);
    } catch (const Error&) {
      bad("masked_content", "must be original, fill, noise or nothing, got '" + mc + "'");
    }
  }
  const std::string area = json_field<std::string>(body, "inpaint_area", "whole");
  if (area != "whole" && area != "masked") bad("inpaint_area", "must be whole or masked, got '" + area + "'");
  e.only_masked = area == "masked";
  e.only_masked_padding = json_field<int>(body, "padding", e.only_masked_padding);
  if (e.only_masked_padding < 0 || e.only_masked_padding > 1024) bad("padding", "must be between 0 and 1024 pixels");
  e.overlay = json_field<bool>(body, "overlay", e.overlay);
  if (has("resize_mode")) {
    const nlohmann::json& rm = body["resize_mode"];
    const std::string name = rm.is_number_integer() ? std::to_string(rm.get<int64_t>())
                             : rm.is_string()       ? rm.get<std::string>()
                                                    : std::string("?");
    try {
      e.resize_mode = image::resize_mode_from_name(name);
    } catch (const Error&) {
      bad("resize_mode", "must be just-resize, crop or fill, got " + rm.dump());
    }
  }
  if (has("outpaint")) {
    const nlohmann::json& o = body["outpaint"];
    if (o.is_string()) {
      try {
        e.outpaint = image::parse_outpaint(o.get<std::string>());
      } catch (const Error& err) {
        bad("outpaint", err.what());
      }
    } else if (o.is_object()) {
      for (const auto& [key, value] : o.items()) {
        if (key != "left" && key != "right" && key != "top" && key != "bottom" && key != "fill") {
          bad("outpaint", "unknown side '" + key + "' (left, right, top, bottom, fill)");
        }
      }
      int* sides[] = {&e.outpaint.left, &e.outpaint.right, &e.outpaint.top, &e.outpaint.bottom};
      const char* names[] = {"left", "right", "top", "bottom"};
      for (int i = 0; i < 4; ++i) {
        *sides[i] = json_field<int>(o, names[i], 0);
        if (*sides[i] < 0 || *sides[i] > 2048) bad(std::string("outpaint.") + names[i], "must be between 0 and 2048 pixels");
      }
      const std::string fill = json_field<std::string>(o, "fill", "edge");
      if (fill != "edge" && fill != "noise") bad("outpaint.fill", "must be edge or noise, got '" + fill + "'");
      e.outpaint.fill = fill == "noise" ? image::OutpaintSpec::Fill::kNoise : image::OutpaintSpec::Fill::kEdge;
    } else {
      bad("outpaint", "must be an object {\"left\": px, \"right\": px, \"top\": px, \"bottom\": px}");
    }
  }
  *edit = std::move(e);
}

}  // namespace diffuse::server
