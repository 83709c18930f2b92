// ControlNet units applied in the denoising loop (controlnet_step.h), their
// validation and infotext (controlnet_unit.h).
#include "pipeline/controlnet_step.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/ops.h"
#include "core/runtime_options.h"
#include "io/infotext.h"
#include "models/unet.h"
#include "pipeline/controlnet_library.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string absolute_path(const std::string& p) {
  std::error_code ec;
  const fs::path a = fs::absolute(fs::path(p), ec);
  return ec ? p : a.lexically_normal().string();
}

// A float as A1111 prints the Python float it parsed: shortest form of its 6-digit value ("0.8", not 0.800000011...).
std::string float_number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return infotext_number(std::strtod(buf, nullptr));
}

const char* resize_mode_label(image::ResizeMode m) {
  switch (m) {
    case image::ResizeMode::kJustResize: return "Just Resize";
    case image::ResizeMode::kCropAndResize: return "Crop and Resize";
    case image::ResizeMode::kResizeAndFill: return "Resize and Fill";
  }
  return "Just Resize";
}

// [1, 3, H, W] f32 in [0, 1]: diffusers' control image processor (do_normalize=False).
// With an inpaint mask (its size): -1 in every channel where the mask is > 127
// (diffusers' make_inpaint_condition, sd-webui-controlnet's inpaint hint).
Tensor control_tensor(const image::Rgb& im, const image::Gray& mask) {
  const int64_t hw = static_cast<int64_t>(im.width) * im.height;
  std::vector<float> v(static_cast<size_t>(3 * hw));
  for (int64_t i = 0; i < hw; ++i) {
    const bool masked = !mask.empty() && mask.px[static_cast<size_t>(i)] > 127;
    for (int c = 0; c < 3; ++c)
      v[static_cast<size_t>(c * hw + i)] = masked ? -1.0f : static_cast<float>(im.px[static_cast<size_t>(i * 3 + c)]) / 255.0f;
  }
  return Tensor::from_vector(v, {1, 3, im.height, im.width});
}

// Whether the ControlNet's encoder can feed this UNet: the residuals must have the skips' shapes.
std::string mismatch(const ControlNetConfig& cn, const UNetConfig& u, int latent_channels) {
  const UNetConfig& c = cn.unet;
  if (c.cross_attention_dim[0] != u.cross_attention_dim[0])
    return "cross-attention width " + std::to_string(c.cross_attention_dim[0]) + " vs the model's " +
           std::to_string(u.cross_attention_dim[0]);
  if (c.block_out_channels != u.block_out_channels) return "other block widths";
  if (c.layers_per_block != u.layers_per_block) return "other layers per block";
  if (c.has_text_time() != u.has_text_time() ||
      c.projection_class_embeddings_input_dim != u.projection_class_embeddings_input_dim)
    return "another additional (SDXL text_time) embedding";
  if (c.in_channels != latent_channels)
    return std::to_string(c.in_channels) + " input channels for " + std::to_string(latent_channels) + "-channel latents";
  return "";
}

std::string family_label(const std::string& family, int width) {
  return (family.empty() ? std::string("an unknown family") : family) + " (cross-attention width " +
         std::to_string(width) + ")";
}

}  // namespace

ControlMode control_mode_from_name(const std::string& s) {
  const std::string v = lower(s);
  if (v == "balanced" || v == "0") return ControlMode::kBalanced;
  if (v == "prompt" || v == "1" || v == "my prompt is more important") return ControlMode::kPrompt;
  if (v == "controlnet" || v == "2" || v == "controlnet is more important") return ControlMode::kControlNet;
  throw_error(ErrorCode::kInvalidArgument, "control mode must be balanced, prompt or controlnet (0, 1, 2, or "
                                           "\"Balanced\", \"My prompt is more important\", \"ControlNet is more "
                                           "important\"), got '" + s + "'");
}

const char* control_mode_name(ControlMode m) {
  switch (m) {
    case ControlMode::kBalanced: return "balanced";
    case ControlMode::kPrompt: return "prompt";
    case ControlMode::kControlNet: return "controlnet";
  }
  return "balanced";
}

