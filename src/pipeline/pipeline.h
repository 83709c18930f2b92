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
#include "pipeline/controlnet_unit.h"  // ControlNetUnit
#include "pipeline/ip_adapter_params.h"  // IpAdapterParams
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
  // Pipeline::random only: a few-step kind (pipeline/few_step.h: turbo, lcm, lightning, hyper) whose
  // defaults the random model takes; "lcm" also gives its UNet the guidance embedding
  // (time_cond_proj_dim 256, as LCM_Dreamshaper_v7 / lcm-sdxl).
  std::string random_kind;
};

struct ModelInfo {
  std::string name;          // file stem or folder name
  std::string path;
  Family family = Family::kSD1;
  Prediction prediction = Prediction::kEpsilon;
  bool single_file = false;
  bool refiner = false;      // an SDXL refiner: img2img or the second pass of a base model (docs/refiner.md)
  std::string sha256;        // of the single file; for folders, of the UNet weights file
  std::string short_hash;    // sha256[:10], A1111 "Model hash"
  int default_width = 512, default_height = 512, default_steps = 50;
  float default_cfg = 7.5f;
  std::string default_sampler;  // e.g. "pndm" for SD1 folders
  // A few-step model's kind (pipeline/few_step.h): "turbo", "lcm", "lightning", "hyper"; "" = a
  // regular model. The defaults above are that kind's then.
  std::string kind;
  bool kind_guessed = false;  // from the name or the scheduler's shape rather than the model's configs
  std::string kind_reason;    // why: "its name contains 'turbo'"
  // The UNet takes the guidance scale as an embedding (LCM-distilled, time_cond_proj_dim), never as CFG.
  bool guidance_embedding = false;
  std::string license;
  // Live-preview latent -> RGB factors fitted to this model's VAE
  // (model_index.json _diffuse_defaults.preview_factors, made by
  // tools/demo_model/fit_preview.py), rows of RGB, flattened: 5 rows (weights
  // of the 4 latent channels, bias), 15 (those 4, the 10 products z_a z_b for
  // a <= b, bias) or 47 (the 3x3 neighbourhood's 36 values, channel-major then
  // row then column with edges repeated, the 10 products, bias); empty: the
  // family's published linear map.
  std::vector<float> preview_factors;
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
VaeTiling vae_tiling_from_name(const std::string& s);  // auto|on|off (true/false, 1/0; throws kInvalidArgument)
const char* vae_tiling_name(VaeTiling t);

class Pipeline;

// The SDXL refiner of a generation (docs/refiner.md), diffusers' "ensemble of
// experts" / A1111's refiner_checkpoint + refiner_switch_at: the base model
// runs the first `switch_at` of the schedule (denoising_end), the refiner the
// rest on the same latents (denoising_start), with one generator for the
// whole call. The aesthetic scores condition any model that asks for them
// (model_index.json requires_aesthetics_score: the refiner), here or when the
// refiner runs alone as img2img.
struct RefinerParams {
  std::shared_ptr<Pipeline> model;  // the loaded refiner, or
  std::string path;                 // one to load for this call (same device and precision as the base)
  double switch_at = 0.8;           // fraction of the schedule the base runs (0 < switch_at < 1)
  double aesthetic_score = 6.0;           // diffusers' aesthetic_score
  double negative_aesthetic_score = 2.5;  // diffusers' negative_aesthetic_score
  bool enabled() const { return model != nullptr || !path.empty(); }
};

// Upscaler models (ESRGAN) for the hires fix, as a front end binds its
// UpscalerLibrary (adapters/upscalers.h; pipeline/hires.h hires_models_from):
// the names it lists, and its upscale().
struct HiresUpscalerModels {
  std::function<std::vector<std::string>()> names;
  std::function<image::Rgb(const std::string& name, const image::Rgb& in, int width, int height, Device device)>
      upscale;
};

// AUTOMATIC1111's hires fix (its txt2img enable_hr; docs/hires-fix.md,
// pipeline/hires.cpp): a first pass at the base size, an upscale of its
// latents (the "Latent ..." modes, torch's interpolate) or of its image (a
// pixel upscaler), then an img2img pass at the target size. Text-to-image only.
struct HiresParams {
  bool enabled = false;
  double scale = 2.0;              // hr_scale: the target is int(size * scale) when no resize is set
  int resize_x = 0, resize_y = 0;  // hr_resize_x/y: one 0 keeps the aspect ratio; both set: cover, then centre crop
  std::string upscaler = "Latent";  // a latent mode, "Lanczos", "Nearest", "None", or an upscaler model's name
  int second_pass_steps = 0;       // hr_second_pass_steps; 0: the first pass's steps
  double denoising_strength = 0.7;  // the second pass's strength (diffusers' rule: int(steps * strength) run)
  std::optional<std::string> prompt, negative_prompt;  // hr_prompt / hr_negative_prompt; unset or "": the first pass's
  std::string sampler;             // hr_sampler_name; "": the first pass's
  // Upscaler models (ESRGAN) by name; Lanczos / Nearest / None work without them.
  HiresUpscalerModels models;
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
  float cfg_scale = -1.0f;      // < 0: family default; <= 1 disables CFG. An LCM-distilled UNet
                                // (time_cond_proj_dim) takes it as its guidance embedding, never as CFG
  // TCD's gamma (0 deterministic .. 1 fully stochastic); unset = 0.3. A1111's "eta" field.
  std::optional<double> eta;
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
  // A VAE to decode (and encode) with instead of the model's own (docs/vae.md):
  // a diffusers VAE folder or a single .safetensors / .ckpt file (LDM or
  // diffusers keys). "": the model's own. Read once and kept while calls ask for it.
  std::string vae;
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

