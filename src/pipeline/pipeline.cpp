// Text-to-image generation: a port of diffusers' StableDiffusionPipeline /
// StableDiffusionXLPipeline __call__ (encode prompt, prepare latents, denoise
// with classifier-free guidance, decode), with A1111-style metadata.
#include "pipeline/pipeline.h"
#include "core/runtime_options.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <shared_mutex>

#include "core/ops.h"
#include "io/infotext.h"
#include "models/family_spec.h"
#include "pipeline/edit_plan.h"
#include "pipeline/hires.h"
#include "pipeline/pipeline_impl.h"
#include "sampling/rng.h"
#include "sampling/sampler_catalog.h"


namespace diffuse {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr int kMaxSide = 4096;
constexpr int kMaxSteps = 1000;
constexpr int kMaxImages = 64;

// MemAvailable of /proc/meminfo in bytes; 0 when it cannot be read.
uint64_t host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

// A1111 sampler display names (the "Sampler:" infotext field).
std::string a1111_sampler_name(const std::string& s) {
  const SamplerSpec* r = find_sampler(s);
  return r ? r->a1111_name : s;
}

// One UNet evaluation per denoising step, on the pipeline's device: the
// input, the timestep and the output stay there (no host round trip).
// Where the device records graphs (CUDA), the input goes into fixed device
// buffers and, after one eager call (which picks the cuDNN/cuBLASLt plans and
// sizes their workspaces), the whole forward is captured once and replayed
// for every later step: one launch instead of ~1-3k kernel launches per step
// (torch.cuda.graphs / diffusers' "reduce-overhead" compile mode do the same).
// The conditioning tensors stay alive for the graph's lifetime (it reads their
// memory). DIFFUSE_CUDA_GRAPH=0 keeps every step eager (comparison, debugging).
class UNetStepper {
 public:
  // timesteps: every step's timestep, uploaded once as a [steps, batch] table.
  // timestep_cond: an LCM UNet's guidance embedding (UNet::forward), else undefined.
  UNetStepper(const Pipeline::Impl& m, const Tensor& context, const Tensor& pooled, const Tensor& time_ids,
              int64_t batch, const std::vector<float>& timesteps, const Tensor& timestep_cond = {})
      : m_(m), context_(context), pooled_(pooled), time_ids_(time_ids), cond_(timestep_cond) {
    std::vector<float> table;
    for (float t : timesteps) table.insert(table.end(), static_cast<size_t>(batch), t);
    t_table_ = Tensor::from_vector(table, {static_cast<int64_t>(timesteps.size()), batch}).to(m.device);
    use_graph_ = m.device != Device::kCPU && runtime_options().cuda_graph;
  }

  // model_in: [B, C, h, w] in the activation dtype on the device; the UNet's output likewise.
  Tensor operator()(const Tensor& model_in, int step) {
    const Tensor t = t_table_.select(0, step);
    if (!use_graph_) return m_.unet->forward(model_in, t, context_, pooled_, time_ids_, nullptr, extras(), cond_);
    if (!x_.defined()) {
      x_ = Tensor::empty(model_in.shape(), model_in.dtype(), m_.device);
      t_ = Tensor::empty(t.shape(), DType::kF32, m_.device);
    }
    DIFFUSE_CHECK(model_in.shape() == x_.shape(), ErrorCode::kInvalidArgument, "[pipeline] UNet input shape changed mid-run");
    const Tensor x = model_in.contiguous();
    copy_bytes(x_.raw_data(), m_.device, x.raw_data(), m_.device, x.nbytes());
    copy_bytes(t_.raw_data(), m_.device, t.raw_data(), m_.device, t.nbytes());
    auto eager = [&] { return m_.unet->forward(x_, t_, context_, pooled_, time_ids_, nullptr, extras(), cond_); };
    if (calls_++ == 0) return eager();
    if (!graph_) {
      try {
        graph_ = backend_for(m_.device).capture([&] { out_ = eager(); });
      } catch (const Error& e) {
        // Some op could not be captured (a host sync): stay eager for this run.
        if (runtime_options().cuda_log) std::fprintf(stderr, "[pipeline] graph capture failed: %s\n", e.what());
        graph_.reset();
      }
      if (!graph_) {
        out_ = Tensor();
        use_graph_ = false;
        return (*this)(model_in, step);
      }
    }
    graph_->replay();
    return out_;
  }

  // IP-Adapter tokens for every call (they ride in UNetResiduals; nullptr: none). Set before the first call.
  void set_image_prompt(const UNetImagePrompt* ip) { extras_.image_prompt = ip; }

  // After the last step: the graph, its private memory pool and the step buffers go back to the
  // allocator, so the VAE decode that follows does not stack on top of them (peak memory).
  void release() {
    graph_.reset();
    x_ = t_ = out_ = t_table_ = Tensor();
  }

 private:
  const Pipeline::Impl& m_;
  Tensor context_, pooled_, time_ids_, cond_;
  UNetResiduals extras_;
  const UNetResiduals* extras() const { return extras_.image_prompt ? &extras_ : nullptr; }
  Tensor t_table_;
  bool use_graph_ = false;
  Tensor x_, t_, out_;
  std::unique_ptr<DeviceGraph> graph_;
  int calls_ = 0;
};

// [1, 3, H, W] f32 in [-1, 1]: diffusers' VaeImageProcessor (x / 255 * 2 - 1, in f32).
Tensor rgb_to_tensor(const image::Rgb& im) {
  const int64_t hw = static_cast<int64_t>(im.width) * im.height;
  std::vector<float> v(static_cast<size_t>(3 * hw));
  for (int64_t i = 0; i < hw; ++i) {
    for (int c = 0; c < 3; ++c) v[c * hw + i] = static_cast<float>(im.px[i * 3 + c]) / 255.0f * 2.0f - 1.0f;
  }
  return Tensor::from_vector(v, {1, 3, im.height, im.width});
}

// The masked image of inpainting: the pixels where the (binary) mask is set become 0
// (diffusers: init_image * (mask < 0.5)).
Tensor masked_pixels(const Tensor& pixels, const image::Gray& mask) {
  std::vector<float> v = pixels.contiguous().to_f32_vector();
  const size_t hw = mask.px.size();
  for (size_t i = 0; i < hw; ++i) {
    if (mask.px[i] >= 128) v[i] = v[hw + i] = v[2 * hw + i] = 0.0f;
  }
  return Tensor::from_vector(v, pixels.shape());
}

// [1, 1, H/8, W/8] f32, 1 = repaint: the binary mask at every 8th pixel
// (torch's nearest interpolate to the latent size picks pixel 8i).
Tensor latent_mask(const image::Gray& mask) {
  const int h = mask.height / 8, w = mask.width / 8;
  std::vector<float> v(static_cast<size_t>(h) * w);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) v[static_cast<size_t>(y) * w + x] = mask.px[static_cast<size_t>(8 * y) * mask.width + 8 * x] >= 128 ? 1.0f : 0.0f;
  }
  return Tensor::from_vector(v, {1, 1, h, w});
}

}  // namespace