const char* control_mode_a1111_label(ControlMode m) {
  switch (m) {
    case ControlMode::kBalanced: return "Balanced";
    case ControlMode::kPrompt: return "My prompt is more important";
    case ControlMode::kControlNet: return "ControlNet is more important";
  }
  return "Balanced";
}

void validate_controlnet_units(const std::vector<ControlNetUnit>& units) {
  DIFFUSE_CHECK_ARG(units.size() <= 32, "at most 32 ControlNet units, got " + std::to_string(units.size()));
  for (size_t i = 0; i < units.size(); ++i) {
    const ControlNetUnit& u = units[i];
    const std::string who = "ControlNet unit " + std::to_string(i);
    DIFFUSE_CHECK_ARG(!u.path.empty(), who + ": no model given");
    DIFFUSE_CHECK_ARG(!u.image.empty(), who + ": no control image given");
    DIFFUSE_CHECK_ARG(u.image.px.size() == static_cast<size_t>(u.image.width) * u.image.height * 3,
                      who + ": the control image's pixels do not match its size");
    DIFFUSE_CHECK_ARG(u.mask.px.size() == static_cast<size_t>(u.mask.width) * u.mask.height,
                      who + ": the inpaint mask's pixels do not match its size");
    DIFFUSE_CHECK_ARG(std::isfinite(u.weight) && u.weight >= 0.0f && u.weight <= 2.0f,
                      who + ": weight must be between 0 and 2, got " + float_number(u.weight));
    DIFFUSE_CHECK_ARG(std::isfinite(u.guidance_start) && u.guidance_start >= 0.0 && u.guidance_start <= 1.0,
                      who + ": guidance_start must be between 0 and 1, got " + infotext_number(u.guidance_start));
    DIFFUSE_CHECK_ARG(std::isfinite(u.guidance_end) && u.guidance_end >= 0.0 && u.guidance_end <= 1.0,
                      who + ": guidance_end must be between 0 and 1, got " + infotext_number(u.guidance_end));
    DIFFUSE_CHECK_ARG(u.guidance_start < u.guidance_end,
                      who + ": guidance_start (" + infotext_number(u.guidance_start) +
                          ") must be below guidance_end (" + infotext_number(u.guidance_end) + ")");
  }
}

std::vector<std::pair<std::string, std::string>> controlnet_infotext(const std::vector<ControlNetUnit>& units) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < units.size(); ++i) {
    const ControlNetUnit& u = units[i];
    fs::path p(u.path);
    std::string name = fs::is_directory(p) ? fs::path(absolute_path(u.path)).filename().string() : p.stem().string();
    std::string hash;
    try {
      hash = controlnet_short_hash(u.path);
    } catch (const Error&) {
      hash.clear();  // unreadable: the generation itself reports it
    }
    const std::string model = hash.empty() ? name : name + " [" + hash + "]";
    std::string v = "Module: " + u.module + ", Model: " + model + ", Weight: " + float_number(u.weight) +
                    ", Resize Mode: " + resize_mode_label(u.resize_mode) + ", Low Vram: False" +
                    ", Guidance Start: " + infotext_number(u.guidance_start) +
                    ", Guidance End: " + infotext_number(u.guidance_end) +
                    ", Pixel Perfect: " + (u.pixel_perfect ? "True" : "False") +
                    ", Control Mode: " + control_mode_a1111_label(u.control_mode);
    if (u.guess_mode) v += ", Guess Mode: True";
    out.emplace_back("ControlNet " + std::to_string(i), v);
  }
  return out;
}

ControlNetCache::Entry ControlNetCache::get(const std::string& path, DType dtype, DType act_dtype, Device device) {
  const std::string key = absolute_path(path);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.model->dtype() == dtype && it->second.model->device() == device &&
      it->second.model->activation_dtype() == act_dtype)
    return it->second;
  ControlNetFile f = read_controlnet_file(path);
  auto model = std::make_shared<ControlNet>(f.config, f.weights, dtype, device);
  model->set_activation_dtype(act_dtype);
  Entry e{model, f.name, f.family, f.weights_path};
  entries_[key] = e;
  return e;
}

