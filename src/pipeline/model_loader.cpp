// Loads a pipeline from a diffusers folder (model_index.json + component
// subfolders) or from a single-file checkpoint (.safetensors / .ckpt in the
// original LDM/SGM key layout). Single files carry no configs, so the family's
// published configs are used unless LoadOptions::config_dir names a diffusers
// folder to take them from (like diffusers' from_single_file(config=...)).
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/checkpoint.h"
#include "io/hash_cache.h"
#include "io/json_util.h"
#include "io/tensor_checks.h"
#include "models/detect.h"
#include "models/keymap.h"
#include "pipeline/pipeline_impl.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

nlohmann::json read_json(const fs::path& path) { return read_python_json_file(path.string()); }

// The weights file of a diffusers component folder, preferring safetensors and
// the fp16 variant only when no full-precision file exists.
fs::path find_weights(const fs::path& dir) {
  static const char* kNames[] = {
      "diffusion_pytorch_model.safetensors",        "model.safetensors",
      "diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
      "diffusion_pytorch_model.fp16.safetensors",   "model.fp16.safetensors",
      "diffusion_pytorch_model.fp16.safetensors.index.json", "model.fp16.safetensors.index.json",
      "diffusion_pytorch_model.bin",                "pytorch_model.bin",
      "diffusion_pytorch_model.fp16.bin",           "pytorch_model.fp16.bin"};
  for (const char* name : kNames) {
    if (fs::exists(dir / name)) return dir / name;
  }
  throw_error(ErrorCode::kIo, "no weights file (diffusion_pytorch_model.safetensors, model.safetensors, "
                              "*.bin, or an fp16 variant) in " + dir.string());
}

TensorMap load_component(const fs::path& dir) { return load_checkpoint(find_weights(dir).string()).tensors; }

// diffusers' StableDiffusionXLPipeline decodes in fp32 when an fp16 VAE has
// force_upcast (the SDXL VAE overflows fp16); StableDiffusionPipeline (SD1/SD2)
// never upcasts, so their VAEs decode in fp16 like the reference.
DType vae_dtype_for(Family family, DType compute, const VaeConfig& vae) {
  const bool pipeline_upcasts = family == Family::kSDXL;
  return compute == DType::kF16 && vae.force_upcast && pipeline_upcasts ? DType::kF32 : compute;
}

// Activations run in the weight dtype, except bf16 on the CPU: without bf16
// arithmetic it is weight-only bf16 (half the memory) with f32 activations.
DType activation_dtype_for(Device device, DType weights) {
  return device == Device::kCPU && weights == DType::kBF16 ? DType::kF32 : weights;
}

void apply_activation_dtype(Pipeline::Impl& impl) {
  impl.act_dtype = activation_dtype_for(impl.device, impl.dtype);
  impl.unet->set_activation_dtype(impl.act_dtype);
  impl.vae->set_activation_dtype(activation_dtype_for(impl.device, impl.vae->dtype()));
  for (TextEncoderSlot& slot : impl.encoders) slot.model->set_activation_dtype(impl.act_dtype);
}

// Hands the memory pages wholly inside t's bytes back to the kernel. For a
// tensor read from an mmap'd checkpoint they are clean file pages: the kernel
// drops them, and a later read would fetch them from the file again, so the
// data never changes. MADV_PAGEOUT (not DONTNEED) so that heap memory is never
// zeroed: without swap the kernel just leaves such pages alone.
void release_pages(const Tensor& t) {
#ifdef MADV_PAGEOUT
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.raw_data());
  const uintptr_t lo = (begin + page - 1) / page * page, hi = (begin + t.nbytes()) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_PAGEOUT);
#else
  (void)t;
#endif
}

// Converts a component's weights to the dtype its model computes with, once,
// at load (the models' own .to(dtype) then has nothing left to do). Each
// source tensor's pages are released as soon as it is converted, so a 16-bit
// checkpoint does not stay resident next to its converted copy (SD1.5 f16 ->
// bf16 or f32: the peak while loading was file + copy, 2 + 2 GiB). The
// conversion of each tensor runs on the thread pool (cpu::cast).
void convert_weights_for_cpu(TensorMap& weights, DType dtype) {
  for (auto& [name, t] : weights) {
    if (t.dtype() == dtype || !is_floating(t.dtype()) || t.device() != Device::kCPU) continue;
    Tensor converted = t.to(dtype);
    release_pages(t);
    t = converted;
  }
}

