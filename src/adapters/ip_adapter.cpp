// IP-Adapter files, image projections and per-layer scales (see ip_adapter.h).
#include "adapters/ip_adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/ops.h"
#include "io/file_io.h"
#include "io/unpickler.h"

namespace diffuse {

namespace fs = std::filesystem;

const char* ip_adapter_kind_name(IpAdapterKind k) {
  switch (k) {
    case IpAdapterKind::kBase: return "base";
    case IpAdapterKind::kPlus: return "plus";
    case IpAdapterKind::kFull: return "full";
  }
  return "?";
}

namespace {

constexpr int kResamplerHeadDim = 64;  // the original Resampler's dim_head (diffusers: heads = to_q rows / 64)

[[noreturn]] void fail_io(const std::string& name, const std::string& what) {
  throw_error(ErrorCode::kIo, "IP-Adapter " + name + ": " + what);
}

std::string family_of_width(int d) {
  if (d == 768) return "SD 1.x";
  if (d == 1024) return "SD 2.x";
  if (d == 2048) return "SDXL";
  return "another model (not SD 1.x, 2.x or SDXL)";
}

// A torch.save'd adapter: {"image_proj": {...}, "ip_adapter": {...}} flattened to
// "image_proj.<k>" / "ip_adapter.<k>"; a flat state dict is taken as it is.
TensorMap read_torch_adapter(const std::string& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  TensorMap out;
  visit_torch_object(file->data(), file->size(), file, path, [&](const PyRef& root) {
    if (root->kind != PyValue::Kind::kDict) fail_io(path, "the pickled object is not a dict");
    for (size_t i = 0; i < root->items.size(); ++i) {
      const PyRef& k = root->items[i];
      const PyRef& v = root->values[i];
      if (!k->is_str()) continue;
      if (v->kind == PyValue::Kind::kTensor) {
        out[k->s] = v->tensor;
      } else if (v->kind == PyValue::Kind::kDict) {
        for (size_t j = 0; j < v->items.size(); ++j) {
          if (v->items[j]->is_str() && v->values[j]->kind == PyValue::Kind::kTensor)
            out[k->s + "." + v->items[j]->s] = v->values[j]->tensor;
        }
      }
    }
  });
  return out;
}

}  // namespace

TensorMap IpAdapter::read_weights(const std::string& path) {
  std::error_code ec;
  DIFFUSE_CHECK(fs::is_regular_file(path, ec), ErrorCode::kNotFound, "IP-Adapter " + path + " does not exist");
  const std::string ext = fs::path(path).extension().string();
  return ext == ".safetensors" ? load_checkpoint(path).tensors : read_torch_adapter(path);
}

std::unique_ptr<IpAdapter> IpAdapter::load(const std::string& path, DType dtype, Device device) {
  return std::make_unique<IpAdapter>(read_weights(path), dtype, device, fs::path(path).stem().string());
}

IpAdapter::IpAdapter(const TensorMap& weights, DType dtype, Device device, std::string name)
    : name_(std::move(name)), dtype_(dtype), act_dtype_(dtype), device_(device) {
  auto find = [&](const std::string& k) -> Tensor {
    auto it = weights.find(k);
    return it == weights.end() ? Tensor() : it->second;
  };
  auto need = [&](const std::string& k, int ndim) -> Tensor {
    Tensor t = find(k);
    if (!t.defined()) fail_io(name_, "missing '" + k + "'");
    if (t.ndim() != ndim || !is_floating(t.dtype()))
      fail_io(name_, "'" + k + "' is " + t.str() + ", expected a " + std::to_string(ndim) + "-D floating tensor");
    return t;
  };
  bool any_proj = false;
  for (const auto& kv : weights) any_proj = any_proj || kv.first.rfind("image_proj.", 0) == 0;
  if (!any_proj)
    fail_io(name_, "no image_proj.* tensors: not an IP-Adapter file (expected image_proj.* and ip_adapter.N.to_k_ip/to_v_ip)");
  if (find("image_proj.perceiver_resampler.proj_in.weight").defined() ||
      (find("image_proj.norm.weight").defined() && !find("image_proj.proj.weight").defined() &&
       find("image_proj.proj.0.weight").defined() && !find("image_proj.proj.3.weight").defined()))
    throw_error(ErrorCode::kUnsupported, "IP-Adapter " + name_ + " is a FaceID adapter (insightface face "
                                         "embeddings and a LoRA): not supported; use ip-adapter-plus-face or full-face");

  std::vector<std::pair<Tensor*, Tensor>> slots;  // placed together below
  auto slot = [&](Tensor& dst, const Tensor& src) { slots.emplace_back(&dst, src); };
  if (Tensor p = find("image_proj.proj.weight"); p.defined()) {
    kind_ = IpAdapterKind::kBase;  // ImageProjection: 4 tokens (diffusers hard-codes num_image_text_embeds = 4)
    p = need("image_proj.proj.weight", 2);
    const Tensor nw = need("image_proj.norm.weight", 1);
    cross_dim_ = static_cast<int>(nw.dim(0));
    DIFFUSE_CHECK(p.dim(0) % cross_dim_ == 0, ErrorCode::kIo,
                  "IP-Adapter " + name_ + ": image_proj.proj.weight " + p.str() + " is not a multiple of the norm's width " +
                      std::to_string(cross_dim_));
    tokens_ = static_cast<int>(p.dim(0) / cross_dim_);
    input_dim_ = static_cast<int>(p.dim(1));
    slot(proj_w_, p), slot(proj_b_, need("image_proj.proj.bias", 1));
    slot(norm_w_, nw), slot(norm_b_, need("image_proj.norm.bias", 1));
  } else if (find("image_proj.proj.3.weight").defined()) {
    kind_ = IpAdapterKind::kFull;  // MLPProjModel / IPAdapterFullImageProjection: one token per encoder token
    const Tensor p0 = need("image_proj.proj.0.weight", 2), p2 = need("image_proj.proj.2.weight", 2);
    input_dim_ = static_cast<int>(p0.dim(1));
    cross_dim_ = static_cast<int>(p2.dim(0));
    tokens_ = 0;  // the encoder's token count (257 for ViT-H/14 at 224)
    slot(proj_w_, p0), slot(proj_b_, need("image_proj.proj.0.bias", 1));
    slot(proj2_w_, p2), slot(proj2_b_, need("image_proj.proj.2.bias", 1));
    slot(norm_w_, need("image_proj.proj.3.weight", 1)), slot(norm_b_, need("image_proj.proj.3.bias", 1));
  } else {
    kind_ = IpAdapterKind::kPlus;  // Resampler
    const Tensor lat = need("image_proj.latents", 3);   // [1, Q, W]
    const Tensor pin = need("image_proj.proj_in.weight", 2);   // [W, H]
    const Tensor pout = need("image_proj.proj_out.weight", 2);  // [D, W]
    tokens_ = static_cast<int>(lat.dim(1));
    input_dim_ = static_cast<int>(pin.dim(1));
    cross_dim_ = static_cast<int>(pout.dim(0));
    slot(latents_, lat);
    slot(proj_in_w_, pin), slot(proj_in_b_, need("image_proj.proj_in.bias", 1));
    slot(proj_out_w_, pout), slot(proj_out_b_, need("image_proj.proj_out.bias", 1));
    slot(norm_w_, need("image_proj.norm_out.weight", 1)), slot(norm_b_, need("image_proj.norm_out.bias", 1));
    int depth = 0;
    while (find("image_proj.layers." + std::to_string(depth) + ".0.to_q.weight").defined()) ++depth;
    if (depth == 0) fail_io(name_, "missing 'image_proj.layers.0.0.to_q.weight' (neither a base, plus nor full-face adapter)");
    resampler_.resize(depth);
    for (int i = 0; i < depth; ++i) {
      const std::string p = "image_proj.layers." + std::to_string(i) + ".";
      ResamplerLayer& l = resampler_[i];
      slot(l.norm1_w, need(p + "0.norm1.weight", 1)), slot(l.norm1_b, need(p + "0.norm1.bias", 1));
      slot(l.norm2_w, need(p + "0.norm2.weight", 1)), slot(l.norm2_b, need(p + "0.norm2.bias", 1));
      const Tensor q = need(p + "0.to_q.weight", 2);
      if (q.dim(0) % kResamplerHeadDim != 0)
        fail_io(name_, "'" + p + "0.to_q.weight' " + q.str() + " is not a whole number of 64-wide heads");
      heads_ = static_cast<int>(q.dim(0) / kResamplerHeadDim);
      slot(l.to_q, q), slot(l.to_kv, need(p + "0.to_kv.weight", 2)), slot(l.to_out, need(p + "0.to_out.weight", 2));
      slot(l.ff_ln_w, need(p + "1.0.weight", 1)), slot(l.ff_ln_b, need(p + "1.0.bias", 1));
      slot(l.ff1, need(p + "1.1.weight", 2)), slot(l.ff2, need(p + "1.3.weight", 2));
      const int64_t wdt = lat.dim(2), inner = q.dim(0);
      const Tensor kv = find(p + "0.to_kv.weight"), out = find(p + "0.to_out.weight");
      if (q.dim(1) != wdt || kv.dim(0) != 2 * inner || kv.dim(1) != wdt || out.dim(0) != wdt || out.dim(1) != inner)
        fail_io(name_, "resampler layer " + std::to_string(i) + " shapes do not agree with latents " + lat.str());
    }
  }

  // ip_adapter.<2i+1>.to_k_ip / to_v_ip, i = 0, 1, ... without gaps.
  std::set<int> ids;
  for (const auto& kv : weights) {
    const std::string& k = kv.first;
    if (k.rfind("ip_adapter.", 0) != 0) continue;
    const size_t dot = k.find('.', 11);
    if (dot == std::string::npos) continue;
    try {
      ids.insert(std::stoi(k.substr(11, dot - 11)));
    } catch (const std::exception&) {
      fail_io(name_, "unexpected key '" + k + "'");
    }
  }
  if (ids.empty()) fail_io(name_, "no ip_adapter.N.to_k_ip.weight tensors");
  k_.resize(ids.size());
  v_.resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string p = "ip_adapter." + std::to_string(2 * i + 1) + ".";
    const Tensor k = need(p + "to_k_ip.weight", 2), v = need(p + "to_v_ip.weight", 2);
    if (k.dim(1) != cross_dim_ || v.shape() != k.shape())
      fail_io(name_, "'" + p + "to_k_ip.weight' " + k.str() + " / to_v_ip " + v.str() +
                         " do not take the projection's width " + std::to_string(cross_dim_));
    slot(k_[i], k), slot(v_[i], v);
  }