MaskedContent masked_content_from_name(const std::string& s) {
  if (s == "fill" || s == "0") return MaskedContent::kFill;
  if (s == "original" || s == "1") return MaskedContent::kOriginal;
  if (s == "noise" || s == "latent noise" || s == "latent_noise" || s == "2") return MaskedContent::kLatentNoise;
  if (s == "nothing" || s == "latent nothing" || s == "latent_nothing" || s == "3") return MaskedContent::kLatentNothing;
  throw_error(ErrorCode::kInvalidArgument,
              "unknown masked content '" + s + "' (expected original, fill, noise or nothing)");
}

const char* masked_content_name(MaskedContent m) {
  switch (m) {
    case MaskedContent::kFill: return "fill";
    case MaskedContent::kOriginal: return "original";
    case MaskedContent::kLatentNoise: return "latent noise";
    case MaskedContent::kLatentNothing: return "latent nothing";
  }
  return "?";
}

VaeTiling vae_tiling_from_name(const std::string& s) {
  if (s == "auto") return VaeTiling::kAuto;
  if (s == "on" || s == "true" || s == "1") return VaeTiling::kOn;
  if (s == "off" || s == "false" || s == "0") return VaeTiling::kOff;
  throw_error(ErrorCode::kInvalidArgument, "unknown VAE tiling '" + s + "' (expected auto, on or off)");
}

const char* vae_tiling_name(VaeTiling t) {
  switch (t) {
    case VaeTiling::kAuto: return "auto";
    case VaeTiling::kOn: return "on";
    case VaeTiling::kOff: return "off";
  }
  return "?";
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kFp16: return "fp16";
    case Precision::kBf16: return "bf16";
  }
  return "?";
}

uint64_t vae_decode_peak_bytes(const VaeConfig& vae, DType activation_dtype, int width, int height) {
  // At full resolution: the last up block's input (upsampled from the previous
  // block's channels), a resnet's two temporaries and its output.
  const std::vector<int>& ch = vae.block_out_channels;
  const uint64_t c0 = static_cast<uint64_t>(ch.front());
  const uint64_t c1 = static_cast<uint64_t>(ch.size() > 1 ? ch[1] : ch.front());
  return static_cast<uint64_t>(width) * static_cast<uint64_t>(height) * (c1 + 3 * c0) * dtype_size(activation_dtype);
}

void check_fits_in_memory(uint64_t needed, uint64_t available, int width, int height, const char* where) {
  if (available == 0 || needed <= available) return;
  const double gib = 1024.0 * 1024.0 * 1024.0;
  // Pixels scale the need linearly: the largest square that fits now.
  const double scale = std::sqrt(static_cast<double>(available) / static_cast<double>(needed));
  const int side = static_cast<int>(std::sqrt(static_cast<double>(width) * height) * scale) / 8 * 8;
  char msg[320];
  std::snprintf(msg, sizeof msg,
                "%dx%d needs about %.1f GiB for the VAE decode, but %s has %.1f GiB available: the largest square "
                "that fits now is about %dx%d",
                width, height, needed / gib, where, available / gib, side, side);
  throw_error(ErrorCode::kInvalidArgument, msg);
}

namespace {

// How generate() runs the VAE (GenerationParams::vae_tiling). On the CPU the
// choice is made before any denoising, from the host's available memory: kAuto
// tiles when the untiled decode's estimate does not fit, with the largest tile
// whose estimate fits in half of what is available (else in all of it). On
// CUDA the Backend reports no free device memory, so kAuto runs untiled and,
// after an out-of-memory, again in tiles (run_vae).
struct VaePlan {
  bool tiled = false;
  bool tile_on_oom = false;
  VaeTileOptions tiles;
  int tile_pixels(const Vae& vae) const {  // a tile's side in image pixels
    return tiles.tile << (vae.config().block_out_channels.size() - 1);
  }
};

VaePlan plan_vae(const Vae& vae, VaeTiling mode, int width, int height, std::vector<std::string>& warnings) {
  VaePlan plan;
  plan.tiled = mode == VaeTiling::kOn;
  if (vae.device() != Device::kCPU) {
    plan.tile_on_oom = mode == VaeTiling::kAuto;
    return plan;
  }
  const VaeConfig& cfg = vae.config();
  const DType act = vae.activation_dtype();
  const uint64_t available = host_available_bytes();
  const uint64_t untiled = vae_decode_peak_bytes(cfg, act, width, height);
  if (mode == VaeTiling::kOff || (mode == VaeTiling::kAuto && (available == 0 || untiled <= available))) {
    check_fits_in_memory(untiled, available, width, height, "this machine");
    return plan;
  }
  const double gib = 1024.0 * 1024.0 * 1024.0;
  char msg[320];
  if (mode == VaeTiling::kAuto) {  // the largest tile that fits in half of what is available, else in all of it
    plan.tiled = true;
    int tile = Vae::tile_for_budget(cfg, act, width, height, available / 2);
    if (tile == 0) tile = Vae::tile_for_budget(cfg, act, width, height, available);
    plan.tiles.tile = tile > 0 ? tile : 16;
  }
  const uint64_t tiled = Vae::tiled_decode_peak_bytes(cfg, act, width, height, plan.tiles);
  if (available > 0 && tiled > available) {
    std::snprintf(msg, sizeof msg,
                  "%dx%d needs about %.1f GiB for the VAE decode even in tiles of %dx%d pixels, but this machine has "
                  "%.1f GiB available",
                  width, height, tiled / gib, plan.tile_pixels(vae), plan.tile_pixels(vae), available / gib);
    throw_error(ErrorCode::kInvalidArgument, msg);
  }
  if (mode == VaeTiling::kAuto) {
    std::snprintf(msg, sizeof msg,
                  "Tiled VAE: the VAE decode of %dx%d needs about %.1f GiB, more than the %.1f GiB available: "
                  "decoding in tiles of %dx%d pixels (about %.1f GiB)",
                  width, height, untiled / gib, available / gib, plan.tile_pixels(vae), plan.tile_pixels(vae),
                  tiled / gib);
    warnings.emplace_back(msg);
  }
  return plan;
}

// fn(tiled) as the plan says; on CUDA with kAuto, an out-of-memory of the
// untiled run is retried once in tiles, and the later runs of the call tile too.
template <class Fn>
auto run_vae(VaePlan& plan, const Vae& vae, const char* what, int width, int height,
             std::vector<std::string>& warnings, Fn&& fn) -> decltype(fn(false)) {
  if (plan.tiled || !plan.tile_on_oom) return fn(plan.tiled);
  try {
    return fn(false);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kOutOfMemory) throw;
  }
  backend_for(vae.device()).empty_cache();
  plan.tiled = true;
  warnings.push_back("Tiled VAE: the VAE " + std::string(what) + " of " + std::to_string(width) + "x" +
                     std::to_string(height) + " ran out of device memory: running it in tiles of " +
                     std::to_string(plan.tile_pixels(vae)) + "x" + std::to_string(plan.tile_pixels(vae)) + " pixels");
  return fn(true);
}

}  // namespace