DType dtype_for(Precision p) {
  switch (p) {
    case Precision::kFp32: return DType::kF32;
    case Precision::kFp16: return DType::kF16;
    case Precision::kBf16: return DType::kBF16;
  }
  return DType::kF32;
}

// The configs of each family's published model (SD1.5, SD2.1 768-v, SDXL base
// 1.0), used for single files without --config and for benchmarks.
struct PublishedConfigs {
  UNetConfig unet;
  VaeConfig vae;
  std::vector<ClipTextConfig> text_encoders;
  bool force_zeros_for_empty_prompt = false;
};

PublishedConfigs published_configs(Family family) {
  PublishedConfigs c;
  c.vae = VaeConfig::sd();
  switch (family) {
    case Family::kSD1:
      c.unet = UNetConfig::sd15();
      c.text_encoders = {ClipTextConfig::sd15()};
      break;
    case Family::kSD2:
      c.unet = UNetConfig::sd21();
      c.text_encoders = {ClipTextConfig::sd21()};
      break;
    case Family::kSDXL:
      c.unet = UNetConfig::sdxl_base();
      c.text_encoders = {ClipTextConfig::sdxl_te1(), ClipTextConfig::sdxl_te2()};
      c.vae = VaeConfig::sdxl();
      c.force_zeros_for_empty_prompt = true;
      break;
  }
  return c;
}

// SD2 single files do not say whether they predict v or epsilon. AUTOMATIC1111
// runs the UNet once on a constant input and looks at the sign of the output's
// offset (modules/sd_models_config.py is_using_v_parameterization_for_sd2).
Prediction probe_prediction(const UNet& unet) {
  const UNetConfig& c = unet.config();
  Device dev = Device::kCPU;
  (void)dev;
  Tensor x = Tensor::full({1, c.in_channels, 8, 8}, 0.5f);
  Tensor t = Tensor::full({1}, 999.0f);
  Tensor ctx = Tensor::full({1, 2, c.cross_attention_dim.at(0)}, 0.5f);
  Tensor out = unet.forward(x, t, ctx).to(DType::kF32).to(Device::kCPU);
  std::vector<float> o = out.to_f32_vector();
  double mean = 0;
  for (float v : o) mean += v - 0.5;
  mean /= static_cast<double>(o.size());
  return mean < -1.0 ? Prediction::kVPrediction : Prediction::kEpsilon;
}

std::string prediction_from_json(const nlohmann::json& sched) {
  return sched.value("prediction_type", std::string("epsilon"));
}

fs::path bundled_tokenizer_dir() {
  // models/tokenizers/clip beside the source tree or the installed binary.
  for (fs::path p : {fs::path(DIFFUSE_SOURCE_DIR) / "models/tokenizers/clip",
                     fs::path("/usr/local/share/diffuse/tokenizers/clip")}) {
    if (fs::exists(p / "vocab.json")) return p;
  }
  throw_error(ErrorCode::kIo, "the CLIP tokenizer files (vocab.json, merges.txt) were not found; "
                              "single-file checkpoints need them (pass --config with a diffusers folder)");
}

}  // namespace

void set_family_defaults(ModelInfo& info) {
  info.default_steps = 50;
  switch (info.family) {
    case Family::kSD1:
      info.default_width = info.default_height = 512;
      info.default_cfg = 7.5f;
      info.license = "CreativeML OpenRAIL-M";
      break;
    case Family::kSD2:
      info.default_width = info.default_height = info.prediction == Prediction::kVPrediction ? 768 : 512;
      info.default_cfg = 7.5f;
      info.license = "CreativeML Open RAIL++-M";
      break;
    case Family::kSDXL:
      info.default_width = info.default_height = 1024;
      info.default_cfg = 5.0f;
      info.license = "CreativeML Open RAIL++-M";
      break;
  }
}

void apply_folder_defaults(ModelInfo& info, int unet_sample_size, const nlohmann::json& model_index,
                           const std::string& where) {
  // diffusers' default size: unet.config.sample_size * vae_scale_factor.
  if (unet_sample_size > 0) info.default_width = info.default_height = unet_sample_size * 8;
  // Optional Diffuse defaults a model folder may carry in model_index.json
  // ("_" keys are ignored by diffusers), e.g. the demo model's 20 steps.
  const nlohmann::json defaults = model_index.value("_diffuse_defaults", nlohmann::json::object());
  if (!defaults.is_object()) throw_error(ErrorCode::kIo, where + ": _diffuse_defaults must be an object");
  info.default_steps = defaults.value("steps", info.default_steps);
  info.default_cfg = defaults.value("cfg_scale", info.default_cfg);
  info.default_sampler = defaults.value("sampler", info.default_sampler);
  info.license = defaults.value("license", info.license);
  DIFFUSE_CHECK(info.default_steps >= 1 && info.default_steps <= 1000, ErrorCode::kIo,
                where + ": _diffuse_defaults.steps must be 1..1000");
}

