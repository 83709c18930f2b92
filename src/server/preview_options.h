// A1111's live-preview options (/sdapi/v1/options) as Diffuse's PreviewOptions
// (pipeline/live_preview.h); docs/previews.md has the table.
//   show_progress_type: "Approx cheap" -> cheap, "TAESD" -> taesd,
//     "Approx NN" (A1111's default; its NN model is not in Diffuse) -> auto:
//     TAESD when a decoder is found, else cheap. "Full" (a whole VAE decode
//     per preview) is refused: it would cost about a UNet step each time.
//   show_progress_every_n_steps: the period; 0 or -1 (A1111: only the result) no live previews.
//   live_previews_enable: false, no live previews.
#pragma once
#include <optional>

#include <nlohmann/json.hpp>

#include "pipeline/live_preview.h"

namespace diffuse::server {

// The three options as GET /sdapi/v1/options shows them.
nlohmann::json a1111_preview_options(const PreviewOptions& options);
// `current` with the options `body` sets, all checked first (Error
// kInvalidArgument naming the field and the accepted values); nullopt when
// `body` sets none of them.
std::optional<PreviewOptions> a1111_preview_options_from(const nlohmann::json& body, const PreviewOptions& current);

}  // namespace diffuse::server