Precision precision_from_name(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return Precision::kFp32;
  if (s == "fp16" || s == "f16" || s == "float16" || s == "half") return Precision::kFp16;
  if (s == "bf16" || s == "bfloat16") return Precision::kBf16;
  throw_error(ErrorCode::kInvalidArgument, "unknown precision '" + s + "' (expected fp32, fp16 or bf16)");
}

void GenerationParams::validate() const {
  auto check_side = [](int v, const char* name) {
    DIFFUSE_CHECK_ARG(v == 0 || (v >= 64 && v <= kMaxSide && v % 8 == 0),
                      std::string(name) + " must be a multiple of 8 between 64 and " + std::to_string(kMaxSide) +
                          ", got " + std::to_string(v));
  };
  check_side(width, "width");
  check_side(height, "height");
  DIFFUSE_CHECK_ARG(steps >= 0 && steps <= kMaxSteps,
                    "steps must be between 1 and " + std::to_string(kMaxSteps) + ", got " + std::to_string(steps));
  DIFFUSE_CHECK_ARG(std::isfinite(cfg_scale) && cfg_scale <= 100.0f,
                    "cfg scale must be a finite number <= 100, got " + std::to_string(cfg_scale));
  int n = prompts.empty() ? images : static_cast<int>(prompts.size());
  DIFFUSE_CHECK_ARG(n >= 1 && n <= kMaxImages,
                    "number of images must be between 1 and " + std::to_string(kMaxImages) + ", got " +
                        std::to_string(n));
  DIFFUSE_CHECK_ARG(negative_prompts.empty() || negative_prompts.size() == static_cast<size_t>(n),
                    "negative_prompts must have one entry per prompt");
  DIFFUSE_CHECK_ARG(clip_skip >= 1 && clip_skip <= 12, "clip skip must be between 1 and 12");
  DIFFUSE_CHECK_ARG(seed >= -1, "seed must be >= 0, or -1 for a random seed");
  DIFFUSE_CHECK_ARG(!eta || (std::isfinite(*eta) && *eta >= 0.0 && *eta <= 1.0),
                    "eta must be between 0 and 1, got " + std::to_string(eta.value_or(0.0)));
  bool known_schedule = false;
  for (const ScheduleSpec& sc : schedule_catalog()) known_schedule |= schedule == sc.name;
  DIFFUSE_CHECK_ARG(known_schedule, "unknown schedule '" + schedule + "' (one of " + schedule_names_list() + ")");
  validate_controlnet_units(controlnets);
  validate_ip_adapter(ip_adapter);
  if (!sampler.empty()) {
    DIFFUSE_CHECK_ARG(find_sampler(sampler) != nullptr,
                      "unknown sampler '" + sampler + "' (available: " + sampler_names_list() + ")");
  }
  size_t prompt_bytes = prompt.size() + negative_prompt.value_or("").size();
  for (const auto& p : prompts) prompt_bytes += p.size();
  for (const auto& p : negative_prompts) prompt_bytes += p.size();
  DIFFUSE_CHECK_ARG(prompt_bytes <= 64 * 1024, "prompts must total at most 65536 bytes");
  for (const LoraRef& l : loras)
    DIFFUSE_CHECK_ARG(!l.path.empty() && std::isfinite(l.unet_weight) && std::isfinite(l.te_weight),
                      "LoRA '" + l.path + "': needs a file and weights that are finite numbers");
  // The multi-pass hooks (denoising_start / denoising_end as diffusers checks them).
  DIFFUSE_CHECK_ARG(std::isfinite(denoising_start) && denoising_start >= 0.0 && denoising_start < 1.0,
                    "denoising_start must be in [0, 1), got " + std::to_string(denoising_start));
  DIFFUSE_CHECK_ARG(std::isfinite(denoising_end) && denoising_end > 0.0 && denoising_end <= 1.0,
                    "denoising_end must be in (0, 1], got " + std::to_string(denoising_end));
  DIFFUSE_CHECK_ARG(denoising_start < denoising_end, "denoising_start (" + std::to_string(denoising_start) +
                                                         ") must be below denoising_end (" +
                                                         std::to_string(denoising_end) + ")");
  DIFFUSE_CHECK_ARG(denoising_start == 0.0 || init_latents.defined(),
                    "denoising_start needs init_latents to continue from");
  if (init_latents.defined()) {
    DIFFUSE_CHECK_ARG(init_latents.ndim() == 4 && init_latents.dim(2) >= 8 && init_latents.dim(3) >= 8 &&
                          init_latents.dim(2) * 8 <= kMaxSide && init_latents.dim(3) * 8 <= kMaxSide,
                      "init latents must be [1 or images, channels, height/8, width/8] with sides of 64 to " +
                          std::to_string(kMaxSide) + " pixels, got " + shape_str(init_latents.shape()));
    DIFFUSE_CHECK_ARG(!edit.active(), "init latents and an init image cannot be used together");
    DIFFUSE_CHECK_ARG(!initial_latents.defined(), "init latents and initial latents cannot be used together");
  }
  DIFFUSE_CHECK_ARG(std::isfinite(refiner.aesthetic_score) && std::isfinite(refiner.negative_aesthetic_score),
                    "aesthetic scores must be finite numbers");
  if (refiner.enabled()) {
    DIFFUSE_CHECK_ARG(!hires.enabled, "the SDXL refiner and the hires fix cannot be combined yet: use one of them");
    DIFFUSE_CHECK_ARG(std::isfinite(refiner.switch_at) && refiner.switch_at > 0.0 && refiner.switch_at < 1.0,
                      "the refiner's switch point must be between 0 and 1 (exclusive), got " +
                          std::to_string(refiner.switch_at));
  }
}

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

std::unique_ptr<Pipeline> Pipeline::load(const std::string& path, const LoadOptions& options) {
  auto t0 = Clock::now();
  auto impl = load_pipeline_impl(path, options);
  (void)t0;
  return std::unique_ptr<Pipeline>(new Pipeline(std::move(impl)));
}

std::unique_ptr<Pipeline> Pipeline::random(const std::string& arch, const LoadOptions& options, uint64_t seed) {
  return std::unique_ptr<Pipeline>(new Pipeline(random_pipeline_impl(arch, options, seed)));
}

const ModelInfo& Pipeline::info() const { return impl_->info; }

SchedulerConfig Pipeline::Impl::sampling_config() const {
  SchedulerConfig config = SchedulerConfig::from_json(scheduler_config);
  config.model_family = info.family == Family::kSDXL ? "sdxl" : "";
  return config;
}

size_t Pipeline::Impl::park() {
  if (parked || device == Device::kCPU) return 0;
  size_t bytes = unet->weights().bytes() + vae->weights().bytes();
  unet->park();
  vae->park();
  for (TextEncoderSlot& e : encoders) {
    bytes += e.model->weights().bytes();
    e.model->park();
  }
  parked = true;
  return bytes;
}