nlohmann::json default_scheduler_config(Family family, Prediction prediction) {
  // The scheduler_config.json of the published repos (SD1.5, SD2.1, SDXL base).
  nlohmann::json j = {{"beta_end", 0.012},       {"beta_schedule", "scaled_linear"},
                      {"beta_start", 0.00085},   {"num_train_timesteps", 1000},
                      {"set_alpha_to_one", false}, {"skip_prk_steps", true},
                      {"steps_offset", 1},        {"trained_betas", nullptr},
                      {"clip_sample", false}};
  switch (family) {
    case Family::kSD1: j["_class_name"] = "PNDMScheduler"; break;
    case Family::kSD2: j["_class_name"] = "DDIMScheduler"; break;
    case Family::kSDXL:
      j["_class_name"] = "EulerDiscreteScheduler";
      j["interpolation_type"] = "linear";
      j["sample_max_value"] = 1.0;
      j["timestep_spacing"] = "leading";
      j["use_karras_sigmas"] = false;
      break;
  }
  if (family != Family::kSD1) j["prediction_type"] = prediction_name(prediction);
  return j;
}

std::string sampler_for_scheduler_class(const std::string& cls) {
  if (cls == "PNDMScheduler") return "pndm";
  if (cls == "DDIMScheduler") return "ddim";
  if (cls == "LMSDiscreteScheduler") return "lms";
  if (cls == "EulerDiscreteScheduler") return "euler";
  if (cls == "EulerAncestralDiscreteScheduler") return "euler_a";
  if (cls == "DPMSolverMultistepScheduler") return "dpmpp_2m";
  if (cls == "UniPCMultistepScheduler") return "unipc";
  if (cls == "LCMScheduler") return "lcm";
  return "euler";  // any other class: Euler is the safe, widely supported default
}

