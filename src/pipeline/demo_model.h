// Diffuse's built-in demo model (models/demo): a tiny SD 1.x trained in-house
// on procedural shape scenes (tools/demo_model), and the prompt-adherence
// scorer that checks its outputs against the attributes of their captions.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

namespace diffuse {

// The demo model's folder, models/demo of the data directory (data_dir.h:
// <prefix>/share/diffuse when installed, the source tree for a build-tree
// executable). nullopt when it is not there.
std::optional<std::string> demo_model_path();

// One held-out caption and the attributes an image made from it must show.
struct DemoCase {
  std::string caption, background, colour, shape, position, size;
};

struct DemoEvalSet {
  std::map<std::string, std::array<int, 3>> palette;  // colour name -> sRGB
  int image_size = 128;
  std::vector<DemoCase> cases;
};

// Reads eval_captions.json (written by tools/demo_model/train.py).
DemoEvalSet load_demo_eval_set(const std::string& path);

// What the scorer sees in one image; empty colour/position/shape when it finds
// no foreground. Rules (the same as tools/demo_model/scorer.py):
//  - background: per-channel median of a 4-pixel border ring, nearest palette colour;
//  - foreground: pixels farther than 60 (RGB distance) from that median; fewer
//    than 0.3% of the pixels means no shape;
//  - colour: per-channel median of the foreground, nearest palette colour;
//  - position: foreground centroid; within 0.12 of the middle on both axes is
//    "centre", else the axis with the larger offset gives left/right/top/bottom;
//  - shape: circle if area / (pi r^2) > 0.8 (r: largest centroid distance),
//    else square if > 0.52, else triangle if area / bounding box > 0.42, else star.
struct SceneReading {
  std::string background, colour, position, shape;
};
SceneReading read_scene(const uint8_t* rgb, int width, int height,
                        const std::map<std::string, std::array<int, 3>>& palette);

// The generation the adherence check scores: one image per case at the set's
// size, empty negative prompt, caption i with seed `seed` + i (what
// `diffuse generate --seed SEED+i` makes of it).
GenerationParams demo_eval_params(const DemoEvalSet& set, int steps, int64_t seed);

struct AdherenceScore {
  int images = 0;
  int background = 0, colour = 0, position = 0, shape = 0;  // matching images
  void add(const DemoCase& expected, const SceneReading& got);
  double percent(int hits) const { return images ? 100.0 * hits / images : 0.0; }
};

}  // namespace diffuse
