#include "params.h"

#include <cstdio>
#include <optional>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "adapters/library.h"
#include "hub/hub_cache.h"
#include "image/image_ops.h"
#include "text/lora_tags.h"

namespace py = pybind11;

namespace diffuse::python {
namespace {

// Where LoRA names and embeddings are looked up by default: A1111's folders
// under the working directory, as the CLI does (cmd_generate.cpp).
constexpr const char* kDefaultLoraDir = "models/Lora";
constexpr const char* kDefaultEmbeddingsDir = "embeddings";

[[noreturn]] void bad_value(const char* key, const std::string& what) {
  throw_error(ErrorCode::kInvalidArgument, std::string("parameter '") + key + "' " + what);
}

std::string type_name(const py::handle& h) { return py::str(py::type::handle_of(h).attr("__name__")); }

// Removes `key` from `d` and converts its value; false when absent (or None).
template <class T>
bool take(py::dict& d, const char* key, T& out) {
  if (!d.contains(key)) return false;
  py::object v = d.attr("pop")(key);
  if (v.is_none()) return false;
  try {
    out = v.cast<T>();
  } catch (const py::cast_error&) {
    bad_value(key, "has the wrong type (" + type_name(v) + ")");
  }
  return true;
}

// An int parameter; a Python bool is refused (True is not a size).
bool take_int(py::dict& d, const char* key, int& out) {
  if (!d.contains(key)) return false;
  py::object v = d[key];
  if (py::isinstance<py::bool_>(v) || (!v.is_none() && !py::isinstance<py::int_>(v) &&
                                       !py::hasattr(v, "__index__"))) {
    bad_value(key, "must be an int, got " + type_name(v));
  }
  return take(d, key, out);
}

// (a, b) from a 2-sequence of ints.
bool take_pair(py::dict& d, const char* key, std::array<int, 2>& out) {
  std::vector<int> v;
  if (!take(d, key, v)) return false;
  if (v.size() != 2) bad_value(key, "must be a pair of ints, got " + std::to_string(v.size()) + " values");
  out = {v[0], v[1]};
  return true;
}

// A C-contiguous uint8 array of `ndim` dimensions (the wrapper turns PIL images into these).
py::array_t<uint8_t> uint8_array(const py::object& v, const char* key) {
  if (!py::isinstance<py::array>(v)) bad_value(key, "must be a PIL image or a numpy array, got " + type_name(v));
  py::array a = py::reinterpret_borrow<py::array>(v);
  if (!a.dtype().is(py::dtype::of<uint8_t>())) {
    bad_value(key, "must hold uint8 pixels, got dtype " + std::string(py::str(a.dtype())));
  }
  return py::array_t<uint8_t, py::array::c_style>::ensure(a);
}

image::Rgb take_rgb(py::dict& d, const char* key) {
  py::object v = d.attr("pop")(key);
  py::array_t<uint8_t> a = uint8_array(v, key);
  if (a.ndim() != 3 || a.shape(2) != 3 || a.shape(0) < 1 || a.shape(1) < 1) {
    bad_value(key, "must be an RGB image of shape (height, width, 3)");
  }
  image::Rgb out;
  out.height = static_cast<int>(a.shape(0));
  out.width = static_cast<int>(a.shape(1));
  out.px.assign(a.data(), a.data() + a.size());
  return out;
}

image::Gray take_gray(py::dict& d, const char* key) {
  py::object v = d.attr("pop")(key);
  py::array_t<uint8_t> a = uint8_array(v, key);
  if (a.ndim() != 2 || a.shape(0) < 1 || a.shape(1) < 1) bad_value(key, "must be a mask of shape (height, width)");
  image::Gray out;
  out.height = static_cast<int>(a.shape(0));
  out.width = static_cast<int>(a.shape(1));
  out.px.assign(a.data(), a.data() + a.size());
  return out;
}

// latents: float32 [n, 4, h/8, w/8] (diffusers' `latents`), copied.
Tensor take_latents(py::dict& d, const char* key) {
  py::object v = d.attr("pop")(key);
  if (!py::isinstance<py::array>(v)) bad_value(key, "must be a numpy array, got " + type_name(v));
  py::array a = py::reinterpret_borrow<py::array>(v);
  if (!a.dtype().is(py::dtype::of<float>())) {
    bad_value(key, "must be float32, got dtype " + std::string(py::str(a.dtype())));
  }
  if (a.ndim() != 4) bad_value(key, "must have 4 dimensions (batch, channels, height/8, width/8)");
  py::array_t<float, py::array::c_style> c = py::array_t<float, py::array::c_style>::ensure(a);
  std::vector<float> values(c.data(), c.data() + c.size());
  return Tensor::from_vector(values, {c.shape(0), c.shape(1), c.shape(2), c.shape(3)});
}

// The prompt's <lora:...> tags and the "loras" specs, resolved to files (the
// CLI's apply_loras, cmd_generate.cpp, with warnings collected instead of printed).
void apply_loras(const std::vector<std::string>& specs, const std::vector<std::string>& lora_dirs,
                 const std::vector<std::string>& embedding_dirs, CallParams& c) {
  GenerationParams& p = c.params;
  AdapterLibraryOptions ao;
  ao.lora_dirs = lora_dirs.empty() ? std::vector<std::string>{kDefaultLoraDir} : lora_dirs;
  ao.embedding_dirs = embedding_dirs.empty() ? std::vector<std::string>{kDefaultEmbeddingsDir} : embedding_dirs;
  ao.allow_paths = true;
  ao.hf_snapshot = [](const std::string& repo) -> std::optional<std::string> {
    try {
      return hub::resolve_cached(repo, hub::HubOptions::from_env());
    } catch (const Error&) {
      return std::nullopt;
    }
  };
  p.embedding_dirs = ao.embedding_dirs;
  std::vector<LoraTag> tags;
  for (const std::string& s : specs) tags.push_back(parse_lora_spec(s));
  const PromptNetworks n = extract_extra_networks(p.prompt);
  tags.insert(tags.end(), n.loras.begin(), n.loras.end());
  for (const std::string& tag : n.skipped) {
    c.warnings.push_back(tag + " is not applied: only <lora:...> and <lyco:...> tags are supported");
  }
  if (tags.empty()) return;  // no folder is scanned when no LoRA is asked for
  AdapterLibrary library(ao);
  for (const LoraTag& t : tags) {
    p.loras.push_back({library.resolve_lora(t.name), t.unet_weight, t.te_weight});
    for (const std::string& a : t.ignored) c.warnings.push_back(t.text + ": " + a + " is not applied");
  }
  if (n.prompt != p.prompt) {
    c.written_prompt = p.prompt;
    p.prompt = n.prompt;
  }
}

void read_hires(py::dict h, HiresParams& o) {
  o.enabled = true;
  take(h, "scale", o.scale);
  take_int(h, "resize_x", o.resize_x);
  take_int(h, "resize_y", o.resize_y);
  take(h, "upscaler", o.upscaler);
  take_int(h, "steps", o.second_pass_steps);
  take(h, "denoising_strength", o.denoising_strength);
  std::string s;
  if (take(h, "prompt", s)) o.prompt = s;
  if (take(h, "negative_prompt", s)) o.negative_prompt = s;
  take(h, "sampler", o.sampler);
  if (!h.empty()) {
    bad_value("hires", "has an unknown key '" + std::string(py::str(h.begin()->first)) +
                           "' (scale, resize_x, resize_y, upscaler, steps, denoising_strength, prompt, "
                           "negative_prompt, sampler)");
  }
}

}  // namespace

CallParams read_call_params(const py::dict& kwargs) {
  py::dict d = kwargs.attr("copy")();  // keys are removed as they are read
  CallParams c;
  GenerationParams& p = c.params;

  if (d.contains("prompt") && py::isinstance<py::list>(d["prompt"])) {
    take(d, "prompt", p.prompts);
    if (p.prompts.empty()) bad_value("prompt", "is an empty list");
    if (d.contains("negative_prompt") && !d["negative_prompt"].is_none()) {
      if (!py::isinstance<py::list>(d["negative_prompt"])) {
        bad_value("negative_prompt", "must be a list like prompt when prompt is a list");
      }
      take(d, "negative_prompt", p.negative_prompts);
    }
    p.images = static_cast<int>(p.prompts.size());
    p.prompt = p.prompts[0];
  } else {
    take(d, "prompt", p.prompt);
    std::string neg;
    if (take(d, "negative_prompt", neg)) p.negative_prompt = neg;
    if (take_int(d, "num_images_per_prompt", p.images) && p.images < 1) {
      bad_value("num_images_per_prompt", "must be positive");
    }
  }
  // 0 / negative mean "the model's default" to the engine; here that is None.
  for (auto [key, out] : {std::pair<const char*, int*>{"width", &p.width}, {"height", &p.height},
                          {"num_inference_steps", &p.steps}}) {
    if (take_int(d, key, *out) && *out < 1) bad_value(key, "must be positive (None: the model's default)");
  }
  if (take(d, "guidance_scale", p.cfg_scale) && !(p.cfg_scale >= 0.0f)) {
    bad_value("guidance_scale", "must be >= 0 (<= 1 turns guidance off; None: the model's default)");
  }
  take(d, "sampler", p.sampler);
  take(d, "schedule", p.schedule);
  if (d.contains("generator") && !d["generator"].is_none()) {
    py::object g = d["generator"];
    if (py::isinstance<py::bool_>(g) || !py::isinstance<py::int_>(g)) {
      bad_value("generator", "must be an int seed (or None for a random one), got " + type_name(g));
    }
    take(d, "generator", p.seed);
  }
  std::string s;
  if (take(d, "rng", s)) {
    if (s == "cpu") {
      p.rng = RngKind::kCpu;
    } else if (s == "cuda" || s == "gpu") {
      p.rng = RngKind::kCuda;
    } else {
      bad_value("rng", "must be 'cpu' or 'cuda', got '" + s + "'");
    }
  }
  take(d, "seed_per_image", p.seed_per_image);
  take_int(d, "clip_skip", p.clip_skip);
  if (take(d, "vae_tiling", s)) p.vae_tiling = vae_tiling_from_name(s);
  take(d, "vae", p.vae);
  take_pair(d, "original_size", p.original_size);
  take_pair(d, "crops_coords_top_left", p.crops_coords_top_left);
  take_pair(d, "target_size", p.target_size);
  if (d.contains("latents") && !d["latents"].is_none()) p.initial_latents = take_latents(d, "latents");
  take(d, "output_latents", p.output_latents);
  take(d, "decode_when_stopped", p.decode_when_stopped);

  // Editing: image (+ mask_image / outpaint).
  EditParams& e = p.edit;
  const bool editing = d.contains("image") && !d["image"].is_none();
  if (editing) e.init_image = take_rgb(d, "image");
  const bool has_mask = d.contains("mask_image") && !d["mask_image"].is_none();
  if (has_mask) e.mask = take_gray(d, "mask_image");
  std::optional<double> strength;
  double v = 0;
  if (take(d, "strength", v)) strength = v;
  if (take(d, "outpaint", s)) e.outpaint = image::parse_outpaint(s);
  if (!editing && (has_mask || strength || e.outpaint.any())) {
    throw_error(ErrorCode::kInvalidArgument, "mask_image, strength and outpaint need an image (image=...)");
  }
  e.strength = strength.value_or(e.outpaint.any() ? 1.0 : 0.75);
  DIFFUSE_CHECK_ARG(e.strength >= 0.0 && e.strength <= 1.0,
                    "parameter 'strength' must be between 0 and 1, got " + std::to_string(e.strength));
  if (take(d, "resize_mode", s)) e.resize_mode = image::resize_mode_from_name(s);
  take_int(d, "mask_blur", e.mask_blur);
  take(d, "invert_mask", e.invert_mask);
  if (take(d, "masked_content", s)) e.masked_content = masked_content_from_name(s);
  take(d, "inpaint_full_res", e.only_masked);
  take_int(d, "inpaint_full_res_padding", e.only_masked_padding);
  take(d, "overlay", e.overlay);

  // Multi-pass: hires fix, refiner.
  if (d.contains("hires") && !d["hires"].is_none()) {
    py::object h = d.attr("pop")("hires");
    if (!py::isinstance<py::dict>(h)) bad_value("hires", "must be a dict (scale=..., steps=..., ...)");
    read_hires(py::reinterpret_borrow<py::dict>(h), p.hires);
  }
  take(d, "refiner", p.refiner.path);
  take(d, "refiner_switch_at", p.refiner.switch_at);
  take(d, "aesthetic_score", p.refiner.aesthetic_score);
  take(d, "negative_aesthetic_score", p.refiner.negative_aesthetic_score);

  // Adapters.
  std::vector<std::string> loras, lora_dirs, embedding_dirs;
  take(d, "loras", loras);
  take(d, "lora_dirs", lora_dirs);
  take(d, "embedding_dirs", embedding_dirs);
  take(d, "embeddings", p.embeddings);
  if (!d.empty()) {
    std::string keys;
    for (auto item : d) keys += (keys.empty() ? "" : ", ") + std::string(py::str(item.first));
    throw_error(ErrorCode::kInvalidArgument, "unknown parameter(s): " + keys);
  }
  apply_loras(loras, lora_dirs, embedding_dirs, c);
  p.validate();
  return c;
}

}  // namespace diffuse::python