  std::vector<Tensor> src;
  for (auto& s : slots) src.push_back(s.second.to(DType::kF32).contiguous());
  const std::vector<Tensor> placed = place_weights(src, dtype_, device_);
  for (size_t i = 0; i < slots.size(); ++i) *slots[i].first = placed[i];
}

std::string IpAdapter::family_label() const { return family_of_width(cross_dim_); }

void IpAdapter::check_unet(const UNetConfig& unet, const std::string& model_label) const {
  const auto names = UNet::cross_attention_names(unet);
  const int d = unet.cross_attention_dim[0];
  bool ok = d == cross_dim_ && names.size() == k_.size();
  for (size_t i = 0; ok && i < names.size(); ++i) ok = k_[i].dim(0) == names[i].second;
  if (!ok) {
    throw_error(ErrorCode::kInvalidArgument,
                "IP-Adapter " + name_ + " is for " + family_label() + " (token width " + std::to_string(cross_dim_) +
                    ", " + std::to_string(k_.size()) + " cross-attention layers), but " + model_label +
                    " has cross-attention width " + std::to_string(d) + " and " + std::to_string(names.size()) +
                    " cross-attentions: use an IP-Adapter made for the model's family");
  }
}

std::string IpAdapter::expected_encoder() const {
  const std::string what = uses_hidden_states() ? "hidden size " : "image_embeds ";
  std::string known;
  if (uses_hidden_states()) known = input_dim_ == 1280 ? "ViT-H/14, " : input_dim_ == 1664 ? "ViT-bigG/14, " : "";
  else known = input_dim_ == 1024 ? "ViT-H/14, " : input_dim_ == 1280 ? "ViT-bigG/14, " : "";
  return "a CLIP vision encoder (" + known + what + std::to_string(input_dim_) + ")";
}

