// A1111's Extras upscaling (modules/api/api.py,
// scripts/postprocessing_upscale.py; adapters/upscalers.h):
//   POST /sdapi/v1/extra-single-image   {image, resize_mode, upscaling_resize, upscaling_resize_w/h,
//                                        upscaling_crop, upscaler_1, upscaler_2,
//                                        extras_upscaler_2_visibility, show_extras_results, ...}
//                                       -> {html_info, image}
//   POST /sdapi/v1/extra-batch-images   the same with imageList [{data, name}] -> {html_info, images}
// The upscaler names are those GET /sdapi/v1/upscalers lists (hires_request.cpp):
// Lanczos, Nearest and the models of --upscaler-dir, by file stem.
// Images come and go as base64 PNGs; an answer's PNG keeps the input's text
// chunks ("parameters") and adds "postprocessing" (the infotext), as A1111's
// encode_pil_to_base64 writes image.info. html_info is that infotext in <p>.
// Errors: a bad image (bad base64, not a PNG, over --max-upload-side / bytes)
// 400 naming the field; an unknown upscaler 404 "Upscaler not found: NAME"
// (A1111 itself fails with a 500 AssertionError "could not find upscaler
// named NAME"; its first API answered 400 "Upscaler not found"; we answer like
// its "Sampler not found": 404); a bad field, face restoration (not
// supported) or a result over the size limit 422; a body larger than the
// upload limit 413; a model file in the folder that is not an RRDBNet 500,
// naming the file and the problem.
#include "adapters/upscalers.h"
#include "io/png.h"
#include "server/base64.h"
#include "server/edit_request.h"
#include "server/server_state.h"

namespace diffuse::server {
namespace {

// The largest result: 16384 per side and this many pixels (~200 MB of RGB; the
// model's f32 output tile is what the tile size bounds).
constexpr int64_t kMaxResultPixels = int64_t{8192} * 8192;

UploadLimits extras_limits(const Server::State& s) {
  UploadLimits l;
  l.max_bytes = s.options.max_upload_bytes;
  l.max_side = s.options.max_upload_side;
  return l;
}

struct Upload {
  image::Rgb rgb;
  PngText text;
};

Upload decode_upload(const nlohmann::json& v, const std::string& field, const UploadLimits& limits) {
  DIFFUSE_CHECK_ARG(v.is_string(), field + ": must be a base64-encoded PNG string");
  const std::vector<uint8_t> bytes = decode_base64_upload(v.get_ref<const std::string&>(), field, limits);
  Upload u;
  u.rgb = decode_rgb_upload(bytes.data(), bytes.size(), field, limits);
  u.text = read_png_text(bytes.data(), bytes.size());
  u.text.erase("postprocessing");  // replaced by this run's
  return u;
}

ExtrasUpscale parse_extras(const nlohmann::json& body) {
  ExtrasUpscale x;  // A1111's ExtrasBaseRequest defaults
  x.resize_mode = json_field<int>(body, "resize_mode", 0);
  x.scale_by = json_field<double>(body, "upscaling_resize", 2.0);
  x.to_width = json_field<int>(body, "upscaling_resize_w", 512);
  x.to_height = json_field<int>(body, "upscaling_resize_h", 512);
  x.crop = json_field<bool>(body, "upscaling_crop", true);
  x.upscaler_1 = json_field<std::string>(body, "upscaler_1", "None");
  x.upscaler_2 = json_field<std::string>(body, "upscaler_2", "None");
  x.upscaler_2_visibility = json_field<double>(body, "extras_upscaler_2_visibility", 0.0);
  (void)json_field<bool>(body, "show_extras_results", true);  // modes 0 and 1 always return their images (A1111)
  (void)json_field<bool>(body, "upscale_first", false);       // only orders upscaling and face restoration
  for (const char* f : {"gfpgan_visibility", "codeformer_visibility"}) {
    DIFFUSE_CHECK_ARG(json_field<double>(body, f, 0.0) == 0.0,
                      std::string(f) + ": face restoration (GFPGAN, CodeFormer) is not supported; send 0");
  }
  (void)json_field<double>(body, "codeformer_weight", 0.0);
  x.validate();
  return x;
}

// A1111's ui_common.plaintext_to_html.
std::string plaintext_to_html(const std::string& text) {
  std::string out = "<p>";
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#x27;"; break;
      case '\n': out += "<br>\n"; break;
      default: out += c;
    }
  }
  return out + "</p>";
}

std::string run_one(Server::State& s, const Upload& in, const ExtrasUpscale& x, std::string* infotext) {
  ExtrasResult r;
  {
    // One extras run at a time, as A1111's queue_lock: a model upscale uses every core.
    std::lock_guard<std::mutex> lock(s.extras_mu);
    r = run_extras_upscale(*s.upscalers, in.rgb, x, s.options.load.device, kMaxResultPixels);
  }
  PngText text = in.text;
  if (!r.infotext.empty()) text["postprocessing"] = r.infotext;
  *infotext = r.infotext;
  const std::vector<uint8_t> png = encode_png(r.image.width, r.image.height, r.image.px.data(), text);
  return base64_encode(std::string_view(reinterpret_cast<const char*>(png.data()), png.size()));
}

}  // namespace

void register_extras_routes(Server::State& s) {
  httplib::Server& http = s.http;

  http.Post("/sdapi/v1/extra-single-image", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    const ExtrasUpscale x = parse_extras(body);
    DIFFUSE_CHECK_ARG(body.contains("image") && !body["image"].is_null(), "image: required (a base64-encoded PNG)");
    Upload in;
    try {
      in = decode_upload(body["image"], "image", extras_limits(s));
    } catch (const Error& e) {
      return send_error(res, 400, e.what());  // bad base64, not a PNG, too large: as img2img answers them
    }
    std::string infotext;
    const std::string image = run_one(s, in, x, &infotext);
    res.set_content(nlohmann::json{{"html_info", plaintext_to_html(infotext)}, {"image", image}}.dump(),
                    "application/json");
  });

  http.Post("/sdapi/v1/extra-batch-images", [&s](const httplib::Request& req, httplib::Response& res) {
    nlohmann::json body;
    if (!parse_body(req, res, &body)) return;
    const ExtrasUpscale x = parse_extras(body);
    DIFFUSE_CHECK_ARG(body.contains("imageList") && body["imageList"].is_array(),
                      "imageList: required (a list of {data, name} with base64-encoded PNGs)");
    const UploadLimits limits = extras_limits(s);
    std::vector<Upload> inputs;  // all decoded first: a bad one fails the request before any work
    for (size_t i = 0; i < body["imageList"].size(); ++i) {
      const nlohmann::json& item = body["imageList"][i];
      const std::string field = "imageList[" + std::to_string(i) + "]";
      DIFFUSE_CHECK_ARG(item.is_object() && item.contains("data"), field + ": must be {\"data\": base64 PNG, \"name\": ...}");
      try {
        inputs.push_back(decode_upload(item["data"], field + ".data", limits));
      } catch (const Error& e) {
        return send_error(res, 400, e.what());
      }
    }
    nlohmann::json images = nlohmann::json::array();
    std::string infotext;
    for (const Upload& in : inputs) images.push_back(run_one(s, in, x, &infotext));
    res.set_content(nlohmann::json{{"html_info", plaintext_to_html(infotext)}, {"images", images}}.dump(),
                    "application/json");
  });
}

}  // namespace diffuse::server
