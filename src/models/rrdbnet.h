// RRDBNet, the generator of ESRGAN (Wang et al., "ESRGAN: Enhanced
// Super-Resolution Generative Adversarial Networks", 2018) and Real-ESRGAN,
// as BasicSR builds it (basicsr/archs/rrdbnet_arch.py):
//
//   x [N, C, H, W] in [0, 1]
//   (x2 / x1 models) pixel_unshuffle by u = 2 / 4    -> [N, C*u*u, H/u, W/u]
//   feat = conv_first(x)                              -> [N, nf, h, w]
//   body = conv_body(RRDB^nb(feat)); feat += body     (RRDB below)
//   n_up times: feat = lrelu(conv_upK(nearest2x(feat)))
//   out  = conv_last(lrelu(conv_hr(feat)))            -> [N, out, H*s, W*s], s = 2^n_up / u
//
//   RRDB(x)  = 0.2 * RDB3(RDB2(RDB1(x))) + x
//   RDB(x)   : x1..x4 = lrelu(convJ(cat(x, x1, .., x(J-1)))) (gc channels each),
//              0.2 * conv5(cat(x, x1, .., x4)) + x           (all convs 3x3, pad 1)
//   lrelu    = leaky ReLU, slope 0.2
//
// Two key layouts are read (configs as data: the layout is a table of names,
// applied once at load):
//  - BasicSR / Real-ESRGAN: conv_first, body.N.rdbK.convJ, conv_body,
//    conv_up1..n, conv_hr, conv_last; bare, or under params_ema / params.
//  - The original ESRGAN repository's (A1111's models/ESRGAN files such as
//    4x-UltraSharp): model.0, model.1.sub.N.RDBK.convJ.0, model.1.sub.NB,
//    then model.3, model.6, ... (one conv per upsampling, every 3rd index),
//    HR conv and last conv two and four indices after the last upsampling.
// nf, nb, gc, n_up, u and the channel counts are read from the tensor shapes.
// Variants that are not plain RRDBNets (the "plus" ESRGAN with 1x1 convs,
// SRVGGNetCompact, SwinIR, ...) are refused, naming what does not fit.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "models/weights.h"

namespace diffuse::rrdbnet {

struct Config {
  int in_channels = 3;   // image channels (before pixel_unshuffle)
  int out_channels = 3;
  int num_feat = 64;     // nf
  int num_block = 23;    // nb: RRDBs in the trunk
  int num_grow_ch = 32;  // gc: channels each dense-block conv adds
  int num_upsample = 2;  // nearest-2x + conv stages
  int unshuffle = 1;     // pixel_unshuffle factor in front: 1, 2 or 4
  int scale() const { return (1 << num_upsample) / unshuffle; }

  static Config realesrgan_x4plus();  // 4x: nf 64, nb 23, gc 32 (also ESRGAN's and 4x-UltraSharp's)
  static Config realesrgan_x2plus();  // 2x: the same with pixel_unshuffle 2
  void validate() const;              // throws kInvalidArgument
};

enum class KeyLayout { kBasicSR, kOldEsrgan };
const char* key_layout_name(KeyLayout l);  // "basicsr", "esrgan"

// The tensors a config needs, BasicSR names, in placement order.
WeightSpecs expected_tensors(const Config& c);

// What a file holds: its weights under BasicSR names (wrapper prefixes
// "params_ema." / "params." stripped, old names mapped), the layout it used
// and the config its shapes give. Throws Error(kIo) "<what>: ..." naming the
// problem when the tensors are not an RRDBNet (e.g. a LoRA, a UNet, SwinIR).
struct Detected {
  Config config;
  KeyLayout layout = KeyLayout::kBasicSR;
  TensorMap weights;
};
Detected detect(const TensorMap& tensors, const std::string& what);

struct Model {
  Config config;
  KeyLayout layout = KeyLayout::kBasicSR;
  DType dtype = DType::kF32;
  Device device = Device::kCPU;
  WeightTable weights;

  // Places the weights (checked against expected_tensors(config), extra names
  // rejected) on `device` as `dtype`. conv5 of every dense block is stored
  // pre-multiplied by the residual scale 0.2, so the block ends in one fused
  // conv + residual (exact up to f32 rounding).
  Model(const Detected& d, DType compute_dtype, Device on_device);

  // x [N, in, H, W] (H, W multiples of unshuffle; any floating dtype and
  // device, moved to the model's) -> [N, out, H*s, W*s] in the model's dtype
  // on its device; not clamped.
  Tensor forward(const Tensor& x) const;
};

// Reads a .pth / .pt (restricted unpickler) or .safetensors file and builds
// the model. Throws Error(kIo) naming the file and what is wrong with it.
std::shared_ptr<Model> load(const std::string& path, Device device, DType dtype = DType::kF32);
// The config and layout of a file, reading it but not placing the weights.
Detected probe_file(const std::string& path);

// Tiled inference: the input is cut into tiles of `tile` x `tile` pixels; each
// runs with `overlap` pixels of context on every side (clipped at the image
// edges), and only its core goes into the output, so tiles never blend and
// there is no seam. When the overlap covers the network's receptive field
// (receptive_radius()), tiled output equals untiled output up to f32
// rounding; with less, pixels near tile edges lose some far context
// (RRDBNet's field is wide: 351 input pixels for the 23-block model, which no
// practical overlap covers; A1111 tiles with 192 / 8 and blends the overlaps
// instead; docs/upscalers.md). tile 0: one pass.
struct TileOptions {
  int tile = 192;
  int overlap = 16;
  void validate() const;  // tile 0 or 16-4096, overlap 0-1024
};
// The network's receptive radius in input pixels (how far a pixel's output
// can see): every 3x3 conv on the longest path adds one pixel at its resolution.
int receptive_radius(const Config& c);

// x [1, in, H, W] f32 on the CPU (any H, W >= 1: padded by reflection to a
// multiple of unshuffle, as BasicSR pads, and cropped back) -> [1, out, H*s,
// W*s] f32 on the CPU. Tiles run on the model's device one at a time.
// `progress` (optional) is told tiles done / total after each.
Tensor upscale(const Model& m, const Tensor& x, const TileOptions& tiles,
               const std::function<void(int, int)>& progress = {});

}  // namespace diffuse::rrdbnet