void IpAdapter::check_encoder(const ClipVisionConfig& e, const std::string& encoder_path) const {
  const int have = uses_hidden_states() ? e.hidden_size : e.projection_dim;
  DIFFUSE_CHECK_ARG(have == input_dim_, "IP-Adapter " + name_ + " needs " + expected_encoder() + ", but " +
                                            encoder_path + " is " + e.describe() +
                                            ": give the matching image encoder (--ip-image-encoder)");
}

Tensor IpAdapter::project(const Tensor& embeds_in) const {
  const Tensor x = embeds_in.to(device_).to(act_dtype_);
  if (kind_ == IpAdapterKind::kBase) {
    DIFFUSE_CHECK_ARG(x.ndim() == 2 && x.dim(1) == input_dim_, "[ip_adapter] image_embeds must be [M, " +
                                                                   std::to_string(input_dim_) + "], got " + x.str());
    const Tensor t = linear(x, proj_w_, proj_b_).reshape({x.dim(0), tokens_, cross_dim_});  // [M, T, D]
    return layer_norm(t, norm_w_, norm_b_, 1e-5f);
  }
  DIFFUSE_CHECK_ARG(x.ndim() == 3 && x.dim(2) == input_dim_, "[ip_adapter] hidden states must be [M, L, " +
                                                                 std::to_string(input_dim_) + "], got " + x.str());
  if (kind_ == IpAdapterKind::kFull) {
    const Tensor h = linear(x, proj_w_, proj_b_, Activation::kGelu);  // [M, L, H]
    return layer_norm(linear(h, proj2_w_, proj2_b_), norm_w_, norm_b_, 1e-5f);  // [M, L, D]
  }
  // IPAdapterPlusImageProjection (the original Resampler).
  const int64_t M = x.dim(0), inner = int64_t{heads_} * kResamplerHeadDim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kResamplerHeadDim));
  Tensor lat = concat(std::vector<Tensor>(static_cast<size_t>(M), latents_), 0).to(act_dtype_);  // [M, Q, W]
  const Tensor h = linear(x, proj_in_w_, proj_in_b_);                               // [M, L, W]
  for (const ResamplerLayer& l : resampler_) {
    const Tensor xn = layer_norm(h, l.norm1_w, l.norm1_b, 1e-5f);                  // ln0
    const Tensor ln = layer_norm(lat, l.norm2_w, l.norm2_b, 1e-5f);                // ln1
    const Tensor q = linear(ln, l.to_q);                                           // [M, Q, 64h]
    const Tensor kv = linear(concat({xn, ln}, 1), l.to_kv);                        // [M, L + Q, 128h]
    const Tensor a = attention(q, kv.slice(2, 0, inner), kv.slice(2, inner, 2 * inner), heads_, scale);
    lat = linear(a, l.to_out, Tensor(), Activation::kNone, lat);                   // + residual
    const Tensor f = linear(layer_norm(lat, l.ff_ln_w, l.ff_ln_b, 1e-5f), l.ff1, Tensor(), Activation::kGelu);
    lat = linear(f, l.ff2, Tensor(), Activation::kNone, lat);                      // [M, Q, W]
  }
  return layer_norm(linear(lat, proj_out_w_, proj_out_b_), norm_w_, norm_b_, 1e-5f);  // [M, Q, D]
}

