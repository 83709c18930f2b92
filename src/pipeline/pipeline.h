// The public text-to-image API: load a model (diffusers folder, single-file
// .safetensors or .ckpt), then generate images. One Pipeline serves many
// generate() calls; each call carries its own RNG, progress callback and
// cancellation (nothing global).
#pragma once
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "image/image_ops.h"
#include "models/family.h"
#include "models/vae.h"  // VaeConfig
#include "sampling/rng.h"  // RngKind

namespace diffuse {

enum class Precision { kFp32, kFp16, kBf16 };
const char* precision_name(Precision p);
Precision precision_from_name(const std::string& s);  // fp32|fp16|bf16 (throws kInvalidArgument)

struct LoadOptions {
  Device device = Device::kCPU;
  // For single files: a diffusers folder whose configs (unet/vae/text encoder/
  // scheduler/tokenizer) describe the checkpoint, like diffusers' from_single_file(config=...).
  // Without it the family's published configs are used.
  std::string config_dir;
  std::optional<Precision> precision;     // default: fp32 on CPU, fp16 on CUDA (bf16 for SD2 attention-safe)
  std::optional<Prediction> prediction;   // override detection (single files have no config)
};

struct ModelInfo {
  std::string name;          // file stem or folder name
  std::string path;
  Family family = Family::kSD1;
  Prediction prediction = Prediction::kEpsilon;
  bool single_file = false;
  std::string sha256;        // of the single file; for folders, of the UNet weights file
  std::string short_hash;    // sha256[:10], A1111 "Model hash"
  int default_width = 512, default_height = 512, default_steps = 50;
  float default_cfg = 7.5f;
  std::string default_sampler;  // e.g. "pndm" for SD1 folders
  std::string license;
  // Problems worth telling the user that do not stop loading, e.g. tensors
  // holding NaN/Inf ("unet: 'conv_in.weight' (3 non-finite of 11520)").
  std::vector<std::string> warnings;
};

// A1111's "Masked content" (its API's inpainting_fill: 0 fill, 1 original,
// 2 latent noise, 3 latent nothing), for models with a 4-channel UNet.
enum class MaskedContent { kFill = 0, kOriginal = 1, kLatentNoise = 2, kLatentNothing = 3 };
MaskedContent masked_content_from_name(const std::string& s);  // fill|original|noise|nothing (or 0-3)
const char* masked_content_name(MaskedContent m);

// Editing an image instead of starting from noise (docs/editing.md). With an
// init image and no mask: img2img. With a mask (or an outpaint border): inpainting,
// by a 4-channel model (latents outside the mask reset to the noised original
// after every step) or a 9-channel inpainting model (mask and masked-image
// latents as extra UNet input), as diffusers' StableDiffusion(XL)Img2Img /
// InpaintPipeline do.
struct EditParams {
  image::Rgb init_image;            // empty: text-to-image
  image::Gray mask;                 // empty: img2img; 255 = repaint (any size: resized to the image's)
  // diffusers' rule: with N steps, the last min(int(N * strength), N) steps
  // of the schedule run (the product taken in double from the decimal value).
  // 0 returns the input unchanged.
  double strength = 0.75;
  image::ResizeMode resize_mode = image::ResizeMode::kJustResize;  // init image -> width x height
  int mask_blur = 4;                // pixels; feathers the overlay (the denoising uses the sharp mask)
  bool invert_mask = false;
  MaskedContent masked_content = MaskedContent::kOriginal;  // 4-channel models
  bool only_masked = false;         // A1111 inpaint_full_res: work on the mask's region at full size
  int only_masked_padding = 32;     // pixels around the mask's bounding box
  // true (A1111): pixels outside the mask are the original's, pasted back with
  // the blurred mask. false: diffusers' raw pipeline output.
  bool overlay = true;
  image::OutpaintSpec outpaint;     // a border to grow and inpaint
  bool active() const { return !init_image.empty(); }
};

// A LoRA / LyCORIS file applied to a generation (docs/adapters.md): merged
// into the weights while the call runs, and kept merged for the next call
// with the same set. A1111's <lora:name:w> sets both weights, <lora:name:te:unet>
// each (text encoder first, as A1111's extra_networks_lora reads them).
struct LoraRef {
  std::string path;  // a resolved file (.safetensors, or .pt/.ckpt through the restricted unpickler)
  float unet_weight = 1.0f;
  float te_weight = 1.0f;
  bool operator==(const LoraRef&) const = default;
};

// Whether the VAE decodes (and an edit encodes) in tiles (models/vae.h
// VaeTileOptions, docs/vae-tiling.md): the same image up to f32 rounding, with
// activation memory set by the tile instead of the image, at several times the
// VAE's time.
enum class VaeTiling {
  kAuto,  // tiles only when the untiled decode would not fit in memory (a result warning says so)
  kOn,    // always tiles (A1111's tiled_vae / --vae-tiling)
  kOff,   // never; a size whose decode does not fit is refused
};

struct GenerationParams {
  using VaeTiling = diffuse::VaeTiling;
  std::string prompt;
  std::optional<std::string> negative_prompt;  // nullopt = diffusers' None (SDXL: zero embeddings)
  // Optional per-image prompts (A1111 all_prompts); when set, images = prompts.size()
  // and negative_prompts (if set) must have the same length.
  std::vector<std::string> prompts;
  std::vector<std::string> negative_prompts;
  int width = 0, height = 0;    // 0: family default
  int steps = 0;                // 0: family default
  float cfg_scale = -1.0f;      // < 0: family default; <= 1 disables CFG
  std::string sampler;          // "" = model default; else a name in sampling/sampler_catalog.h (euler_a, heun, ...)
  std::string schedule = "default";  // a schedule of the catalogue: default|karras
  int64_t seed = -1;            // -1: random (the chosen seed is reported)
  RngKind rng = RngKind::kCpu;
  int images = 1;               // batched through the UNet together
  // false (diffusers): one generator seeded `seed` draws the whole batch's noise.
  // true (AUTOMATIC1111): image i's initial noise comes from its own generator
  // seeded seed + i, and its metadata says Seed: seed + i.
  bool seed_per_image = false;
  int clip_skip = 1;            // 1 = last layer
  // What a progress callback's stop does: false throws kCancelled; true
  // (A1111's /interrupt) ends the loop there and decodes the latents of the
  // last step taken, so the result holds the partial images
  // (GenerationResult::stopped_at_step says where). A callback that wants no
  // images even then throws kCancelled itself.
  bool decode_when_stopped = false;
  // Tiled VAE decode / edit encode: automatic (when the untiled decode would
  // not fit: host memory on the CPU, an out-of-memory on CUDA), always or never.
  VaeTiling vae_tiling = VaeTiling::kAuto;
  // SDXL micro-conditioning (h, w order as diffusers); 0 = (height, width) / (0, 0).
  std::array<int, 2> original_size{0, 0};
  std::array<int, 2> crops_coords_top_left{0, 0};
  std::array<int, 2> target_size{0, 0};
  EditParams edit;               // init image, mask, strength, ... (empty: text-to-image)
  std::vector<LoraRef> loras;    // LoRA / LyCORIS files, applied in this order
  // Textual inversion, A1111's rule: an embedding file (.pt, .safetensors,
  // .bin) whose stem appears as a word in a prompt or negative prompt is used
  // there. Looked up in these folders, and among `embeddings` (files).
  std::vector<std::string> embedding_dirs;
  std::vector<std::string> embeddings;
  // Tests: fixed initial latents [images, 4, h/8, w/8] (multiplied by init_noise_sigma like diffusers).
  Tensor initial_latents;

