// Model families Diffuse understands. Variants differ through configs, never
// through branches in forward(); everything known about a family is a row of
// the table in family_spec.h.
#pragma once
#include <string>

#include "sampling/prediction.h"

namespace diffuse {

enum class Family { kSD1, kSD2, kSDXL };
const char* family_name(Family f);        // "sd1", "sd2", "sdxl"
Family family_from_name(const std::string& s);  // a row's name or alias: sd1|sd15|sd2|sd21|sdxl... (throws kInvalidArgument)

// Prediction (kEpsilon, kVPrediction, kSample) and prediction_name() come from
// sampling/prediction.h, the layer that interprets them; a model's is epsilon
// or v_prediction.

}  // namespace diffuse