void Pipeline::Impl::unpark() {
  if (!parked) return;
  // Each model is whole or parked at any time: an out-of-memory part way
  // through parks the ones already back again and leaves the pipeline parked.
  try {
    for (TextEncoderSlot& e : encoders) e.model->unpark();
    unet->unpark();
    vae->unpark();
  } catch (...) {
    for (TextEncoderSlot& e : encoders) e.model->park();
    unet->park();
    vae->park();
    throw;
  }
  parked = false;
}

size_t Pipeline::park_weights() {
  std::unique_lock<std::shared_mutex> exclusive(impl_->adapters_mutex);
  return impl_->park();
}

void Pipeline::unpark_weights() {
  std::unique_lock<std::shared_mutex> exclusive(impl_->adapters_mutex);
  impl_->unpark();
}

bool Pipeline::weights_parked() const {
  std::shared_lock<std::shared_mutex> shared(impl_->adapters_mutex);
  return impl_->parked;
}

namespace {

// The UNet and text encoders as a LoRA patches them (adapters/lora.h), each
// encoder under its diffusers folder name from the family's row.
LoraModel lora_model(Pipeline::Impl& m) {
  LoraModel lm;
  lm.family = m.info.family;
  lm.unet = m.unet.get();
  const std::vector<TextEncoderSpec>& specs = family_spec(m.info.family).text_encoders;
  for (size_t i = 0; i < m.encoders.size(); ++i) {
    const std::string folder = i < specs.size() ? specs[i].folder : "text_encoder_" + std::to_string(i + 1);
    lm.text_encoders.emplace_back(folder, m.encoders[i].model.get());
  }
  return lm;
}

// Impl::adapters_mutex for one generate() call, with the call's LoRA set merged:
// shared when the set is (or has just been made) the merged one, so calls with
// the same set run together. Changing the set takes the lock exclusively, then
// comes back for it shared and checks again: a call with another set may have
// merged in between. After a few such turns the call runs under the exclusive
// lock, so two clients alternating sets cannot starve each other.
struct LoraHold {
  std::shared_lock<std::shared_mutex> shared;
  std::unique_lock<std::shared_mutex> exclusive;
};
LoraHold hold_lora_set(Pipeline::Impl& m, const std::vector<LoraRef>& refs) {
  std::vector<LoraUse> uses;
  for (const LoraRef& r : refs) uses.push_back({r.path, r.unet_weight, r.te_weight});
  const LoraSetKey key = lora_set_key(uses);  // file times and sizes: a rewritten file is merged again
  auto merge = [&] {
    if (!(m.loras.merged() == key)) m.loras.apply(lora_model(m), uses, key);
  };
  // A parked model (Pipeline::park_weights) comes back to the device first.
  for (int attempt = 0; attempt < 3; ++attempt) {
    {
      std::shared_lock<std::shared_mutex> shared(m.adapters_mutex);
      if (m.loras.merged() == key && !m.parked) return {std::move(shared), {}};
    }
    std::unique_lock<std::shared_mutex> exclusive(m.adapters_mutex);
    m.unpark();
    merge();
  }
  std::unique_lock<std::shared_mutex> exclusive(m.adapters_mutex);
  m.unpark();
  merge();
  return {{}, std::move(exclusive)};
}

// How a GenerationParams::vae is placed: as the model's own VAE (the family's dtype rule, the device).
VaePlacement vae_placement(const Pipeline::Impl& m) {
  VaePlacement pl;
  pl.model_config = m.vae->config();
  pl.model_dtype = m.dtype;
  const Family family = m.info.family;
  pl.vae_dtype = [family](DType compute, const VaeConfig& c) { return family_spec(family).vae_dtype(compute, c); };
  pl.device = m.device;
  return pl;
}

}  // namespace