void ControlNetCache::keep_only(const std::vector<std::string>& paths) {
  std::vector<std::string> keys;
  for (const auto& p : paths) keys.push_back(absolute_path(p));
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (std::find(keys.begin(), keys.end(), it->first) == keys.end()) it = entries_.erase(it);
    else ++it;
  }
}

size_t ControlNetCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

ControlStep::ControlStep(ControlNetCache& cache, const std::vector<ControlNetUnit>& units, const ControlStepInputs& in)
    : in_(in) {
  if (units.empty()) return;
  validate_controlnet_units(units);
  std::vector<std::string> paths;
  for (const auto& u : units) paths.push_back(u.path);
  cache.keep_only(paths);
  const UNetConfig& ucfg = in.unet->config();
  for (size_t i = 0; i < units.size(); ++i) {
    const ControlNetUnit& u = units[i];
    const ControlNetCache::Entry e = cache.get(u.path, in.dtype, in.act_dtype, in.device);
    const ControlNetConfig& cc = e.model->config();
    const std::string why = mismatch(cc, ucfg, 4);
    DIFFUSE_CHECK_ARG(why.empty(), "ControlNet unit " + std::to_string(i) + ": '" + e.name + "' is for " +
                                       family_label(e.family, cc.unet.cross_attention_dim[0]) + ", the model '" +
                                       in.model_name + "' is " + in.model_family + " (" + why + ")");
    DIFFUSE_CHECK_ARG(cc.conditioning_channels == 3, "ControlNet unit " + std::to_string(i) + ": '" + e.name +
                                                          "' takes a " + std::to_string(cc.conditioning_channels) +
                                                          "-channel control image; only 3-channel (RGB) ones are supported");
    const int f = cc.cond_downscale();
    DIFFUSE_CHECK_ARG(in.width % 8 == 0 && in.height % 8 == 0 && f == 8,
                      "ControlNet unit " + std::to_string(i) + ": the size must be a multiple of 8 and the "
                      "ControlNet's hint block must downscale by 8 (it does by " + std::to_string(f) + ")");
    Unit unit;
    unit.params = u;
    unit.model = e.model;
    const image::Rgb sized = image::resize(u.image, in.width, in.height, u.resize_mode);
    const image::Gray mask = u.mask.empty() ? image::Gray{} : image::resize(u.mask, in.width, in.height, u.resize_mode);
    unit.image = to_preferred_layout(control_tensor(sized, mask).to(in.act_dtype).to(in.device));
    units_.push_back(std::move(unit));
  }
  const int64_t batch = in.cfg ? 2 * in.images : in.images;
  std::vector<float> table;
  for (float t : in.timesteps) table.insert(table.end(), static_cast<size_t>(batch), t);
  t_table_ = Tensor::from_vector(table, {static_cast<int64_t>(in.timesteps.size()), batch}).to(in.device);
  use_graph_ = in.device != Device::kCPU && runtime_options().cuda_graph;
}

uint32_t ControlStep::acting(int step) const {
  const int run = in_.end - in_.begin;  // diffusers' len(timesteps)
  const int i = step - in_.begin;
  uint32_t set = 0;
  for (size_t k = 0; k < units_.size() && k < 32; ++k) {
    const ControlNetUnit& p = units_[k].params;
    const bool keep = !(static_cast<double>(i) / run < p.guidance_start ||
                        static_cast<double>(i + 1) / run > p.guidance_end);
    if (keep && p.weight != 0.0f) set |= 1u << k;  // diffusers runs weight 0 with scale 0: residuals of zeros
  }
  return set;
}

