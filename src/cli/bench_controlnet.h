// `diffuse bench --controlnet N` (docs/controlnet.md "Speed"): N ControlNets
// of the benchmarked model's family with random full-size weights (as
// bench/bench_controlnet.cpp builds them: ControlNetModel.from_unet of the
// family's published UNet), written once to a temporary diffusers-named
// .safetensors so that the pipeline reads them as it reads a user's file, and
// N units using it (two units run it twice: the work of two ControlNets).
#pragma once
#include <string>
#include <vector>

#include "models/family.h"
#include "pipeline/controlnet_unit.h"

namespace diffuse::cli {

class RandomControlNets {
 public:
  // count 0..2 (more is refused: kInvalidArgument naming --controlnet); width x
  // height: the control image's size (the output size).
  RandomControlNets(Family family, int count, int width, int height);
  ~RandomControlNets();  // removes the temporary folder
  RandomControlNets(const RandomControlNets&) = delete;
  RandomControlNets& operator=(const RandomControlNets&) = delete;

  const std::vector<ControlNetUnit>& units() const { return units_; }
  double write_s() const { return write_s_; }  // making + writing the weights

 private:
  std::string dir_;
  std::vector<ControlNetUnit> units_;
  double write_s_ = 0;
};

}  // namespace diffuse::cli