  void validate() const;  // throws kInvalidArgument with the limit that was broken
};

struct StepProgress {
  int step = 0;          // 1-based, after the step
  int total_steps = 0;
  double elapsed_s = 0;
  // Current x [images, 4, h/8, w/8], f32, on the pipeline's device: a
  // callback that shows it copies it to the host (.to(Device::kCPU)).
  Tensor latents;
};
// Return true to stop the run at this step boundary: kCancelled is thrown, or
// with GenerationParams::decode_when_stopped the partial images are returned.
using ProgressCallback = std::function<bool(const StepProgress&)>;

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width*height*3
  int64_t seed = 0;
  std::string parameters;    // A1111 infotext
};

struct Timings {
  double load_s = 0, text_encode_s = 0, vae_encode_s = 0, denoise_s = 0, vae_decode_s = 0, total_s = 0;
  int unet_evals = 0;
  // Host<->device transfers in the denoising loop, not counting what a
  // progress callback copied (previews): 0 by design.
  uint64_t loop_transfers = 0;
};

// The largest image is set by memory, not by a constant: the VAE decode of one
// width x height image holds about this many bytes of activations at its peak
// (its last up block runs at full resolution), an estimate used to refuse a size
// before any denoising is spent on it.
uint64_t vae_decode_peak_bytes(const VaeConfig& vae, DType activation_dtype, int width, int height);
// Throws kInvalidArgument ("... needs about X GiB ..., Y GiB available ...") when
// `needed` exceeds `available`; available == 0 means unknown (no check).
void check_fits_in_memory(uint64_t needed, uint64_t available, int width, int height, const char* where);

struct GenerationResult {
  std::vector<Image> images;
  Tensor final_latents;  // [images, 4, h/8, w/8] f32, before / scaling_factor
  Tensor decoded;        // [images, 3, H, W] f32 in [0, 1] (what the PNGs hold before rounding)
  int64_t seed = 0;
  int stopped_at_step = 0;  // 0: ran every step; k: stopped after step k (decode_when_stopped)
  int steps_run = 0;        // denoising steps taken (img2img: about strength x steps)
  // What the user should know that did not stop the run ("init image 500x375
  // resized to 496x368", "the mask is all black: nothing to repaint").
  std::vector<std::string> warnings;
  Timings timings;
};

// What Pipeline::load would report about a model (family, prediction where
// the checkpoint states it, defaults, licence; no hash) from its configs and
// headers alone (models/probe.h): no weights are read. A variant that
// text-to-image cannot run is listed, with the reason in warnings. Throws as
// probe() does.
ModelInfo describe_model(const std::string& path);

class Pipeline {
 public:
  static std::unique_ptr<Pipeline> load(const std::string& path, const LoadOptions& options = {});
  // A full-size published architecture (sd15, sd21, sdxl) with deterministic
  // random weights (never zeros), for benchmarks: speed does not depend on values.
  static std::unique_ptr<Pipeline> random(const std::string& arch, const LoadOptions& options = {},
                                          uint64_t seed = 1234);
  ~Pipeline();

  const ModelInfo& info() const;
  GenerationResult generate(const GenerationParams& params, const ProgressCallback& progress = {});

  // Cheap latent -> RGB approximation for live previews (a fixed linear map per family).
  static std::vector<uint8_t> preview_rgb(const Tensor& latents, int index, Family family, int* width, int* height);

  struct Impl;

 private:
  explicit Pipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
