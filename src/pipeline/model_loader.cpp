// Loads a pipeline from a diffusers folder (model_index.json + component
// subfolders) or from a single-file checkpoint (.safetensors / .ckpt in the
// original LDM/SGM key layout). What the checkpoint is comes from probe()
// (models/probe.h); everything about its family from its row of the family
// table (models/family_spec.h). Single files carry no configs: their tensor
// shapes give them (models/infer_config.h) unless LoadOptions::config_dir names
// a diffusers folder to take them from (like diffusers' from_single_file(config=...)).
#include <filesystem>
#include <fstream>

#include "io/checkpoint.h"
#include "io/hash_cache.h"
#include "io/json_util.h"
#include "io/tensor_checks.h"
#include "models/family_spec.h"
#include "models/keymap.h"
#include "models/probe.h"
#include "models/weights.h"
#include "pipeline/data_dir.h"
#include "pipeline/few_step.h"
#include "pipeline/pipeline_impl.h"
#include "sampling/sampler_catalog.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

nlohmann::json read_json(const fs::path& path) { return read_python_json_file(path.string()); }

TensorMap load_component(const fs::path& dir) {
  return load_checkpoint(find_component_weights(dir.string())).tensors;
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

DType dtype_for(Precision p) {
  switch (p) {
    case Precision::kFp32: return DType::kF32;
    case Precision::kFp16: return DType::kF16;
    case Precision::kBf16: return DType::kBF16;
  }
  return DType::kF32;
}

// SD2 single files do not say whether they predict v or epsilon. AUTOMATIC1111
// runs the UNet once on a constant input and looks at the sign of the output's
// offset (modules/sd_models_config.py is_using_v_parameterization_for_sd2).
Prediction prediction_of_unet(const UNet& unet) {
  const UNetConfig& c = unet.config();
  Tensor x = Tensor::full({1, c.in_channels, 8, 8}, 0.5f);
  Tensor t = Tensor::full({1}, 999.0f);
  Tensor ctx = Tensor::full({1, 2, c.cross_attention_dim.at(0)}, 0.5f);
  // An LCM UNet also needs its guidance embedding (w = 0: guidance scale 1).
  const Tensor cond = c.has_guidance_embedding() ? guidance_scale_embedding({0.0f}, c.time_cond_proj_dim) : Tensor();
  Tensor out = unet.forward(x, t, ctx, {}, {}, nullptr, nullptr, cond).to(DType::kF32).to(Device::kCPU);
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
  // Shipped in models/tokenizers/clip of the data directory (data_dir.h).
  if (std::optional<fs::path> p = find_data("models/tokenizers/clip/vocab.json")) return p->parent_path();
  throw_error(ErrorCode::kIo, "the CLIP tokenizer files (models/tokenizers/clip/vocab.json, merges.txt) were not "
                              "found (" + data_search_note() + "); single-file checkpoints need them (reinstall "
                              "Diffuse, or pass --config with a diffusers folder)");
}

// Size, steps, CFG and licence of the family's published models (SD2: 768 for
// v-prediction). Reads info.prediction.
void set_family_defaults(ModelInfo& info, const FamilySpec& spec) {
  info.default_width = info.default_height = spec.default_size_for(info.prediction);
  info.default_steps = spec.default_steps;
  info.default_cfg = spec.default_cfg;
  info.license = spec.license;
}

// A diffusers folder's own defaults on top: native size unet_sample_size * 8
// (diffusers' default; 0 = unknown, keep the family's), then model_index.json's
// optional "_diffuse_defaults" (steps, cfg_scale, sampler, license). Throws kIo
// naming `where` for a malformed entry.
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
  if (defaults.contains("preview_factors")) {
    // Rows of RGB: 5, 15 or 47 (ModelInfo::preview_factors says which is which).
    const nlohmann::json& f = defaults["preview_factors"];
    const std::string bad = where + ": _diffuse_defaults.preview_factors must be 5, 15 or 47 rows of 3 numbers";
    DIFFUSE_CHECK(f.is_array() && (f.size() == 5 || f.size() == 15 || f.size() == 47), ErrorCode::kIo, bad);
    info.preview_factors.clear();
    for (const nlohmann::json& row : f) {
      DIFFUSE_CHECK(row.is_array() && row.size() == 3, ErrorCode::kIo, bad);
      for (const nlohmann::json& v : row) {
        DIFFUSE_CHECK(v.is_number(), ErrorCode::kIo, bad);
        info.preview_factors.push_back(v.get<float>());
      }
    }
  }
  DIFFUSE_CHECK(info.default_steps >= 1 && info.default_steps <= 1000, ErrorCode::kIo,
                where + ": _diffuse_defaults.steps must be 1..1000");
}