GenerationResult Pipeline::generate(const GenerationParams& params_in, const ProgressCallback& progress) {
  params_in.validate();
  if (params_in.hires.enabled) return generate_hires(*this, *impl_, params_in, progress);
  if (params_in.refiner.enabled()) return generate_with_refiner(*this, *impl_, params_in, progress);
  Impl& m = *impl_;
  const ModelInfo& info = m.info;
  const auto t_start = Clock::now();
  // LoRA: the call's set merged into the weights and held until it returns.
  const LoraHold lora_hold = hold_lora_set(m, params_in.loras);
  const double lora_s = seconds_since(t_start);  // merging (or restoring) when the set changed, else ~0
  const std::string lora_hashes = m.loras.infotext_hashes();
  GenerationResult result;
  result.timings.lora_s = lora_s;
  result.warnings = m.loras.warnings();

  GenerationParams p = params_in;
  if (p.steps == 0) p.steps = info.default_steps;
  if (p.cfg_scale < 0) p.cfg_scale = info.default_cfg;
  if (p.sampler.empty()) p.sampler = info.default_sampler;
  if (p.seed < 0) {
    std::random_device rd;
    p.seed = static_cast<int64_t>((static_cast<uint64_t>(rd()) << 32 | rd()) & 0xffffffffULL);
  }
  result.seed = p.seed;

  // An edit decides the work size from its image (edit_plan.h).
  std::optional<EditPlan> plan;
  if (p.edit.active()) {
    plan = plan_edit(p.edit, p.width, p.height, static_cast<uint64_t>(p.seed), result.warnings);
    p.width = plan->width;
    p.height = plan->height;
    p.validate();  // the size the image gave
  }
  // Latents to start from (the multi-pass hooks): they give the size.
  const bool from_latents = p.init_latents.defined();
  const int lat_ch = m.vae->config().latent_channels;
  if (from_latents) {
    DIFFUSE_CHECK_ARG(p.init_latents.dim(1) == lat_ch, "init latents must have " + std::to_string(lat_ch) +
                                                           " channels, got " + shape_str(p.init_latents.shape()));
    p.height = static_cast<int>(p.init_latents.dim(2)) * 8;
    p.width = static_cast<int>(p.init_latents.dim(3)) * 8;
    p.validate();
  }
  // The refiner refines: an image (img2img) or a base model's latents.
  if (m.info.refiner && !p.edit.active() && !from_latents) {
    throw_error(ErrorCode::kInvalidArgument, m.info.name + ": " + variant_spec(Variant::kRefiner).txt2img_unsupported);
  }
  if (p.width == 0) p.width = info.default_width;
  if (p.height == 0) p.height = info.default_height;
  // The VAE of this call (GenerationParams::vae; vae_override.h), held until it returns.
  const VaeInUse vae_use = m.vae_overrides->choose(*m.vae, p.vae, vae_placement(m));
  result.vae_name = vae_use.name;
  result.vae_hash = vae_use.hash;
  // Untiled or tiled VAE, or a refusal when even tiles would not fit (CPU; CUDA reports its out-of-memory).
  // Latents out with no image to encode: no VAE runs.
  VaePlan vae_plan = p.output_latents && !p.edit.active()
                         ? VaePlan{}
                         : plan_vae(*vae_use.vae, p.vae_tiling, p.width, p.height, result.warnings);

  std::vector<std::string> prompts = p.prompts;
  if (prompts.empty()) prompts.assign(p.images, p.prompt);
  const int n = static_cast<int>(prompts.size());
  std::vector<std::string> negatives = p.negative_prompts;
  const bool negative_is_none = negatives.empty() && !p.negative_prompt.has_value();
  if (negatives.empty()) negatives.assign(n, p.negative_prompt.value_or(""));
  // diffusers' do_classifier_free_guidance: an LCM-distilled UNet (time_cond_proj_dim) takes the
  // guidance scale as its w-embedding instead (step 5).
  const bool guidance_embedding = m.unet->config().has_guidance_embedding();
  const bool cfg = p.cfg_scale > 1.0f && !guidance_embedding;
  const bool editing = plan.has_value();
  const bool inpainting = editing && (!plan->mask.empty() || (plan->passthrough && !p.edit.mask.empty()));

  // Textual inversion: the embeddings the prompts may name (conditioning.cpp).
  EmbeddingSet embeddings = m.embeddings_for(p);

  // The user's image for batch entry b, with its A1111 metadata.
  auto make_image = [&](const image::Rgb& rgb, int b) {
    Image im;
    im.width = rgb.width;
    im.height = rgb.height;
    im.rgb = rgb.px;
    im.seed = p.seed_per_image ? p.seed + b : p.seed;
    InfotextFields f;
    f.prompt = prompts[b];
    f.negative_prompt = negatives[b];
    f.steps = p.steps;
    f.sampler = a1111_sampler_name(p.sampler);
    f.schedule_type = p.schedule == "default" ? "" : find_schedule(p.schedule)->a1111_label;
    f.cfg_scale = p.cfg_scale;
    f.seed = im.seed;
    f.width = im.width;
    f.height = im.height;
    f.model_hash = info.short_hash;
    f.model = info.name;
    f.vae_hash = vae_use.hash;
    f.vae = vae_use.name;
    f.clip_skip = p.clip_skip;
    f.rng = p.rng == RngKind::kCuda ? "NV" : "CPU";
    if (editing) {
      f.denoising_strength = p.edit.strength;
      f.extra = edit_infotext(p.edit, inpainting);
    }
    if (n > 1 && !p.seed_per_image) {
      f.extra.emplace_back("Batch size", std::to_string(n));
      f.extra.emplace_back("Batch pos", std::to_string(b));
    }
    if (!lora_hashes.empty()) f.extra.emplace_back("Lora hashes", lora_hashes);
    if (!embeddings.used().empty()) f.extra.emplace_back("TI hashes", embeddings.hashes_infotext());
    for (const auto& kv : controlnet_infotext(p.controlnets)) f.extra.push_back(kv);
    if (p.ip_adapter.active()) f.extra.push_back(ip_adapter_infotext(p.ip_adapter, static_cast<int>(p.controlnets.size())));
    f.version = std::string("diffuse ") + DIFFUSE_VERSION_STRING;
    im.parameters = format_infotext(f);
    return im;
  };
  if (editing && plan->passthrough) {  // strength 0 or nothing masked: the input as it is
    for (int b = 0; b < n; ++b) result.images.push_back(make_image(plan->picture, b));
    result.timings.total_s = seconds_since(t_start);
    return result;
  }

  // The UNet's input: the latents (4 channels), or for inpainting models
  // (9 channels) the latents + the latent mask + the masked image's latents.
  const int unet_in = m.unet->config().in_channels;
  const bool nine = unet_in == 2 * lat_ch + 1;
  DIFFUSE_CHECK(unet_in == lat_ch || nine, ErrorCode::kUnsupported,
                "a UNet with " + std::to_string(unet_in) + " input channels is not supported (" +
                    std::to_string(lat_ch) + ", or " + std::to_string(2 * lat_ch + 1) + " for inpainting models)");
  DIFFUSE_CHECK_ARG(!from_latents || !nine, m.info.name + ": init latents need a model with a " +
                                                std::to_string(lat_ch) + "-channel UNet, not an inpainting model");
  DIFFUSE_CHECK_ARG(!from_latents || p.init_latents.dim(0) == 1 || p.init_latents.dim(0) == n,
                    "init latents must be a batch of 1 or of the call's " + std::to_string(n) + " images, got " +
                        shape_str(p.init_latents.shape()));

  // 1. Text conditioning: [uncond x n, cond x n] with CFG (diffusers' order).
  auto t0 = Clock::now();
  Impl::Conditioning cond = m.encode_prompts(prompts, p.clip_skip, &embeddings);
  Impl::Conditioning batch = cond;
  if (cfg) {
    Impl::Conditioning uncond = negative_is_none && m.force_zeros_for_empty_prompt
                                    ? m.zero_conditioning(cond)
                                    : m.encode_prompts(negatives, p.clip_skip, &embeddings);
    m.match_lengths(uncond, cond, p.clip_skip);
    batch.context = concat({uncond.context, cond.context}, 0);
    if (cond.pooled.defined()) batch.pooled = concat({uncond.pooled, cond.pooled}, 0);
  }
  const int64_t unet_batch = batch.context.dim(0);
  Tensor time_ids;
  if (batch.pooled.defined()) {
    // SDXL micro-conditioning (time_ids.cpp): sizes and crop, and the target size or
    // a refiner's aesthetic score.
    time_ids = m.time_ids(p, n, cfg).to(m.act_dtype).to(m.device);
  }
  result.timings.text_encode_s = seconds_since(t0);

  // 2. Scheduler. An edit starts part-way down the schedule (diffusers'
  // get_timesteps): the last min(int(steps * strength), steps) steps run.
  SchedulerConfig sampling = m.sampling_config();
  sampling.eta = p.eta;  // TCD's gamma
  {
    // A sampler that cannot run this model's prediction type is a usage error naming those that can.
    const Prediction pred = sampling.prediction_type.value_or(Prediction::kEpsilon);
    const SamplerSpec& row = sampler_spec(p.sampler);
    if (!row.supports(pred)) {
      std::string ok;
      for (const SamplerSpec& r : sampler_catalog())
        if (r.supports(pred)) ok += (ok.empty() ? "" : ", ") + std::string(r.name);
      throw_error(ErrorCode::kInvalidArgument, "sampler '" + p.sampler + "' does not support this model's prediction type " +
                                                   prediction_name(pred) + " (samplers that do: " + ok + ")");
    }
  }
  std::unique_ptr<Scheduler> scheduler = make_scheduler(p.sampler, sampling, p.schedule);
  scheduler->set_timesteps(p.steps);
  int begin = 0;
  result.steps_run = p.steps;
  const bool img2img_latents = from_latents && p.denoising_start == 0.0;  // latents noised to strength's step
  if (editing || img2img_latents) {
    const int init_timestep = std::min(static_cast<int>(p.steps * p.edit.strength), p.steps);
    const int t_first = std::max(p.steps - init_timestep, 0);
    DIFFUSE_CHECK_ARG(init_timestep >= 1, "denoising strength " + std::to_string(p.edit.strength) + " with " +
                                              std::to_string(p.steps) + " steps runs no step (int(" +
                                              std::to_string(p.steps) + " x strength) = 0): raise the strength "
                                              "or the steps");
    begin = t_first * scheduler->order();
    scheduler->set_begin_index(begin);
    result.steps_run = p.steps - t_first;
  }
  const int total = static_cast<int>(scheduler->timesteps().size());
  // diffusers' denoising_start / denoising_end: a cut-off timestep
  // round(T - fraction * T) splits the schedule; the first pass takes the
  // timesteps >= it, the second those below (one more for a second-order
  // sampler, so that a Heun step is never split).
  const int train_steps = sampling.num_train_timesteps.value_or(1000);
  auto cutoff_of = [&](double fraction) {
    return static_cast<double>(std::nearbyint(train_steps - fraction * train_steps));
  };
  if (p.denoising_start > 0.0) {
    const double cutoff = cutoff_of(p.denoising_start);
    int count = 0;
    for (float t : scheduler->timesteps()) count += static_cast<double>(t) < cutoff ? 1 : 0;
    if (scheduler->order() == 2 && count % 2 == 0) ++count;
    count = std::min(count, total);
    DIFFUSE_CHECK_ARG(count >= 1, "denoising_start " + std::to_string(p.denoising_start) + " with " +
                                      std::to_string(p.steps) + " steps leaves no step to run: lower it or "
                                      "raise the steps");
    begin = total - count;
    scheduler->set_begin_index(begin);
  }
  int end = total;
  if (p.denoising_end < 1.0) {
    const double cutoff = cutoff_of(p.denoising_end);
    int count = 0;
    for (int i = begin; i < total; ++i) count += static_cast<double>(scheduler->timesteps()[i]) >= cutoff ? 1 : 0;
    DIFFUSE_CHECK_ARG(count >= 1, "denoising_end " + std::to_string(p.denoising_end) + " with " +
                                      std::to_string(p.steps) + " steps runs no step: raise it or the steps");
    end = begin + count;
  }
  if (p.denoising_start > 0.0 || p.denoising_end < 1.0) {
    result.steps_run = (end - begin + scheduler->order() - 1) / scheduler->order();
  }
  const bool strength_max = editing && p.edit.strength == 1.0;  // diffusers' is_strength_max

  // 3. Image latents (VAE posterior moments: the draws come below).
  t0 = Clock::now();
  const Vae& vae = *vae_use.vae;
  const float sf = vae.config().scaling_factor;
  const Shape one_latent = {1, lat_ch, p.height / 8, p.width / 8};
  Vae::Encoded image_moments, masked_moments;
  Tensor mask_latent;  // [1, 1, h, w] f32, 1 = repaint
  auto encode = [&](const Tensor& pixels) {
    // An f16/bf16 VAE whose encode overflows encodes again in f32 (vae_override.h).
    Vae::Encoded e = encode_with_fallback(
        *m.vae_overrides, vae_use, pixels,
        [&](const Vae& v, const Tensor& x) {
          return run_vae(vae_plan, v, "encode", p.width, p.height, result.warnings, [&](bool tiled) {
            return tiled ? v.encode_tiled(x, vae_plan.tiles) : v.encode(x);
          });
        },
        result.warnings);
    e.mean = e.mean.to(DType::kF32).to(m.device);
    e.std = e.std.to(DType::kF32).to(m.device);
    return e;
  };
  const bool need_image_latents = editing && (!inpainting || !nine || !strength_max);
  if (editing) {
    const Tensor pixels = rgb_to_tensor(plan->init);
    if (need_image_latents) image_moments = encode(pixels);
    if (inpainting) {
      mask_latent = latent_mask(plan->mask).to(m.device);
      masked_moments = encode(masked_pixels(pixels, plan->mask));
    }
  } else if (nine) {
    // An inpainting model asked for text-to-image: everything is repainted
    // from a grey (zero) masked image, whose latents are the posterior mean
    // (no generator draw, so the noise is txt2img's).
    mask_latent = Tensor::full({1, 1, p.height / 8, p.width / 8}, 1.0f).to(m.device);
    masked_moments = encode(Tensor::zeros({1, 3, p.height, p.width}, DType::kF32));
    masked_moments.std = Tensor::zeros(masked_moments.mean.shape(), DType::kF32, m.device);
  }
  result.timings.vae_encode_s = seconds_since(t0);

  // 4. The generator draws, in diffusers' order: the image's posterior
  // sample, the noise, then the masked image's posterior sample (inpainting).
  // One generator for the whole batch (diffusers); with seed_per_image image
  // b draws from its own generator seeded seed + b (A1111), each a batch of 1.
  // A multi-pass call hands its generator on (GenerationParams::generator).
  std::unique_ptr<Generator> own_gen;
  if (!p.generator) own_gen = make_generator(p.rng, static_cast<uint64_t>(p.seed));
  Generator& gen = p.generator ? *p.generator : *own_gen;
  const Shape latent_shape = {n, lat_ch, p.height / 8, p.width / 8};
  struct Draws {
    Tensor image_latents, noise, masked_latents;
  };
  auto sample = [&](const Vae::Encoded& e, Generator& g) {  // scaling_factor * (mean + std * eps)
    const Tensor eps = g.randn(one_latent).to(m.device);
    return scale(add(e.mean, mul(e.std, eps)), sf);
  };
  auto draw = [&](Generator& g, int count) {
    Draws d;
    Shape shape = latent_shape;
    shape[0] = count;
    if (need_image_latents) d.image_latents = sample(image_moments, g);
    if (!from_latents || img2img_latents) d.noise = g.randn(shape).to(m.device);  // a hand-off adds none
    if (inpainting || nine) {
      d.masked_latents = editing ? sample(masked_moments, g) : scale(masked_moments.mean, sf);
    }
    if (inpainting && !nine && (p.edit.masked_content == MaskedContent::kLatentNoise ||
                                p.edit.masked_content == MaskedContent::kLatentNothing)) {
      // A1111: the masked area of the image latents starts as noise / zeros.
      const Tensor fill = p.edit.masked_content == MaskedContent::kLatentNoise
                              ? g.randn(one_latent).to(m.device)
                              : Tensor::zeros(one_latent, DType::kF32, m.device);
      const Tensor keep = sub(Tensor::full(mask_latent.shape(), 1.0f).to(m.device), mask_latent);
      d.image_latents = add(mul(keep, d.image_latents), mul(mask_latent, fill));
    }
    auto repeat = [count](const Tensor& t) {
      return !t.defined() || count == 1 ? t : concat(std::vector<Tensor>(static_cast<size_t>(count), t), 0);
    };
    d.image_latents = repeat(d.image_latents);
    d.masked_latents = repeat(d.masked_latents);
    return d;
  };
  Draws drawn;
  if (p.initial_latents.defined()) {
    DIFFUSE_CHECK_ARG(!editing && !from_latents, "initial latents are for text-to-image only");
    DIFFUSE_CHECK_ARG(p.initial_latents.shape() == latent_shape,
                      "initial latents must have shape " + shape_str(latent_shape) + ", got " +
                          shape_str(p.initial_latents.shape()));
    drawn.noise = p.initial_latents.to(DType::kF32).to(Device::kCPU).contiguous().to(m.device);
    if (nine) drawn.masked_latents = concat(std::vector<Tensor>(static_cast<size_t>(n), scale(masked_moments.mean, sf)), 0);
  } else if (p.seed_per_image && n > 1) {
    std::vector<Draws> per;
    for (int b = 0; b < n; ++b) {
      per.push_back(b == 0 ? draw(gen, 1) : draw(*make_generator(p.rng, static_cast<uint64_t>(p.seed + b)), 1));
    }
    auto cat = [&](Tensor Draws::*field) {
      if (!(per[0].*field).defined()) return Tensor();
      std::vector<Tensor> parts;
      for (const Draws& d : per) parts.push_back(d.*field);
      return concat(parts, 0);
    };
    drawn.image_latents = cat(&Draws::image_latents);
    drawn.noise = cat(&Draws::noise);
    drawn.masked_latents = cat(&Draws::masked_latents);
  } else {
    drawn = draw(gen, n);
  }
  // Initial latents: pure noise x init_noise_sigma (txt2img, inpainting at
  // strength 1), else the image latents noised to the first step's level;
  // given latents as they are (a hand-off) or noised like an image's.
  Tensor latents;
  if (from_latents) {
    Tensor start = p.init_latents.to(DType::kF32).to(Device::kCPU).contiguous().to(m.device);
    if (start.dim(0) != n) start = concat(std::vector<Tensor>(static_cast<size_t>(n), start), 0);
    latents = img2img_latents ? scheduler->add_noise(start, drawn.noise, begin) : start;
  } else {
    latents = !editing || (inpainting && strength_max) ? scale(drawn.noise, scheduler->init_noise_sigma())
                                                       : scheduler->add_noise(drawn.image_latents, drawn.noise, begin);
  }

  // Inpainting: the 9-channel UNet's extra input [B, 1 + 4, h, w] (doubled
  // for CFG like the latents), or the 4-channel blend's masks [n, 1, h, w].
  Tensor extra_input, blend_mask, blend_keep;
  if (nine) {
    const Tensor mask_n = concat(std::vector<Tensor>(static_cast<size_t>(n), mask_latent), 0);
    Tensor e = concat({mask_n, drawn.masked_latents}, 1);
    extra_input = cfg ? concat({e, e}, 0) : e;
  } else if (inpainting) {
    blend_mask = concat(std::vector<Tensor>(static_cast<size_t>(n), mask_latent), 0);
    blend_keep = sub(Tensor::full(blend_mask.shape(), 1.0f).to(m.device), blend_mask);
  }

  // 5. Denoising loop, all on the device: scale the input, the UNet, the CFG
  // combination (diffusers' uncond + s * (text - uncond), in f32), the
  // sampler step and, for 4-channel inpainting, the reset of the unmasked
  // latents to the image noised to the next step's level (diffusers:
  // (1 - mask) * add_noise(image_latents, noise, t_next) + mask * latents; at
  // the last step the clean image latents). Nothing crosses to the host unless
  // a progress callback asks.
  t0 = Clock::now();
  const std::vector<float>& timesteps = scheduler->timesteps();
  // An LCM UNet's guidance embedding of w = cfg_scale - 1 (diffusers' StableDiffusion(XL)Pipeline).
  const Tensor timestep_cond =
      guidance_embedding
          ? guidance_scale_embedding(std::vector<float>(static_cast<size_t>(unet_batch), p.cfg_scale - 1.0f),
                                     m.unet->config().time_cond_proj_dim)
                .to(m.act_dtype)
                .to(m.device)
          : Tensor();
  UNetStepper unet_step(m, batch.context, batch.pooled, time_ids, unet_batch, timesteps, timestep_cond);
  // ControlNets (controlnet_step.h): their residuals join the UNet at the steps they act in
  // (not in an SDXL refiner's pass: they are made for the base model).
  ControlStepInputs control_in{m.unet.get(), info.name, family_name(info.family), m.dtype, m.act_dtype, m.device,
                               p.width, p.height, n, cfg, batch.context, batch.pooled, time_ids, timesteps, begin, end,
                               timestep_cond};
  // IP-Adapter (ip_adapter_step.h): the reference images' tokens for every
  // cross-attention, on both passes' UNet calls (not in a refiner's pass: made for the base model).
  const std::unique_ptr<UNetImagePrompt> image_prompt =
      info.refiner ? nullptr
                   : prepare_image_prompt(*m.ip_adapter_cache, p.ip_adapter,
                                          {m.unet.get(), std::string(family_name(info.family)) + " model '" + info.name + "'",
                                           m.dtype, m.act_dtype, m.device, n, cfg});
  unet_step.set_image_prompt(image_prompt.get());
  control_in.image_prompt = image_prompt.get();
  const ControlStep control(*m.controlnet_cache, info.refiner ? std::vector<ControlNetUnit>{} : p.controlnets,
                            control_in);
  // Every draw of an ancestral / stochastic sampler, from the same generator in
  // the same order as drawing inside the loop, uploaded once now.
  StepNoise step_noise(*scheduler, gen, latents.shape(), m.device, StepNoise::kDefaultMaxBytes, end);
  const TransferStats transfers_before = transfer_stats();
  uint64_t callback_transfers = 0;
  for (int i = begin; i < end; ++i) {
    Tensor x_in = scheduler->scale_model_input(latents, i);
    Tensor model_in = cfg ? concat({x_in, x_in}, 0) : x_in;
    if (nine) model_in = concat({model_in, extra_input}, 1);
    Tensor out = (control.active() ? control.unet_forward(model_in.to(m.act_dtype), i)
                                   : unet_step(model_in.to(m.act_dtype), i)).to(DType::kF32);
    ++result.timings.unet_evals;
    Tensor noise = out;
    if (cfg) {
      Tensor uncond = out.slice(0, 0, n);
      Tensor text = out.slice(0, n, 2 * n);
      noise = add(uncond, scale(sub(text, uncond), p.cfg_scale));
    }
    latents = scheduler->step(noise, i, latents, step_noise.at(i));
    if (blend_mask.defined()) {
      const Tensor proper = i + 1 < total ? scheduler->add_noise(drawn.image_latents, drawn.noise, i + 1)
                                          : drawn.image_latents;
      latents = add(mul(blend_keep, proper), mul(blend_mask, latents));
    }
    if (progress) {
      StepProgress sp;
      sp.step = i - begin + 1;
      sp.total_steps = end - begin;
      sp.elapsed_s = seconds_since(t0);
      sp.latents = latents;
      const uint64_t before = transfer_stats().count();
      const bool stop = progress(sp);
      callback_transfers += transfer_stats().count() - before;
      if (stop && !p.decode_when_stopped) {
        throw_error(ErrorCode::kCancelled, "generation stopped after step " + std::to_string(sp.step));
      }
      if (stop && i + 1 < end) {
        // A1111 decodes its sampler's denoised estimate here; the current
        // sample is what every scheduler has (noisier the earlier the stop).
        result.stopped_at_step = sp.step;
        break;
      }
    }
  }
  result.timings.loop_transfers = transfer_stats().count() - transfers_before.count() - callback_transfers;
  unet_step.release();
  control.release();  // its CUDA graphs too (controlnet_step.h)
  backend_for(m.device).synchronize();  // the loop only enqueued work: time it when done
  result.timings.denoise_s = seconds_since(t0);
  result.final_latents = latents.to(Device::kCPU);
  if (p.output_latents && result.stopped_at_step == 0) {  // a first pass: the caller decodes (or refines) them
    result.timings.total_s = seconds_since(t_start);
    return result;
  }

  // 6. VAE decode: image = clamp(decode(latents / scaling_factor) / 2 + 0.5, 0, 1).
  t0 = Clock::now();
  std::vector<Tensor> decoded;
  for (int b = 0; b < n; ++b) {  // one image at a time bounds the VAE's activation memory
    // An f16/bf16 VAE whose decode overflows decodes again in f32 (vae_override.h).
    const Tensor z = scale(latents.slice(0, b, b + 1), 1.0f / sf);
    decoded.push_back(decode_with_fallback(
        *m.vae_overrides, vae_use, z,
        [&](const Vae& v, const Tensor& zv) {
          return run_vae(vae_plan, v, "decode", p.width, p.height, result.warnings, [&](bool tiled) {
            return tiled ? v.decode_tiled(zv, vae_plan.tiles) : v.decode(zv);
          });
        },
        result.warnings));
  }
  Tensor images = n == 1 ? decoded[0] : concat(decoded, 0);
  {
    std::vector<float> v = images.contiguous().to_f32_vector();
    for (float& x : v) x = std::clamp(x / 2.0f + 0.5f, 0.0f, 1.0f);
    result.decoded = Tensor::from_vector(v, images.shape());
  }
  result.timings.vae_decode_s = seconds_since(t0);
  result.vae_tiled = vae_plan.tiled;

  // 7. 8-bit RGB (numpy_to_pil: round half to even); an edit's output goes
  // back into its picture (only masked, overlay); A1111 metadata.
  const std::vector<float> px = result.decoded.to_f32_vector();
  const int64_t H = result.decoded.dim(2), W = result.decoded.dim(3);
  for (int b = 0; b < n; ++b) {
    image::Rgb rgb;
    rgb.width = static_cast<int>(W);
    rgb.height = static_cast<int>(H);
    rgb.px.resize(static_cast<size_t>(W * H * 3));
    for (int c = 0; c < 3; ++c) {
      const float* plane = px.data() + ((b * 3 + c) * H * W);
      for (int64_t i = 0; i < H * W; ++i) {
        rgb.px[i * 3 + c] = static_cast<uint8_t>(std::nearbyint(plane[i] * 255.0f));
      }
    }
    if (editing) rgb = finish_edit(*plan, rgb, p.edit);
    result.images.push_back(make_image(rgb, b));
  }
  result.timings.total_s = seconds_since(t_start);
  return result;
}

