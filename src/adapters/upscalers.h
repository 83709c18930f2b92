// Pixel upscalers: for hires fix, `diffuse upscale` and A1111's
// /sdapi/v1/extra-single-image and extra-batch-images.
//
// Built in: "Lanczos" (image::resize: Lanczos-4 growing, area shrinking) and
// "Nearest". Models: ESRGAN / Real-ESRGAN RRDBNet files (.pth through the
// restricted unpickler, .safetensors; both the old ESRGAN "model.N" key layout
// and BasicSR's, bare or under params_ema / params) found under the folders
// given (A1111's models/ESRGAN by default), known by their file stem, as
// A1111 lists them. The model's kind and scale come from its tensor shapes
// (models/rrdbnet.h), read once when listed.
//
// A model upscaler runs at its native factor, repeatedly while the image is
// smaller than the target (as A1111's Upscaler.upscale does), then the result
// is resized to exactly the target with Lanczos. Weights are loaded on first
// use and cached per (path, device): upscale() may be called from several
// threads at once (the cache is locked; inference itself runs unlocked).
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "image/image_ops.h"

namespace diffuse {

namespace rrdbnet {
struct Model;
}

struct UpscalerInfo {
  std::string name;  // "Lanczos", "Nearest", or the model file's stem ("4x-UltraSharp")
  std::string path;  // "" for the built-in ones
  std::string kind;  // "lanczos" | "nearest" | "esrgan"
  int scale;         // the model's native factor (1, 2, 4, 8); 4 for the built-in ones (A1111 lists them so)
};

// Tiled inference for the models: tile edge in input pixels (0 = never tile)
// and the overlap each tile gets on each side; see models/rrdbnet.h.
struct UpscalerTiling {
  int tile = 192;
  int overlap = 16;
};

class UpscalerLibrary {
 public:
  explicit UpscalerLibrary(std::vector<std::string> dirs);  // models/ESRGAN by default
  ~UpscalerLibrary();
  UpscalerLibrary(const UpscalerLibrary&) = delete;
  UpscalerLibrary& operator=(const UpscalerLibrary&) = delete;

  std::vector<UpscalerInfo> list() const;  // Lanczos, Nearest, then the model files found
  void refresh();                          // rescans the folders (and drops cached weights of files gone or changed)

  // `in` upscaled to exactly target_w x target_h (1-16384 each). `name` is a
  // listed name (case-insensitive, as A1111 matches upscaler names), or, when
  // allow_paths() is on, a path to a .pth / .safetensors file.
  // Throws Error(kNotFound, "Upscaler not found: NAME") for an unknown name,
  // Error(kIo) for a file that is not an RRDBNet model (naming what is wrong),
  // Error(kInvalidArgument) for bad sizes.
  image::Rgb upscale(const std::string& name, const image::Rgb& in, int target_w, int target_h,
                     Device device) const;

  // The entry a name resolves to (same rules as upscale()); throws as upscale() does.
  UpscalerInfo find(const std::string& name) const;

  // Whether a name may be a path to any model file (the CLI: on; the server: off,
  // so a client cannot make it open other files).
  void set_allow_paths(bool allow);
  void set_tiling(UpscalerTiling tiling);
  UpscalerTiling tiling() const;
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  std::shared_ptr<const rrdbnet::Model> model_for(const UpscalerInfo& info, Device device) const;

  std::vector<std::string> dirs_;
  mutable std::mutex mu_;
  std::vector<UpscalerInfo> models_;  // the files found, natural path order
  bool allow_paths_ = true;
  UpscalerTiling tiling_;
  mutable std::map<std::string, std::shared_ptr<const rrdbnet::Model>> cache_;  // key: device + path
};

// ---- A1111's "Extras" upscale (scripts/postprocessing_upscale.py) ----------
// One step shared by `diffuse upscale` and /sdapi/v1/extra-single-image and
// extra-batch-images (extras_upscale.cpp).
struct ExtrasUpscale {
  int resize_mode = 0;        // 0 "Scale by" upscaling_resize, 1 "Scale to" width x height
  double scale_by = 2.0;      // upscaling_resize (A1111's API default 2)
  int to_width = 512, to_height = 512;  // upscaling_resize_w / _h
  bool crop = true;           // upscaling_crop: "Scale to" fills the size and centre-crops
  std::string upscaler_1 = "None";      // "None": the image is returned unchanged
  std::string upscaler_2 = "None";
  double upscaler_2_visibility = 0.0;   // extras_upscaler_2_visibility: blend weight of upscaler 2, 0-1
  void validate() const;                // throws kInvalidArgument naming the field
};

struct ExtrasResult {
  image::Rgb image;
  // A1111's postprocessing infotext, e.g. "Postprocess upscale by: 4, Postprocess upscaler: 4x-UltraSharp";
  // "" when nothing ran. It goes into the PNG's "postprocessing" text chunk.
  std::string infotext;
};

// The output size of "Scale by": int(side * scale) // 8 * 8, as A1111's
// Upscaler.upscale rounds it (a side below 8 keeps int(side * scale), at least 1).
int extras_scaled_side(int side, double scale);
// Throws Error(kNotFound) for an unknown upscaler name and Error(kInvalidArgument)
// for sizes outside 1-16384 (or more than max_pixels output pixels).
ExtrasResult run_extras_upscale(const UpscalerLibrary& lib, const image::Rgb& in, const ExtrasUpscale& x,
                                Device device, int64_t max_pixels = int64_t{16384} * 16384);

}  // namespace diffuse