Prediction prediction_in(const nlohmann::json& scheduler_config) {
  return prediction_from_json(scheduler_config) == "v_prediction" ? Prediction::kVPrediction : Prediction::kEpsilon;
}

// The family's published scheduler config, saying `prediction` where it differs.
nlohmann::json scheduler_config_for(const FamilySpec& spec, Prediction prediction) {
  nlohmann::json j = spec.scheduler;
  if (prediction_in(j) != prediction) j["prediction_type"] = prediction_name(prediction);
  return j;
}

// Prediction, size, steps, CFG, licence and sampler from a scheduler config.
void set_model_defaults(ModelInfo& info, const FamilySpec& spec, const nlohmann::json& scheduler_config) {
  info.prediction = prediction_in(scheduler_config);
  set_family_defaults(info, spec);
  info.default_sampler = sampler_for_scheduler_class(scheduler_config.value("_class_name", ""));
}

// Text-to-image runs only some variants (family_spec.h VariantSpec).
void check_txt2img(const VariantSpec& variant, const std::string& where) {
  if (variant.txt2img_unsupported && !variant.edits_only) throw_error(ErrorCode::kUnsupported, where + ": " + variant.txt2img_unsupported);
}

}  // namespace

std::string sampler_for_scheduler_class(const std::string& cls) {
  // The catalogue row that ports the class (sampling/sampler_catalog.h); any
  // other class: Euler is the safe, widely supported default.
  const SamplerSpec* r = sampler_for_diffusers_class(cls);
  return r ? r->name : "euler";
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

  // 1. What the checkpoint is (family, variant, configs), then its component configs.
  TensorMap single;  // single-file tensors (all components)
  CheckpointInfo checkpoint;
  if (folder) {
    info.name = path.filename().string();
    if (info.name.empty()) info.name = path.parent_path().filename().string();
    checkpoint = probe(path.string());
  } else {
    info.name = path.stem().string();
    info.single_file = true;
    single = load_checkpoint(path.string()).tensors;
    checkpoint = probe_single_file(index_tensors(single), single_file_format(path.string()), path_str);
  }
  const FamilySpec& spec = *checkpoint.family;
  check_txt2img(checkpoint.variant_spec(), path_str);
  info.family = spec.family;
  info.refiner = spec.variant == Variant::kRefiner;
  impl->requires_aesthetics_score = spec.time_ids == 5;  // a folder's model_index.json says it below

  ComponentConfigs configs;
  nlohmann::json model_index;
  if (!config_dir.empty()) {
    model_index = read_json(config_dir / "model_index.json");
    if (folder) {
      configs = checkpoint.configs;
    } else {
      const FamilySpec& described = probe_folder_family(config_dir.string());
      if (&described != &spec) {
        throw_error(ErrorCode::kInvalidArgument, "config folder " + config_dir.string() + " describes a " +
                                                     described.name + " model, not a " + spec.name + " model");
      }
      configs = read_folder_configs(config_dir.string(), spec);
    }
    impl->scheduler_config = read_json(config_dir / "scheduler" / "scheduler_config.json");
    impl->force_zeros_for_empty_prompt = model_index.value("force_zeros_for_empty_prompt", false);
    impl->requires_aesthetics_score =
        model_index.value("requires_aesthetics_score", impl->requires_aesthetics_score);
  } else {
    if (!checkpoint.unresolved.empty()) {
      std::string what;
      for (const std::string& u : checkpoint.unresolved) what += "\n  " + u;
      throw_error(ErrorCode::kInvalidArgument,
                  path_str + ": its tensors do not tell the whole " + spec.name + " architecture:" + what +
                      "\npass --config with a diffusers folder whose configs describe it");
    }
    configs = checkpoint.configs;  // the published ones when the shapes are the published model's
    impl->force_zeros_for_empty_prompt = spec.force_zeros_for_empty_prompt;
  }

  // 2. Weights. Single files are split into diffusers-named components by the key tables.
  const size_t n_encoders = spec.text_encoders.size();
  TensorMap unet_w, vae_w;
  std::vector<TensorMap> te_w(n_encoders);
  // NaN/Inf weights load but render black or noise: name them (by the key in the file).
  auto check_finite = [&](const std::string& where, const TensorMap& weights) {
    for (const std::string& bad : find_non_finite(weights, 5)) {
      info.warnings.push_back(where + bad + " holds NaN/Inf values");
    }
  };
  if (folder) {
    unet_w = load_component(path / "unet");
    vae_w = load_component(path / "vae");
    for (size_t i = 0; i < n_encoders; ++i) te_w[i] = load_component(path / spec.text_encoders[i].folder);
    check_finite("unet: ", unet_w);
    check_finite("vae: ", vae_w);
    for (size_t i = 0; i < n_encoders; ++i) check_finite(spec.text_encoders[i].folder + ": ", te_w[i]);
  } else {
    check_finite("", single);
    SingleFileParts parts = split_single_file(single, spec, configs.unet, configs.text_encoders);
    unet_w = std::move(parts.unet);
    vae_w = std::move(parts.vae);
    for (size_t i = 0; i < n_encoders; ++i)
      te_w[i] = std::move(spec.text_encoders[i].folder == "text_encoder_2" ? parts.text_encoder_2 : parts.text_encoder);
    single.clear();
  }

  Device dev = options.device;
  const DType vae_dtype = spec.vae_dtype(impl->dtype, configs.vae);
  if (dev == Device::kCPU) {  // on a GPU the models convert while uploading
    convert_weights(unet_w, impl->dtype);
    convert_weights(vae_w, vae_dtype);
    for (TensorMap& w : te_w) convert_weights(w, impl->dtype);
  }
  impl->unet = std::make_unique<UNet>(configs.unet, unet_w, impl->dtype, dev);
  unet_w.clear();
  impl->vae = std::make_unique<Vae>(configs.vae, vae_w, vae_dtype, dev);
  impl->vae->set_allow_tf32(vae_dtype == DType::kF32 && impl->dtype != DType::kF32);  // an upcast VAE: as diffusers
  vae_w.clear();

  // 3. Text encoders and tokenizers.
  for (size_t i = 0; i < n_encoders; ++i) {
    const TextEncoderSpec& te = spec.text_encoders[i];
    TextEncoderSlot slot;
    if (!config_dir.empty() && fs::exists(config_dir / te.tokenizer_folder / "vocab.json")) {
      slot.tokenizer = std::make_unique<ClipTokenizer>(ClipTokenizer::load((config_dir / te.tokenizer_folder).string()));
    } else {
      slot.tokenizer = std::make_unique<ClipTokenizer>(ClipTokenizer::load(bundled_tokenizer_dir().string()));
      if (!te.pad_token.empty()) slot.tokenizer->set_pad_token(te.pad_token);  // the bundled files pad as CLIP-L
    }
    slot.model = std::make_unique<ClipTextModel>(configs.text_encoders[i], te_w[i], impl->dtype, dev);
    te_w[i].clear();
    slot.penultimate = te.penultimate;
    slot.provides_pooled = configs.text_encoders[i].with_projection;
    impl->encoders.push_back(std::move(slot));
  }

  apply_activation_dtype(*impl);

  // 4. Prediction type and defaults.
  if (impl->scheduler_config.is_null()) {
    Prediction pred = spec.prediction;
    if (options.prediction) pred = *options.prediction;
    else if (checkpoint.prediction) pred = *checkpoint.prediction;
    else if (spec.single_file_prediction_unknown) pred = prediction_of_unet(*impl->unet);
    impl->scheduler_config = scheduler_config_for(spec, pred);
  } else if (options.prediction) {
    impl->scheduler_config["prediction_type"] = prediction_name(*options.prediction);
  }
  set_model_defaults(info, spec, impl->scheduler_config);
  // A few-step model's kind and defaults (few_step.h), under the folder's own.
  apply_few_step_defaults(info, impl->scheduler_config, impl->unet->config(), !config_dir.empty());
  if (folder) apply_folder_defaults(info, impl->unet->config().sample_size, model_index, path_str);

  // 5. Hash (A1111 "Model hash" = sha256[:10] of the checkpoint file).
  fs::path hashed = folder ? fs::path(find_component_weights((path / "unet").string())) : path;
  info.sha256 = cached_sha256(hashed.string());
  info.short_hash = info.sha256.substr(0, 10);
  return impl;
}