Tensor ControlStep::unet_forward(const Tensor& model_in, int step) const {
  const Tensor t = t_table_.select(0, step);  // [B]
  const uint32_t set = acting(step);
  for (uint32_t b = set; b; b &= b - 1) ++evals_;
  if (!use_graph_) return eager(model_in, t, set);
  // As the plain UNet step (pipeline.cpp UNetStepper): fixed input buffers, one
  // eager call per acting set (plans, workspaces), then capture and replays.
  if (!x_.defined()) {
    x_ = Tensor::empty(model_in.shape(), model_in.dtype(), in_.device);
    t_ = Tensor::empty(t.shape(), DType::kF32, in_.device);
  }
  DIFFUSE_CHECK(model_in.shape() == x_.shape(), ErrorCode::kInvalidArgument, "[controlnet] UNet input shape changed mid-run");
  const Tensor x = model_in.contiguous();
  copy_bytes(x_.raw_data(), in_.device, x.raw_data(), in_.device, x.nbytes());
  copy_bytes(t_.raw_data(), in_.device, t.raw_data(), in_.device, t.nbytes());
  Captured& c = graphs_[set];
  if (c.calls++ == 0) return eager(x_, t_, set);
  if (!c.graph) {
    try {
      c.graph = backend_for(in_.device).capture([&] { c.out = eager(x_, t_, set); });
    } catch (const Error& e) {
      if (runtime_options().cuda_log) std::fprintf(stderr, "[controlnet] graph capture failed: %s\n", e.what());
      c.graph.reset();
    }
    if (!c.graph) {  // some op could not be captured: eager for the rest of this run
      release();
      use_graph_ = false;
      return eager(model_in, t, set);
    }
  }
  c.graph->replay();
  ++replays_;
  return c.out;
}

void ControlStep::release() const {
  graphs_.clear();
  x_ = t_ = Tensor();
}

Tensor ControlStep::eager(const Tensor& model_in, const Tensor& t, uint32_t set) const {
  const int64_t n = in_.images;
  UNetResiduals sum;
  bool any = false;
  for (size_t j = 0; j < units_.size(); ++j) {
    const Unit& u = units_[j];
    const ControlNetUnit& p = u.params;
    if (j >= 32 || !(set & (1u << j))) continue;
    const ControlNet& cn = *u.model;
    const int cin = cn.config().unet.in_channels;
    Tensor x = model_in.dim(1) > cin ? model_in.slice(1, 0, cin) : model_in;  // 9-channel inpainting UNets
    // Conditional half only: guess mode (diffusers) and "ControlNet is more important" (A1111's cfg_injection).
    const bool cond_only = in_.cfg && (p.guess_mode || p.control_mode == ControlMode::kControlNet);
    Tensor ctx = in_.context, pooled = in_.pooled, ids = in_.time_ids, tt = t;
    if (cond_only) {
      x = x.slice(0, n, 2 * n);
      ctx = ctx.slice(0, n, 2 * n);
      if (pooled.defined()) pooled = pooled.slice(0, n, 2 * n), ids = ids.slice(0, n, 2 * n);
      tt = t.slice(0, n, 2 * n);
    }
    UNetResiduals r = cn.forward(x, tt, ctx, u.image, pooled, ids, p.weight, p.guess_mode);
    if (p.control_mode != ControlMode::kBalanced && !p.guess_mode) {
      // Soft injection (sd-webui-controlnet): residual k of K + 1 times 0.825^(K - k), the mid one 1.
      const int K = static_cast<int>(r.down.size());
      for (int k = 0; k < K; ++k) r.down[static_cast<size_t>(k)] = scale(r.down[static_cast<size_t>(k)], static_cast<float>(std::pow(0.825, K - k)));
    }
    if (cond_only) {
      auto pad = [&](const Tensor& c) { return concat({Tensor::zeros(c.shape(), c.dtype(), c.device()), c}, 0); };
      for (auto& d : r.down) d = pad(d);
      r.mid = pad(r.mid);
    }
    if (!any) {
      sum = std::move(r);
      any = true;
    } else {
      for (size_t k = 0; k < sum.down.size(); ++k) sum.down[k] = add(sum.down[k], r.down[k]);
      sum.mid = add(sum.mid, r.mid);
    }
  }
  sum.image_prompt = in_.image_prompt;  // IP-Adapter tokens ride along (nullptr: none)
  if (!any) return in_.unet->forward(model_in, t, in_.context, in_.pooled, in_.time_ids, nullptr,
                                     in_.image_prompt ? &sum : nullptr, in_.timestep_cond);
  return in_.unet->forward(model_in, t, in_.context, in_.pooled, in_.time_ids, nullptr, &sum, in_.timestep_cond);
}

}  // namespace diffuse