std::unique_ptr<Pipeline::Impl> load_pipeline_impl(const std::string& path_str, const LoadOptions& options) {
  fs::path path(path_str);
  if (!fs::exists(path)) throw_error(ErrorCode::kNotFound, "model not found: " + path_str);
  auto impl = std::make_unique<Pipeline::Impl>();
  ModelInfo& info = impl->info;
  info.path = fs::absolute(path).string();
  impl->device = options.device;
  impl->precision = options.precision.value_or(options.device == Device::kCPU ? Precision::kFp32 : Precision::kFp16);
  impl->dtype = dtype_for(impl->precision);

  const bool folder = fs::is_directory(path);
  fs::path config_dir = folder ? path : fs::path(options.config_dir);
  if (folder && !fs::exists(path / "model_index.json")) {
    throw_error(ErrorCode::kIo, path_str + " is a folder without model_index.json: not a diffusers pipeline");
  }
  if (!config_dir.empty() && !fs::exists(config_dir / "model_index.json")) {
    throw_error(ErrorCode::kIo, "config folder " + config_dir.string() + " has no model_index.json");
  }

  // 1. Family and component configs.
  TensorMap single;  // single-file tensors (all components)
  nlohmann::json model_index;
  if (!config_dir.empty()) model_index = read_json(config_dir / "model_index.json");
  if (folder) {
    info.name = path.filename().string();
    if (info.name.empty()) info.name = path.parent_path().filename().string();
    std::string cls = model_index.value("_class_name", "");
    if (cls.find("Inpaint") != std::string::npos || cls.find("Img2Img") != std::string::npos) {
      throw_error(ErrorCode::kUnsupported, path_str + ": " + cls + " pipelines are not supported yet");
    }
    if (fs::exists(path / "text_encoder_2")) {
      info.family = Family::kSDXL;
    } else {
      // OpenCLIP (SD2) text encoders use erf GELU, OpenAI CLIP-L (SD1) quick GELU.
      nlohmann::json te = read_json(path / "text_encoder" / "config.json");
      info.family = te.value("hidden_act", "quick_gelu") == "gelu" ? Family::kSD2 : Family::kSD1;
    }
  } else {
    info.name = path.stem().string();
    info.single_file = true;
    Checkpoint ck = load_checkpoint(path.string());
    single = std::move(ck.tensors);
    Detected d = detect_single_file(single);
    if (d.inpaint) {
      throw_error(ErrorCode::kUnsupported, path_str + ": inpainting checkpoints (UNet with 9 input channels) "
                                           "are not supported yet");
    }
    info.family = d.family;
    if (!config_dir.empty() && fs::exists(config_dir / "text_encoder_2") != (d.family == Family::kSDXL)) {
      throw_error(ErrorCode::kInvalidArgument, "config folder " + config_dir.string() +
                                                   " does not describe a " + family_name(d.family) + " model");
    }
  }

  UNetConfig unet_cfg;
  VaeConfig vae_cfg;
  std::vector<ClipTextConfig> te_cfgs;
  if (!config_dir.empty()) {
    unet_cfg = UNetConfig::from_json(read_json(config_dir / "unet" / "config.json"));
    vae_cfg = VaeConfig::from_json(read_json(config_dir / "vae" / "config.json"));
    te_cfgs.push_back(ClipTextConfig::from_json(read_json(config_dir / "text_encoder" / "config.json"), false));
    if (info.family == Family::kSDXL) {
      te_cfgs.push_back(ClipTextConfig::from_json(read_json(config_dir / "text_encoder_2" / "config.json"), true));
    }
    impl->scheduler_config = read_json(config_dir / "scheduler" / "scheduler_config.json");
    impl->force_zeros_for_empty_prompt = model_index.value("force_zeros_for_empty_prompt", false);
  } else {
    PublishedConfigs pc = published_configs(info.family);
    unet_cfg = pc.unet;
    vae_cfg = pc.vae;
    te_cfgs = pc.text_encoders;
    impl->force_zeros_for_empty_prompt = pc.force_zeros_for_empty_prompt;
  }

  // 2. Weights. Single files are split into diffusers-named components by the key tables.
  TensorMap unet_w, vae_w, te1_w, te2_w;
  // NaN/Inf weights load but render black or noise: name them (by the key in the file).
  auto check_finite = [&](const std::string& where, const TensorMap& weights) {
    for (const std::string& bad : find_non_finite(weights, 5)) {
      info.warnings.push_back(where + bad + " holds NaN/Inf values");
    }
  };
  if (folder) {
    unet_w = load_component(path / "unet");
    vae_w = load_component(path / "vae");
    te1_w = load_component(path / "text_encoder");
    if (info.family == Family::kSDXL) te2_w = load_component(path / "text_encoder_2");
    check_finite("unet: ", unet_w);
    check_finite("vae: ", vae_w);
    check_finite("text_encoder: ", te1_w);
    check_finite("text_encoder_2: ", te2_w);
  } else {
    check_finite("", single);
    std::optional<ClipTextConfig> te2;
    if (te_cfgs.size() > 1) te2 = te_cfgs[1];
    SingleFileParts parts = split_single_file(single, info.family, unet_cfg, te_cfgs[0], te2);
    unet_w = std::move(parts.unet);
    vae_w = std::move(parts.vae);
    te1_w = std::move(parts.text_encoder);
    te2_w = std::move(parts.text_encoder_2);
    single.clear();
  }

  Device dev = options.device;
  const DType vae_dtype = vae_dtype_for(info.family, impl->dtype, vae_cfg);
  if (dev == Device::kCPU) {
    convert_weights_for_cpu(unet_w, impl->dtype);
    convert_weights_for_cpu(vae_w, vae_dtype);
    convert_weights_for_cpu(te1_w, impl->dtype);
    convert_weights_for_cpu(te2_w, impl->dtype);
  }
  impl->unet = std::make_unique<UNet>(unet_cfg, unet_w, impl->dtype, dev);
  unet_w.clear();
  impl->vae = std::make_unique<Vae>(vae_cfg, vae_w, vae_dtype, dev);
  impl->vae->set_allow_tf32(vae_dtype == DType::kF32 && impl->dtype != DType::kF32);  // an upcast VAE: as diffusers
  vae_w.clear();

  // 3. Text encoders and tokenizers.
  auto tokenizer_dir = [&](const char* sub) -> fs::path {
    if (!config_dir.empty() && fs::exists(config_dir / sub / "vocab.json")) return config_dir / sub;
    return bundled_tokenizer_dir();
  };
  for (size_t i = 0; i < te_cfgs.size(); ++i) {
    TextEncoderSlot slot;
    const char* sub = i == 0 ? "tokenizer" : "tokenizer_2";
    slot.tokenizer = std::make_unique<ClipTokenizer>(ClipTokenizer::load(tokenizer_dir(sub).string()));
    // OpenCLIP encoders pad with "!" (id 0); the bundled files default to CLIP-L's padding.
    if (config_dir.empty() && te_cfgs[i].hidden_act == "gelu") slot.tokenizer->set_pad_token("!");
    slot.model = std::make_unique<ClipTextModel>(te_cfgs[i], i == 0 ? te1_w : te2_w, impl->dtype, dev);
    slot.penultimate = info.family == Family::kSDXL;
    slot.provides_pooled = te_cfgs[i].with_projection;
    impl->encoders.push_back(std::move(slot));
  }

  apply_activation_dtype(*impl);

  // 4. Prediction type and defaults.
  if (impl->scheduler_config.is_null()) {
    Prediction pred = options.prediction.value_or(Prediction::kEpsilon);
    if (!options.prediction && info.family == Family::kSD2) pred = probe_prediction(*impl->unet);
    impl->scheduler_config = default_scheduler_config(info.family, pred);
  } else if (options.prediction) {
    impl->scheduler_config["prediction_type"] = prediction_name(*options.prediction);
  }
  info.prediction = prediction_from_json(impl->scheduler_config) == "v_prediction" ? Prediction::kVPrediction
                                                                                    : Prediction::kEpsilon;
  set_family_defaults(info);
  info.default_sampler = sampler_for_scheduler_class(impl->scheduler_config.value("_class_name", ""));
  if (folder) apply_folder_defaults(info, impl->unet->config().sample_size, model_index, path_str);


  // 5. Hash (A1111 "Model hash" = sha256[:10] of the checkpoint file).
  fs::path hashed = folder ? find_weights(path / "unet") : path;
  info.sha256 = cached_sha256(hashed.string());
  info.short_hash = info.sha256.substr(0, 10);
  return impl;
}

