// AUTOMATIC1111 "infotext": the generation parameters written into the PNG
// "parameters" chunk and read back by PNG Info, Civitai and prompt readers.
// Format (modules/processing.py:create_infotext):
//   <prompt>
//   Negative prompt: <negative>          (omitted when empty)
//   Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, ...
// Values containing ',', ':' or a newline are JSON-quoted (infotext_utils.quote).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

struct InfotextFields {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  std::string sampler = "Euler";  // A1111 sampler name, e.g. "DPM++ 2M"
  std::string schedule_type;      // "Karras", "Exponential", ...; empty: omitted
  double cfg_scale = 7.0;
  int64_t seed = 0;
  int width = 512;
  int height = 512;
  std::string model_hash;         // AutoV2: sha256(file)[:10]; empty: omitted
  std::string model;              // file stem; empty: omitted
  std::string vae_hash;
  std::string vae;
  std::optional<int64_t> variation_seed;
  std::optional<double> variation_seed_strength;
  std::optional<double> denoising_strength;
  int clip_skip = 1;              // written only when > 1
  std::optional<int64_t> ensd;    // "Eta noise seed delta"
  std::string rng;                // "CPU" / "GPU" / "NV"; empty: omitted
  // Anything else, in order, written after RNG and before Version
  // (e.g. {"Hires upscale", "2"}); parse_infotext puts unknown keys here.
  std::vector<std::pair<std::string, std::string>> extra;
  std::string version;            // e.g. "diffuse 0.1.0"; empty: omitted
};

std::string format_infotext(const InfotextFields& fields);

// Parses text written by A1111 (any version), Forge, or format_infotext.
// Old "Sampler: DPM++ 2M Karras" (no "Schedule type") is split into sampler
// "DPM++ 2M" + schedule type "Karras". Missing keys keep the defaults above
// (Clip skip 1, as A1111 assumes), except the sampler, which stays empty.
// Never throws; the fuzzing entry point.
InfotextFields parse_infotext(const std::string& text);

// A1111's quote(): JSON-quotes a value that contains ',', ':' or '\n'.
std::string infotext_quote(const std::string& value);
// A1111's number formatting: integral values without ".0" ("7"), others in
// shortest round-trip form ("7.5", "0.35").
std::string infotext_number(double value);

}  // namespace diffuse
