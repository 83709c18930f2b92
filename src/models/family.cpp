#include "models/family.h"

#include "core/error.h"

namespace diffuse {

const char* family_name(Family f) {
  switch (f) {
    case Family::kSD1: return "sd1";
    case Family::kSD2: return "sd2";
    case Family::kSDXL: return "sdxl";
  }
  return "?";
}

Family family_from_name(const std::string& s) {
  if (s == "sd1" || s == "sd14" || s == "sd15" || s == "sd1.x") return Family::kSD1;
  if (s == "sd2" || s == "sd21" || s == "sd2.x") return Family::kSD2;
  if (s == "sdxl" || s == "sdxl-base") return Family::kSDXL;
  throw_error(ErrorCode::kInvalidArgument, "unknown model family '" + s + "' (expected sd1, sd2 or sdxl)");
}

const char* prediction_name(Prediction p) { return p == Prediction::kEpsilon ? "epsilon" : "v_prediction"; }

}  // namespace diffuse
