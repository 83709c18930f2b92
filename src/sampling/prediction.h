// What a diffusion model's output predicts: diffusers' `prediction_type`.
// Defined here, in the sampling layer (the schedulers are what interpret it);
// models/family.h re-exports it for the model side (ModelInfo::prediction),
// which only ever holds epsilon or v_prediction.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace diffuse {

enum class Prediction : uint8_t {
  kEpsilon,      // the added noise (SD 1.x, SD 2.x 512, SDXL)
  kVPrediction,  // v = alpha * noise - sigma * x0 (Salimans & Ho 2022; SD 2.x 768)
  kSample,       // x0 itself
};

// diffusers' spelling: "epsilon", "v_prediction", "sample".
inline const char* prediction_name(Prediction p) {
  switch (p) {
    case Prediction::kEpsilon: return "epsilon";
    case Prediction::kVPrediction: return "v_prediction";
    case Prediction::kSample: return "sample";
  }
  return "?";
}

// The inverse of prediction_name(); nullopt for any other string.
inline std::optional<Prediction> parse_prediction(std::string_view s) {
  if (s == "epsilon") return Prediction::kEpsilon;
  if (s == "v_prediction") return Prediction::kVPrediction;
  if (s == "sample") return Prediction::kSample;
  return std::nullopt;
}

// A set of predictions, as bits (1 << Prediction).
using PredictionSet = uint32_t;
constexpr PredictionSet prediction_bit(Prediction p) { return PredictionSet{1} << static_cast<unsigned>(p); }

}  // namespace diffuse