ModelInfo describe_model(const std::string& path_str) {
  const CheckpointInfo checkpoint = probe(path_str);
  const FamilySpec& spec = *checkpoint.family;
  const fs::path path(path_str);
  const bool folder = checkpoint.format == CheckpointFormat::kDiffusersFolder;
  ModelInfo info;
  info.path = fs::absolute(path).string();
  info.name = folder ? path.filename().string() : path.stem().string();
  info.single_file = !folder;
  info.family = spec.family;
  info.refiner = spec.variant == Variant::kRefiner;
  // As load_pipeline_impl decides them: a folder's scheduler config, else the
  // family's with the prediction the file states (epsilon when it states none).
  nlohmann::json scheduler;
  if (folder && fs::exists(path / "scheduler" / "scheduler_config.json"))
    scheduler = read_json(path / "scheduler" / "scheduler_config.json");
  else
    scheduler = scheduler_config_for(spec, checkpoint.prediction.value_or(Prediction::kEpsilon));
  set_model_defaults(info, spec, scheduler);
  apply_few_step_defaults(info, scheduler, checkpoint.configs.unet, folder && fs::exists(path / "scheduler" / "scheduler_config.json"));
  if (folder) apply_folder_defaults(info, checkpoint.configs.unet.sample_size, read_json(path / "model_index.json"), path_str);
  if (const char* why = checkpoint.variant_spec().txt2img_unsupported) info.warnings.push_back(why);
  return info;
}

