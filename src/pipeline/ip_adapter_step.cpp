// IP-Adapter in a generation (ip_adapter_step.h) and its parameters (ip_adapter_params.h).
#include "pipeline/ip_adapter_step.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "image/clip_preprocess.h"
#include "io/infotext.h"
#include "io/json_util.h"
#include "pipeline/controlnet_library.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

std::string absolute_path(const std::string& p) {
  std::error_code ec;
  const fs::path a = fs::absolute(fs::path(p), ec);
  return ec ? p : a.lexically_normal().string();
}

std::string number(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return infotext_number(std::strtod(buf, nullptr));
}

// The widths an encoder at `path` has, without reading its weights when a config.json says them.
ClipVisionConfig encoder_config(const std::string& path) {
  std::error_code ec;
  const fs::path folder_cfg = fs::path(path) / "config.json";
  const fs::path beside_cfg = fs::path(path).parent_path() / "config.json";
  if (fs::is_directory(path, ec)) {
    DIFFUSE_CHECK(fs::is_regular_file(folder_cfg, ec), ErrorCode::kNotFound,
                  "image encoder folder " + path + " has no config.json (diffusers layout: config.json + model.safetensors)");
    return ClipVisionConfig::from_json(read_python_json_file(folder_cfg.string()));
  }
  if (fs::is_regular_file(beside_cfg, ec)) return ClipVisionConfig::from_json(read_python_json_file(beside_cfg.string()));
  return ClipVisionConfig::infer(load_checkpoint(path).tensors);
}

}  // namespace

void validate_ip_adapter(const IpAdapterParams& p) {
  if (!p.active()) return;
  DIFFUSE_CHECK_ARG(!p.images.empty(), "ip_adapter: no reference image (--ip-image)");
  for (size_t i = 0; i < p.images.size(); ++i)
    DIFFUSE_CHECK_ARG(!p.images[i].empty(), "ip_adapter: reference image " + std::to_string(i) + " is empty");
  DIFFUSE_CHECK_ARG(std::isfinite(p.scale) && p.scale >= 0.0f && p.scale <= 2.0f,
                    "ip_adapter: scale must be between 0 and 2, got " + number(p.scale));
  if (!p.block_scales.empty()) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(p.block_scales);
    } catch (const std::exception& e) {
      throw_error(ErrorCode::kInvalidArgument, std::string("ip_adapter: block scales are not JSON: ") + e.what());
    }
    DIFFUSE_CHECK_ARG(j.is_object() || j.is_number(),
                      "ip_adapter: block scales must be a number or an object like {\"up\": {\"block_0\": [0, 1, 0]}}");
  }
}

std::pair<std::string, std::string> ip_adapter_infotext(const IpAdapterParams& p, int index) {
  const fs::path path(p.model);
  const std::string name = path.stem().string();
  std::string hash;
  try {
    hash = controlnet_short_hash(p.model);
  } catch (const Error&) {
    hash.clear();
  }
  std::string module = p.module;
  if (module.empty()) module = "ip-adapter_clip";
  std::string v = "Module: " + module + ", Model: " + (hash.empty() ? name : name + " [" + hash + "]") +
                  ", Weight: " + number(p.scale) + ", Resize Mode: Crop and Resize, Low Vram: False" +
                  ", Guidance Start: 0, Guidance End: 1, Pixel Perfect: False, Control Mode: Balanced";
  if (p.images.size() > 1) v += ", Images: " + std::to_string(p.images.size());
  return {"ControlNet " + std::to_string(index), v};
}

IpAdapterCache::Entry IpAdapterCache::get(const std::string& adapter_path, const std::string& encoder_path,
                                          DType dtype, DType act_dtype, Device device) {
  const std::string key = absolute_path(adapter_path) + "\n" + encoder_path + "\n" + dtype_name(dtype) + "\n" +
                          dtype_name(act_dtype) + "\n" + std::to_string(static_cast<int>(device));
  std::lock_guard<std::mutex> lock(mutex_);
  if (key == key_ && entry_.adapter) return entry_;
  Entry e;
  auto adapter = IpAdapter::load(adapter_path, dtype, device);
  e.encoder_path = find_image_encoder(adapter_path, encoder_path, *adapter);
  auto encoder = ClipVisionModel::load(e.encoder_path, dtype, device);
  adapter->check_encoder(encoder->config(), e.encoder_path);
  encoder->set_activation_dtype(act_dtype);
  adapter->set_activation_dtype(act_dtype);
  e.adapter = std::move(adapter);
  e.encoder = std::move(encoder);
  entry_ = e;
  key_ = key;
  return e;
}

void IpAdapterCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  entry_ = Entry();
  key_.clear();
}

