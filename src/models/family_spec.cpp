// The family and variant tables (family_spec.h). Facts, with where they come from:
//  - published configs: the unet/vae/text_encoder config.json and
//    scheduler/scheduler_config.json of stable-diffusion-v1-5, stable-diffusion-2-1
//    (768-v), stable-diffusion-xl-base-1.0 and stable-diffusion-xl-refiner-1.0;
//  - single-file layouts: the LDM / SGM checkpoints (cond_stage_model.* for
//    SD1/SD2, conditioner.embedders.N.* for SDXL; the refiner has only the
//    OpenCLIP-bigG encoder, as embedders.0), as AUTOMATIC1111 and
//    stable-diffusion.cpp read them;
//  - defaults: the diffusers pipelines' (50 steps; guidance 7.5, SDXL 5.0;
//    sample_size * 8 pixels);
//  - A1111 config names: modules/sd_models_config.py.
#include "models/family_spec.h"

#include "core/error.h"

namespace diffuse {
namespace {

// scheduler_config.json of the published repositories, as shipped (the keys a
// config lacks change what diffusers' from_config gives other schedulers).
constexpr const char* kSd15Scheduler = R"({
  "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
  "steps_offset": 1, "trained_betas": null})";
constexpr const char* kSd21Scheduler = R"({
  "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": false,
  "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null})";
constexpr const char* kSdxlScheduler = R"({
  "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
  "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
  "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false})";

constexpr const char* kOpenRail = "CreativeML OpenRAIL-M";
constexpr const char* kOpenRailPlusPlus = "CreativeML Open RAIL++-M";

std::vector<FamilySpec> make_families() {
  std::vector<FamilySpec> rows;

  FamilySpec sd1;
  sd1.name = "sd1";
  sd1.aliases = {"sd14", "sd15", "sd1.x"};
  sd1.title = "Stable Diffusion 1.x";
  sd1.family = Family::kSD1;
  sd1.unet = UNetConfig::sd15();
  sd1.text_encoders = {{ClipTextConfig::sd15(), "text_encoder", "tokenizer", "cond_stage_model.transformer.",
                        ClipLayout::kTransformers, 0, false, ""}};
  sd1.vae = VaeConfig::sd();
  sd1.scheduler = nlohmann::json::parse(kSd15Scheduler);
  sd1.unet_heads = {8, 0};  // attention_head_dim 8: eight heads at every width
  sd1.license = kOpenRail;
  sd1.a1111_configs = {{Variant::kBase, std::nullopt, "v1-inference.yaml"},
                       {Variant::kInpaint, std::nullopt, "v1-inpainting-inference.yaml"},
                       {Variant::kPix2Pix, std::nullopt, "instruct-pix2pix.yaml"}};
  rows.push_back(sd1);

  FamilySpec sd2;
  sd2.name = "sd2";
  sd2.aliases = {"sd21", "sd2.x"};
  sd2.title = "Stable Diffusion 2.x";
  sd2.family = Family::kSD2;
  sd2.unet = UNetConfig::sd21();
  sd2.text_encoders = {{ClipTextConfig::sd21(), "text_encoder", "tokenizer", "cond_stage_model.model.",
                        ClipLayout::kOpenClip, 1, false, "!"}};
  sd2.vae = VaeConfig::sd();
  sd2.scheduler = nlohmann::json::parse(kSd21Scheduler);
  sd2.prediction = Prediction::kVPrediction;
  sd2.single_file_prediction_unknown = true;
  sd2.unet_heads = {0, 64};  // attention_head_dim [5, 10, 20, 20] = channels / 64
  sd2.default_size_v_prediction = 768;
  sd2.license = kOpenRailPlusPlus;
  sd2.a1111_configs = {{Variant::kBase, Prediction::kEpsilon, "v2-inference.yaml"},
                       {Variant::kBase, Prediction::kVPrediction, "v2-inference-v.yaml"},
                       {Variant::kInpaint, std::nullopt, "v2-inpainting-inference.yaml"}};
  rows.push_back(sd2);

  FamilySpec xl;
  xl.name = "sdxl";
  xl.aliases = {"sdxl-base"};
  xl.title = "Stable Diffusion XL";
  xl.family = Family::kSDXL;
  xl.unet = UNetConfig::sdxl_base();
  xl.text_encoders = {{ClipTextConfig::sdxl_te1(), "text_encoder", "tokenizer", "conditioner.embedders.0.transformer.",
                       ClipLayout::kTransformers, 0, true, ""},
                      {ClipTextConfig::sdxl_te2(), "text_encoder_2", "tokenizer_2", "conditioner.embedders.1.model.",
                       ClipLayout::kOpenClip, 0, true, "!"}};
  xl.vae = VaeConfig::sdxl();
  xl.scheduler = nlohmann::json::parse(kSdxlScheduler);
  xl.force_zeros_for_empty_prompt = true;
  xl.upcast_vae = true;
  xl.time_ids = 6;
  xl.unet_heads = {0, 64};  // attention_head_dim [5, 10, 20]
  xl.default_size = xl.default_size_v_prediction = 1024;
  xl.default_cfg = 5.0f;
  xl.license = kOpenRailPlusPlus;
  xl.a1111_configs = {{Variant::kBase, std::nullopt, "sd_xl_base.yaml"},
                      {Variant::kInpaint, std::nullopt, "sd_xl_inpaint.yaml"}};
  rows.push_back(xl);

  FamilySpec refiner = xl;
  refiner.name = "sdxl-refiner";
  refiner.aliases = {};
  refiner.title = "Stable Diffusion XL refiner";
  refiner.variant = Variant::kRefiner;
  refiner.unet = UNetConfig::sdxl_refiner();
  refiner.text_encoders = {{ClipTextConfig::sdxl_te2(), "text_encoder_2", "tokenizer_2",
                            "conditioner.embedders.0.model.", ClipLayout::kOpenClip, 0, true, "!"}};
  refiner.force_zeros_for_empty_prompt = false;
  refiner.time_ids = 5;
  refiner.a1111_configs = {{Variant::kRefiner, std::nullopt, "sd_xl_refiner.yaml"}};
  rows.push_back(refiner);
  return rows;
}

}  // namespace