std::vector<UNetImagePrompt::Layer> IpAdapter::layers(const std::vector<float>& scales) const {
  DIFFUSE_CHECK_ARG(scales.size() == k_.size(), "[ip_adapter] " + std::to_string(scales.size()) + " scales for " +
                                                    std::to_string(k_.size()) + " layers");
  std::vector<UNetImagePrompt::Layer> out(k_.size());
  for (size_t i = 0; i < k_.size(); ++i) out[i] = {k_[i], v_[i], scales[i]};
  return out;
}

IpAdapterProbe probe_ip_adapter(const std::string& path) {
  const TensorMap w = IpAdapter::read_weights(path);
  auto dim0 = [&](const std::string& k) -> int {
    auto it = w.find(k);
    return it == w.end() || it->second.ndim() < 1 ? 0 : static_cast<int>(it->second.dim(0));
  };
  IpAdapterProbe p;
  if (w.count("image_proj.proj.weight")) {
    p.kind = IpAdapterKind::kBase, p.cross_attention_dim = dim0("image_proj.norm.weight");
  } else if (w.count("image_proj.proj.3.weight")) {
    p.kind = IpAdapterKind::kFull, p.cross_attention_dim = dim0("image_proj.proj.3.weight");
  } else if (w.count("image_proj.proj_out.weight")) {
    p.kind = IpAdapterKind::kPlus, p.cross_attention_dim = dim0("image_proj.proj_out.weight");
  } else {
    fail_io(path, "no image_proj.proj / proj_out / proj.3 weights: not an IP-Adapter file this version reads");
  }
  while (w.count("ip_adapter." + std::to_string(2 * p.layers + 1) + ".to_k_ip.weight")) ++p.layers;
  if (p.layers == 0) fail_io(path, "no ip_adapter.N.to_k_ip.weight tensors");
  p.family = p.cross_attention_dim == 768 ? "sd1" : p.cross_attention_dim == 1024 ? "sd2"
             : p.cross_attention_dim == 2048 ? "sdxl" : "";
  return p;
}

// ---- per-layer scales (diffusers loaders/unet_loader_utils.py _maybe_expand_lora_scales) ----

