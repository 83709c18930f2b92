// A1111 live-preview options <-> PreviewOptions (preview_options.h).
#include "server/preview_options.h"

#include "server/server_state.h"

namespace diffuse::server {

namespace {

constexpr int kMaxPeriod = 10000;

bool is_set(const nlohmann::json& body, const char* key) { return body.is_object() && body.contains(key) && !body[key].is_null(); }

const char* a1111_type(PreviewMethod m) {
  switch (m) {
    case PreviewMethod::kCheap: return "Approx cheap";
    case PreviewMethod::kTaesd: return "TAESD";
    case PreviewMethod::kAuto: return "Approx NN";
  }
  return "Approx NN";
}

}  // namespace

nlohmann::json a1111_preview_options(const PreviewOptions& o) {
  return {{"show_progress_type", a1111_type(o.method)},
          {"show_progress_every_n_steps", o.every_n_steps},
          {"live_previews_enable", o.enabled}};
}

std::optional<PreviewOptions> a1111_preview_options_from(const nlohmann::json& body, const PreviewOptions& current) {
  PreviewOptions o = current;
  bool any = false;
  if (is_set(body, "show_progress_type")) {
    const std::string t = json_field<std::string>(body, "show_progress_type", "");
    if (t == "Approx cheap") {
      o.method = PreviewMethod::kCheap;
    } else if (t == "TAESD") {
      o.method = PreviewMethod::kTaesd;
    } else if (t == "Approx NN") {
      o.method = PreviewMethod::kAuto;
    } else if (t == "Full") {
      throw_error(ErrorCode::kInvalidArgument,
                  "show_progress_type 'Full' (a full VAE decode for every preview) is not supported: it costs about "
                  "as much as a denoising step; use 'TAESD' or 'Approx cheap'");
    } else {
      throw_error(ErrorCode::kInvalidArgument,
                  "show_progress_type '" + t + "' is not one of 'Approx cheap', 'TAESD', 'Approx NN' (auto)");
    }
    any = true;
  }
  if (is_set(body, "show_progress_every_n_steps")) {
    const int n = json_field<int>(body, "show_progress_every_n_steps", 1);
    DIFFUSE_CHECK_ARG(n >= -1 && n <= kMaxPeriod, "show_progress_every_n_steps must be between -1 and " +
                                                      std::to_string(kMaxPeriod) + ", got " + std::to_string(n));
    o.every_n_steps = n;
    any = true;
  }
  if (is_set(body, "live_previews_enable")) {
    o.enabled = json_field<bool>(body, "live_previews_enable", true);
    any = true;
  }
  if (!any) return std::nullopt;
  return o;
}

}  // namespace diffuse::server