const std::vector<VariantSpec>& variant_specs() {
  static const std::vector<VariantSpec> rows = {
      {Variant::kBase, "base", "base", 4, nullptr},
      {Variant::kInpaint, "inpaint", "inpaint (9-channel)", 9, nullptr},  // text-to-image repaints everything
      {Variant::kPix2Pix, "pix2pix", "InstructPix2Pix (8-channel)", 8,
       "InstructPix2Pix model: needs an input image to edit (not supported yet)"},
      {Variant::kRefiner, "refiner", "refiner", 0,
       "SDXL refiner: it refines an image (img2img: give an init image) or a base model's latents (use it as "
       "the refiner of an SDXL base model: --refiner); it does not start from noise",
       true},
  };
  return rows;
}

const VariantSpec& variant_spec(Variant v) {
  for (const VariantSpec& s : variant_specs())
    if (s.variant == v) return s;
  throw_error(ErrorCode::kRuntime, "[variant_spec] variant without a row");
}

std::optional<int> HeadRule::heads(int channels) const {
  if (count > 0) return channels % count == 0 ? std::optional<int>(count) : std::nullopt;
  if (width > 0 && channels >= width && channels % width == 0) return channels / width;
  return std::nullopt;
}

std::string FamilySpec::a1111_config(Variant v, Prediction p) const {
  for (const A1111Config& c : a1111_configs)
    if (c.variant == v && (!c.prediction || *c.prediction == p)) return c.file;
  return "";
}

DType FamilySpec::vae_dtype(DType compute, const VaeConfig& v) const {
  return compute == DType::kF16 && v.force_upcast && upcast_vae ? DType::kF32 : compute;
}

const std::vector<FamilySpec>& family_specs() {
  static const std::vector<FamilySpec> rows = make_families();
  return rows;
}

const FamilySpec& family_spec(Family family) {
  for (const FamilySpec& s : family_specs())
    if (s.family == family && s.variant == Variant::kBase) return s;
  throw_error(ErrorCode::kRuntime, "[family_spec] family without a base row");
}

const FamilySpec* find_family_spec(const std::string& name) {
  for (const FamilySpec& s : family_specs()) {
    if (s.name == name) return &s;
    for (const std::string& a : s.aliases)
      if (a == name) return &s;
  }
  return nullptr;
}

const FamilySpec& family_spec_named(const std::string& name) {
  if (const FamilySpec* s = find_family_spec(name)) return *s;
  std::string names;
  for (const FamilySpec& s : family_specs()) names += (names.empty() ? "" : ", ") + s.name;
  throw_error(ErrorCode::kInvalidArgument, "unknown model family '" + name + "' (expected one of " + names + ")");
}

}  // namespace diffuse