// A1111's "Approx cheap" latent -> RGB factors (sd_vae_approx.cheap_approximation):
// rgb = latent^T * M, giving a preview at latent resolution with no VAE.
std::vector<uint8_t> Pipeline::preview_rgb(const Tensor& latents, int index, Family family, int* width,
                                           int* height, const std::vector<float>& factors) {
  DIFFUSE_CHECK_ARG(factors.empty() || factors.size() == 15 || factors.size() == 45 || factors.size() == 141,
                    "preview factors must be 5, 15 or 47 rows of 3 numbers (ModelInfo::preview_factors), got " +
                        std::to_string(factors.size()) + " numbers");
  const bool neighbourhood = factors.size() == 141;
  const bool quadratic = factors.size() >= 45;
  const float* bias = factors.empty() ? nullptr : factors.data() + factors.size() - 3;
  static const float kSd[4][3] = {
      {0.298f, 0.207f, 0.208f}, {0.187f, 0.286f, 0.173f}, {-0.158f, 0.189f, 0.264f}, {-0.184f, -0.271f, -0.473f}};
  static const float kSdxl[4][3] = {{0.3448f, 0.4168f, 0.4395f},
                                    {-0.1953f, -0.0290f, 0.0250f},
                                    {0.1074f, 0.0886f, -0.0163f},
                                    {-0.3730f, -0.2499f, -0.2088f}};
  const float(*m)[3] = family == Family::kSDXL ? kSdxl : kSd;
  Tensor x = latents.select(0, index).to(DType::kF32).to(Device::kCPU).contiguous();  // [4, h, w]
  const int64_t h = x.dim(1), w = x.dim(2);
  const float* d = x.data<float>();
  std::vector<uint8_t> rgb(static_cast<size_t>(h * w * 3));
  for (int64_t i = 0; i < h * w; ++i) {
    for (int c = 0; c < 3; ++c) {
      float v = 0;
      if (factors.empty()) {
        for (int k = 0; k < 4; ++k) v += d[k * h * w + i] * m[k][c];
      } else {
        v = bias[c];
        int row = 4;
        if (neighbourhood) {  // rows 0..35: channel k at (y + dy, x + dx), edges repeated
          const int64_t y = i / w, x = i % w;
          row = 0;
          for (int k = 0; k < 4; ++k)
            for (int64_t dy = -1; dy <= 1; ++dy)
              for (int64_t dx = -1; dx <= 1; ++dx) {
                const int64_t yy = std::clamp<int64_t>(y + dy, 0, h - 1), xx = std::clamp<int64_t>(x + dx, 0, w - 1);
                v += d[k * h * w + yy * w + xx] * factors[row++ * 3 + c];
              }
        } else {
          for (int k = 0; k < 4; ++k) v += d[k * h * w + i] * factors[k * 3 + c];
        }
        if (quadratic) {  // then z_a z_b of the pixel for a <= b, in order
          for (int a = 0; a < 4; ++a)
            for (int b = a; b < 4; ++b) v += d[a * h * w + i] * d[b * h * w + i] * factors[row++ * 3 + c];
        }
      }
      rgb[i * 3 + c] = static_cast<uint8_t>(std::clamp((v + 1.0f) * 127.5f, 0.0f, 255.0f));
    }
  }
  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  return rgb;
}

}  // namespace diffuse