  // ---- Multi-pass hooks (the SDXL refiner, hires fix) ----
  // Start from latents instead of noise or an init image: [1 or n, 4, h/8, w/8]
  // f32 in the UNet's space (as GenerationResult::final_latents). With
  // denoising_start == 0 they are an img2img start: noised by the sampler's
  // add_noise to the first step that edit.strength picks (diffusers' Img2Img
  // pipeline given latents as its image). With denoising_start > 0 they
  // continue unchanged from that point of the schedule (diffusers'
  // denoising_start: the refiner's hand-off). Width/height come from them.
  Tensor init_latents;
  double denoising_start = 0.0;  // diffusers' denoising_start (0: off)
  double denoising_end = 1.0;    // diffusers' denoising_end (1: off): the steps above the cut-off only
  bool output_latents = false;   // no VAE decode: images empty, result.final_latents hold the result
                                 // (a run stopped with decode_when_stopped still decodes its partial images)
  // Continue this generator's stream instead of seeding a new one (one stream per user call across passes).
  std::shared_ptr<Generator> generator;
  // The SDXL refiner (docs/refiner.md): an ensemble-of-experts hand-off to a
  // second model part-way down the schedule (pipeline/refiner.cpp).
  RefinerParams refiner;
  // AUTOMATIC1111's hires fix (pipeline/hires.cpp).
  HiresParams hires;
  // ControlNets (docs/controlnet.md): each with its control image, weight and
  // schedule window; several add up (pipeline/controlnet_step.cpp).
  std::vector<ControlNetUnit> controlnets;
  // IP-Adapter (docs/ip-adapter.md): reference images as an image prompt
  // (pipeline/ip_adapter_step.cpp).
  IpAdapterParams ip_adapter;

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
  double lora_s = 0;  // applying a changed LoRA set (merge, or restore the originals); ~0 when unchanged
  double park_s = 0;  // moving base / refiner weights between host and device memory (refiner.cpp)
  int unet_evals = 0;
  // Host<->device transfers in the denoising loop, not counting what a
  // progress callback copied (previews): 0 by design.
  uint64_t loop_transfers = 0;
  // Adds another pass's times and counts (a multi-pass call: hires fix,
  // refiner), all but total_s, which the caller measures over the whole call.
  void add(const Timings& o) {
    load_s += o.load_s;
    text_encode_s += o.text_encode_s;
    vae_encode_s += o.vae_encode_s;
    denoise_s += o.denoise_s;
    vae_decode_s += o.vae_decode_s;
    lora_s += o.lora_s;
    park_s += o.park_s;
    unet_evals += o.unet_evals;
    loop_transfers += o.loop_transfers;
  }
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
  bool vae_tiled = false;   // the VAE decode ran in tiles (GenerationParams::vae_tiling)
  // What the user should know that did not stop the run ("init image 500x375
  // resized to 496x368", "the mask is all black: nothing to repaint").
  std::vector<std::string> warnings;
  Timings timings;
  // The VAE that decoded (GenerationParams::vae): A1111's "VAE" (its file name)
  // and "VAE hash" (sha256[:10]); both empty for the model's own VAE.
  std::string vae_name, vae_hash;
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

  // Device memory between passes (the SDXL refiner hand-off when base and
  // refiner do not both fit; docs/refiner.md "Memory"): park_weights() moves
  // every weight to host memory (exact copies) and returns the device bytes it
  // gave up; unpark_weights() places them on the device again and throws
  // Error(kOutOfMemory), still parked, when they do not fit. generate() unparks
  // by itself. Both wait for running generate() calls; no-ops on the CPU.
  size_t park_weights();
  void unpark_weights();
  bool weights_parked() const;

  // Cheap latent -> RGB approximation for live previews: the model's own
  // `factors` (ModelInfo::preview_factors, output in [-1, 1]) when given, else
  // the family's published linear map.
  static std::vector<uint8_t> preview_rgb(const Tensor& latents, int index, Family family, int* width, int* height,
                                          const std::vector<float>& factors = {});

  struct Impl;

 private:
  explicit Pipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