std::string find_image_encoder(const std::string& adapter_path, const std::string& given, const IpAdapter& adapter) {
  std::error_code ec;
  if (!given.empty()) {
    DIFFUSE_CHECK(fs::exists(given, ec), ErrorCode::kNotFound,
                  "image encoder " + given + " does not exist (a diffusers image_encoder folder or a weights file)");
    adapter.check_encoder(encoder_config(given), given);
    return given;
  }
  const fs::path dir = fs::path(absolute_path(adapter_path)).parent_path();
  const std::vector<fs::path> candidates = {dir / "image_encoder", dir.parent_path() / "models" / "image_encoder",
                                            dir.parent_path() / "image_encoder"};
  std::string first_found;
  for (const fs::path& c : candidates) {
    if (!fs::is_directory(c, ec)) continue;
    if (first_found.empty()) first_found = c.string();
    ClipVisionConfig cfg;
    try {
      cfg = encoder_config(c.string());
    } catch (const Error&) {
      continue;
    }
    const int have = adapter.uses_hidden_states() ? cfg.hidden_size : cfg.projection_dim;
    if (have == adapter.input_dim()) return c.string();
  }
  if (!first_found.empty()) adapter.check_encoder(encoder_config(first_found), first_found);  // says what is needed
  throw_error(ErrorCode::kNotFound,
              "IP-Adapter " + adapter.name() + " needs " + adapter.expected_encoder() + ": get its image encoder " +
                  (dir / "image_encoder" / "model.safetensors").string() + " with its config.json (the diffusers "
                  "folder image_encoder/ of h94/IP-Adapter: models/image_encoder for ViT-H, sdxl_models/image_encoder "
                  "for ViT-bigG), or give one with --ip-image-encoder");
}

std::unique_ptr<UNetImagePrompt> prepare_image_prompt(IpAdapterCache& cache, const IpAdapterParams& p,
                                                      const ImagePromptInputs& in) {
  if (!p.active()) return nullptr;
  validate_ip_adapter(p);
  const IpAdapterCache::Entry e = cache.get(p.model, p.image_encoder, in.dtype, in.act_dtype, in.device);
  const IpAdapter& ad = *e.adapter;
  const ClipVisionModel& enc = *e.encoder;
  const UNetConfig& ucfg = in.unet->config();
  ad.check_unet(ucfg, in.model_label);
  const std::vector<float> scales =
      p.block_scales.empty() ? std::vector<float>(ad.num_layers(), p.scale)
                             : ip_adapter_layer_scales(nlohmann::json::parse(p.block_scales), ucfg);

  // Pixel values of every image [K, 3, S, S] and the encoder's output.
  const int size = enc.config().image_size;
  const int64_t K = static_cast<int64_t>(p.images.size());
  std::vector<float> pixels;
  for (const image::Rgb& im : p.images) {
    const std::vector<float> v = image::clip_pixel_values(im, size);
    pixels.insert(pixels.end(), v.begin(), v.end());
  }
  const Tensor pv = Tensor::from_vector(pixels, {K, 3, size, size});
  Tensor pos, neg;
  if (ad.uses_hidden_states()) {
    pos = enc.forward(pv, false).penultimate;                                        // [K, L, H]
    const Tensor zero = enc.forward(Tensor::zeros({1, 3, size, size}, DType::kF32), false).penultimate;
    neg = K == 1 ? zero : concat(std::vector<Tensor>(static_cast<size_t>(K), zero), 0);  // [K, L, H]
  } else {
    pos = enc.forward(pv).image_embeds;                                              // [K, E]
    neg = Tensor::zeros(pos.shape(), pos.dtype(), pos.device());
  }
  // Projection per image, the images' tokens concatenated: [1, K*T, D].
  auto tokens_of = [&](const Tensor& embeds) {
    const Tensor t = ad.project(embeds);  // [K, T, D]
    return t.contiguous().reshape({1, K * t.dim(1), t.dim(2)}).to(in.act_dtype);
  };
  const Tensor tp = tokens_of(pos);
  std::vector<Tensor> rows;
  if (in.cfg) {
    const Tensor tn = tokens_of(neg);
    for (int i = 0; i < in.images; ++i) rows.push_back(tn);
  }
  for (int i = 0; i < in.images; ++i) rows.push_back(tp);
  auto prompt = std::make_unique<UNetImagePrompt>();
  UNetImagePrompt::Source src;
  src.tokens = rows.size() == 1 ? rows[0] : concat(rows, 0);  // [B, K*T, D]
  src.layers = ad.layers(scales);
  prompt->sources.push_back(std::move(src));
  return prompt;
}

}  // namespace diffuse
