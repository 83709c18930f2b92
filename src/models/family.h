// Model families Diffuse understands. Variants differ through configs, never
// through branches in forward(); the family only picks defaults and key tables.
#pragma once
#include <string>

namespace diffuse {

enum class Family { kSD1, kSD2, kSDXL };
const char* family_name(Family f);        // "sd1", "sd2", "sdxl"
Family family_from_name(const std::string& s);  // sd1|sd15|sd2|sd21|sdxl (throws kInvalidArgument)

enum class Prediction { kEpsilon, kVPrediction };
const char* prediction_name(Prediction p);  // "epsilon", "v_prediction"

}  // namespace diffuse