std::unique_ptr<Pipeline::Impl> random_pipeline_impl(const std::string& arch, const LoadOptions& options,
                                                     uint64_t seed) {
  const FamilySpec& spec = family_spec_named(arch);
  check_txt2img(variant_spec(spec.variant), "random " + spec.name);
  auto impl = std::make_unique<Pipeline::Impl>();
  ModelInfo& info = impl->info;
  info.family = spec.family;
  const FewStepKind* kind = nullptr;
  if (!options.random_kind.empty()) {
    kind = find_few_step_kind(options.random_kind);
    DIFFUSE_CHECK_ARG(kind != nullptr, "unknown few-step kind '" + options.random_kind + "' (one of " +
                                           few_step_kind_names() + ")");
  }
  info.name = "random-" + arch + (kind ? "-" + std::string(kind->name) : "");
  info.path = "(random weights)";
  impl->device = options.device;
  impl->precision = options.precision.value_or(options.device == Device::kCPU ? Precision::kFp32 : Precision::kFp16);
  impl->dtype = dtype_for(impl->precision);
  impl->force_zeros_for_empty_prompt = spec.force_zeros_for_empty_prompt;
  info.refiner = spec.variant == Variant::kRefiner;
  impl->requires_aesthetics_score = spec.time_ids == 5;
  // The family's published configs with the one random initialiser (models/weights.h),
  // generated directly in the compute dtype to halve peak memory.
  const DType wdt = impl->dtype;
  UNetConfig unet_config = spec.unet;
  if (kind && std::string(kind->name) == "lcm") unet_config.time_cond_proj_dim = 256;
  impl->unet = std::make_unique<UNet>(unet_config, random_weights(UNet::expected_tensors(unet_config), seed, wdt),
                                      impl->dtype, options.device);
  const DType vae_dtype = spec.vae_dtype(impl->dtype, spec.vae);
  impl->vae = std::make_unique<Vae>(spec.vae, random_weights(Vae::expected_tensors(spec.vae), seed + 1, vae_dtype),
                                    vae_dtype, options.device);
  impl->vae->set_allow_tf32(vae_dtype == DType::kF32 && impl->dtype != DType::kF32);
  for (size_t i = 0; i < spec.text_encoders.size(); ++i) {
    const TextEncoderSpec& te = spec.text_encoders[i];
    TextEncoderSlot slot;
    slot.tokenizer = std::make_unique<ClipTokenizer>(ClipTokenizer::load(bundled_tokenizer_dir().string()));
    if (!te.pad_token.empty()) slot.tokenizer->set_pad_token(te.pad_token);
    slot.model = std::make_unique<ClipTextModel>(
        te.config, random_weights(ClipTextModel::expected_tensors(te.config), seed + 2 + i, wdt), impl->dtype,
        options.device);
    slot.penultimate = te.penultimate;
    slot.provides_pooled = te.config.with_projection;
    impl->encoders.push_back(std::move(slot));
  }
  apply_activation_dtype(*impl);
  impl->scheduler_config = scheduler_config_for(spec, spec.prediction);
  impl->scheduler_config["_class_name"] = "EulerDiscreteScheduler";  // the baselines' sampler
  set_model_defaults(info, spec, impl->scheduler_config);
  if (kind) apply_few_step_defaults(info, impl->scheduler_config, impl->unet->config(), false);
  info.sha256 = "0000000000";
  info.short_hash = "random";
  return impl;
}

}  // namespace diffuse