std::vector<float> ip_adapter_layer_scales(const nlohmann::json& spec, const UNetConfig& unet) {
  const auto names = UNet::cross_attention_names(unet);
  auto number = [](const nlohmann::json& v, const std::string& where) {
    DIFFUSE_CHECK_ARG(v.is_number(), "ip-adapter scale " + where + " must be a number, got " + v.dump());
    const double s = v.get<double>();
    DIFFUSE_CHECK_ARG(std::isfinite(s) && s >= 0.0 && s <= 2.0,
                      "ip-adapter scale " + where + " = " + v.dump() + " is outside [0, 2]");
    return static_cast<float>(s);
  };
  if (!spec.is_object()) return std::vector<float>(names.size(), number(spec, "(all layers)"));

  std::map<std::string, float> per_attention;  // "down_blocks.1.attentions.0" -> scale; the rest stays 0
  for (const auto& kv : spec.items()) {
    const std::string& side = kv.key();
    if (side == "mid") {
      nlohmann::json v = kv.value();
      if (v.is_array()) {
        DIFFUSE_CHECK_ARG(v.size() == 1, "ip-adapter scale 'mid' takes 1 value, got " + std::to_string(v.size()));
        v = v[0];
      }
      const float s = number(v, "'mid'");
      DIFFUSE_CHECK_ARG(unet.mid_block_type == "UNetMidBlock2DCrossAttn", "ip-adapter scale 'mid': this UNet's mid block has no attention");
      per_attention["mid_block.attentions.0"] = s;
      continue;
    }
    DIFFUSE_CHECK_ARG(side == "down" || side == "up",
                      "ip-adapter scales: unknown key '" + side + "' (down, mid, up)");
    const bool down = side == "down";
    const int n = unet.num_blocks();
    std::vector<int> with_attention;
    for (int i = 0; i < n; ++i) {
      const std::string& type = down ? unet.down_block_types[i] : unet.up_block_types[i];
      if (type == (down ? "CrossAttnDownBlock2D" : "CrossAttnUpBlock2D")) with_attention.push_back(i);
    }
    auto per_block = [&](int i) { return down ? unet.layers_per_block[i] : unet.layers_per_block[n - 1 - i] + 1; };
    auto set_block = [&](int i, const nlohmann::json& v, const std::string& where) {
      const int count = per_block(i);
      std::vector<float> s;
      if (v.is_array()) {
        DIFFUSE_CHECK_ARG(v.size() == 1 || static_cast<int>(v.size()) == count,
                          "ip-adapter scale " + where + " takes " + std::to_string(count) + " values (one per attention), got " +
                              std::to_string(v.size()));
        for (size_t j = 0; j < v.size(); ++j) s.push_back(number(v[j], where + "[" + std::to_string(j) + "]"));
        if (s.size() == 1) s.assign(static_cast<size_t>(count), s[0]);
      } else {
        s.assign(static_cast<size_t>(count), number(v, where));
      }
      for (int a = 0; a < count; ++a)
        per_attention[(down ? "down_blocks." : "up_blocks.") + std::to_string(i) + ".attentions." + std::to_string(a)] = s[a];
    };
    if (!kv.value().is_object()) {
      for (int i : with_attention) set_block(i, kv.value(), "'" + side + "'");
      continue;
    }
    for (const auto& b : kv.value().items()) {
      const std::string where = "'" + side + "." + b.key() + "'";
      int i = -1;
      if (b.key().rfind("block_", 0) == 0) {
        try {
          size_t used = 0;
          i = std::stoi(b.key().substr(6), &used);
          if (used != b.key().size() - 6) i = -1;
        } catch (const std::exception&) {
          i = -1;
        }
      }
      DIFFUSE_CHECK_ARG(i >= 0 && i < n, "ip-adapter scales: unknown block " + where + " (block_0 to block_" +
                                             std::to_string(n - 1) + ")");
      DIFFUSE_CHECK_ARG(std::find(with_attention.begin(), with_attention.end(), i) != with_attention.end(),
                        "ip-adapter scales: block " + where + " has no attention layers");
      set_block(i, b.value(), where);
    }
  }
  std::vector<float> out;
  for (const auto& nm : names) {
    const std::string& full = nm.first;  // "<prefix>attentions.<a>.transformer_blocks.<d>.attn2"
    const std::string key = full.substr(0, full.find(".transformer_blocks."));
    auto it = per_attention.find(key);
    out.push_back(it == per_attention.end() ? 0.0f : it->second);
  }
  return out;
}

}  // namespace diffuse