std::unique_ptr<Pipeline::Impl> random_pipeline_impl(const std::string& arch, const LoadOptions& options,
                                                     uint64_t seed) {
  auto impl = std::make_unique<Pipeline::Impl>();
  ModelInfo& info = impl->info;
  info.family = family_from_name(arch);
  info.name = "random-" + arch;
  info.path = "(random weights)";
  impl->device = options.device;
  impl->precision = options.precision.value_or(options.device == Device::kCPU ? Precision::kFp32 : Precision::kFp16);
  impl->dtype = dtype_for(impl->precision);
  const PublishedConfigs pc = published_configs(info.family);
  const UNetConfig& unet_cfg = pc.unet;
  const VaeConfig& vae_cfg = pc.vae;
  const std::vector<ClipTextConfig>& te_cfgs = pc.text_encoders;
  impl->force_zeros_for_empty_prompt = pc.force_zeros_for_empty_prompt;
  // Weights are generated directly in the compute dtype to halve peak memory.
  const DType wdt = impl->dtype;
  impl->unet = std::make_unique<UNet>(unet_cfg, UNet::random_weights(unet_cfg, seed, wdt), impl->dtype,
                                      options.device);
  const DType vae_dtype = vae_dtype_for(info.family, impl->dtype, vae_cfg);
  impl->vae = std::make_unique<Vae>(vae_cfg, Vae::random_weights(vae_cfg, seed + 1, vae_dtype), vae_dtype,
                                    options.device);
  impl->vae->set_allow_tf32(vae_dtype == DType::kF32 && impl->dtype != DType::kF32);
  for (size_t i = 0; i < te_cfgs.size(); ++i) {
    TextEncoderSlot slot;
    slot.tokenizer = std::make_unique<ClipTokenizer>(ClipTokenizer::load(bundled_tokenizer_dir().string()));
    if (te_cfgs[i].hidden_act == "gelu") slot.tokenizer->set_pad_token("!");
    slot.model = std::make_unique<ClipTextModel>(te_cfgs[i], ClipTextModel::random_weights(te_cfgs[i], seed + 2 + i, wdt),
                                                 impl->dtype, options.device);
    slot.penultimate = info.family == Family::kSDXL;
    slot.provides_pooled = te_cfgs[i].with_projection;
    impl->encoders.push_back(std::move(slot));
  }
  apply_activation_dtype(*impl);
  Prediction pred = info.family == Family::kSD2 ? Prediction::kVPrediction : Prediction::kEpsilon;
  impl->scheduler_config = default_scheduler_config(info.family, pred);
  impl->scheduler_config["_class_name"] = "EulerDiscreteScheduler";  // the baselines' sampler
  info.prediction = pred;
  set_family_defaults(info);
  info.default_sampler = "euler";
  info.sha256 = "0000000000";
  info.short_hash = "random";
  return impl;
}

}  // namespace diffuse
