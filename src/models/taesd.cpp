// TAESD decoder (taesd.h): madebyollin/taesd taesd.py Decoder, diffusers DecoderTiny.
#include "models/taesd.h"

#include <cctype>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "core/ops.h"

namespace diffuse {

namespace {

namespace fs = std::filesystem;

// One row per family (A1111's models/VAE-approx names; the Hub's madebyollin/taesd*).
const TaesdVariant kTaesdVariants[] = {
    {Family::kSD1, "taesd_decoder", "taesd"},
    {Family::kSD2, "taesd_decoder", "taesd"},
    {Family::kSDXL, "taesdxl_decoder", "taesdxl"},
};

bool is_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// "12.conv.0.weight" -> (12, "conv.0.weight"); nullopt when `name` does not start with an index.
std::optional<std::pair<int, std::string>> split_index(const std::string& name) {
  const size_t dot = name.find('.');
  if (dot == std::string::npos || dot > 6) return std::nullopt;
  const std::string head = name.substr(0, dot);
  if (!is_digits(head)) return std::nullopt;
  return std::make_pair(std::stoi(head), name.substr(dot + 1));
}

using Fn = std::function<void(const std::string&, const Shape&, Tensor&)>;

// The one list of tensors: original-layout names, in Sequential order.
void visit_tensors(const TaesdConfig& c, TaesdDecoder::Weights& w, const Fn& fn) {
  const int64_t ch = c.channels;
  int index = 1;  // 0 is the Clamp
  auto name = [&](const char* rest) { return std::to_string(index) + "." + rest; };
  fn(name("weight"), {ch, c.latent_channels, 3, 3}, w.in_w);
  fn(name("bias"), {ch}, w.in_b);
  index += 2;  // the ReLU after it
  const int stages = static_cast<int>(c.blocks.size());
  w.stages.resize(stages);
  w.up_w.resize(stages - 1);
  for (int s = 0; s < stages; ++s) {
    w.stages[s].resize(c.blocks[s]);
    for (TaesdDecoder::Block& b : w.stages[s]) {
      fn(name("conv.0.weight"), {ch, ch, 3, 3}, b.conv0_w);
      fn(name("conv.0.bias"), {ch}, b.conv0_b);
      fn(name("conv.2.weight"), {ch, ch, 3, 3}, b.conv1_w);
      fn(name("conv.2.bias"), {ch}, b.conv1_b);
      fn(name("conv.4.weight"), {ch, ch, 3, 3}, b.conv2_w);
      fn(name("conv.4.bias"), {ch}, b.conv2_b);
      ++index;
    }
    if (s + 1 < stages) {
      ++index;  // the Upsample
      fn(name("weight"), {ch, ch, 3, 3}, w.up_w[s]);
      ++index;
    }
  }
  fn(name("weight"), {c.out_channels, ch, 3, 3}, w.out_w);
  fn(name("bias"), {c.out_channels}, w.out_b);
}

}  // namespace

// ---- config ---------------------------------------------------------------

TaesdConfig TaesdConfig::taesd() { return TaesdConfig{}; }

TaesdConfig TaesdConfig::from_weights(const TensorMap& decoder, const std::string& file) {
  auto it = decoder.find("1.weight");
  DIFFUSE_CHECK(it != decoder.end(), ErrorCode::kIo, file + ": not a TAESD decoder: no tensor '1.weight' (conv_in)");
  const Shape& s = it->second.shape();
  DIFFUSE_CHECK(s.size() == 4 && s[0] > 0 && s[1] > 0 && s[2] == 3 && s[3] == 3, ErrorCode::kIo,
                file + ": TAESD decoder '1.weight' has shape " + shape_str(s) + ", expected (C,latent,3,3)");
  TaesdConfig c;
  c.channels = static_cast<int>(s[0]);
  c.latent_channels = static_cast<int>(s[1]);
  return c;
}

void TaesdConfig::validate() const {
  DIFFUSE_CHECK_ARG(latent_channels > 0 && channels > 0 && out_channels > 0,
                    "[TaesdConfig] channel counts must be positive");
  DIFFUSE_CHECK_ARG(!blocks.empty(), "[TaesdConfig] blocks is empty");
  for (int b : blocks) DIFFUSE_CHECK_ARG(b >= 0, "[TaesdConfig] a stage has a negative block count");
}

// ---- layouts ---------------------------------------------------------------

TensorMap taesd_decoder_tensors(const TensorMap& file_tensors, const std::string& file) {
  // Which layout: the first conv's weight names it.
  enum { kOriginal, kModule, kDiffusers } layout;
  if (file_tensors.count("1.weight")) {
    layout = kOriginal;
  } else if (file_tensors.count("decoder.1.weight")) {
    layout = kModule;
  } else if (file_tensors.count("decoder.layers.0.weight")) {
    layout = kDiffusers;
  } else {
    throw_error(ErrorCode::kIo, file +
                                    ": not a TAESD decoder: none of '1.weight' (taesd_decoder), 'decoder.1.weight' "
                                    "(TAESD module) or 'decoder.layers.0.weight' (diffusers AutoencoderTiny) is there (" +
                                    std::to_string(file_tensors.size()) + " tensors)");
  }
  TensorMap out;
  for (const auto& [name, t] : file_tensors) {
    std::string rest = name;
    int offset = 0;
    if (layout == kModule || layout == kDiffusers) {
      if (name.rfind("encoder.", 0) == 0) continue;  // a whole autoencoder's file: the decoder only
      const std::string prefix = layout == kModule ? "decoder." : "decoder.layers.";
      if (name.rfind(prefix, 0) != 0) {
        out.emplace(name, t);  // unexpected: WeightTable names it
        continue;
      }
      rest = name.substr(prefix.size());
      offset = layout == kDiffusers ? 1 : 0;  // DecoderTiny's Sequential has no Clamp entry
    }
    auto idx = split_index(rest);
    if (!idx) {
      out.emplace(name, t);
      continue;
    }
    out.emplace(std::to_string(idx->first + offset) + "." + idx->second, t);
  }
  return out;
}

// ---- model -----------------------------------------------------------------

WeightSpecs TaesdDecoder::expected_tensors(const TaesdConfig& config) {
  WeightSpecs specs;
  Weights w;
  visit_tensors(config, w, [&](const std::string& name, const Shape& shape, Tensor&) { specs.emplace_back(name, shape); });
  return specs;
}

TensorMap TaesdDecoder::random_weights(const TaesdConfig& config, uint64_t seed, DType dtype) {
  return diffuse::random_weights(expected_tensors(config), seed, dtype);
}

TaesdDecoder::TaesdDecoder(const TaesdConfig& config, const TensorMap& weights, DType dtype, Device device)
    : config_(config), dtype_(dtype), device_(device) {
  config_.validate();
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("[TaesdDecoder] dtype must be floating, got ") + dtype_name(dtype));
  weights_ = WeightTable("taesd decoder", expected_tensors(config_), weights, dtype_, device_, ExtraWeights::kReject);
  visit_tensors(config_, w_, [&](const std::string& name, const Shape&, Tensor& slot) { slot = weights_.get(name); });
}

TaesdDecoder TaesdDecoder::load(const std::string& path, DType dtype, Device device) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    // A diffusers AutoencoderTiny folder.
    file = (fs::path(path) / "diffusion_pytorch_model.safetensors").string();
    DIFFUSE_CHECK(fs::exists(file, ec), ErrorCode::kIo,
                  path + ": a folder without diffusion_pytorch_model.safetensors is not a TAESD (AutoencoderTiny) model");
  } else {
    DIFFUSE_CHECK(fs::exists(path, ec), ErrorCode::kIo, path + ": no such TAESD decoder file");
  }
  Checkpoint ck = load_checkpoint(file);
  TensorMap decoder = taesd_decoder_tensors(ck.tensors, file);
  const TaesdConfig config = TaesdConfig::from_weights(decoder, file);
  try {
    return TaesdDecoder(config, decoder, dtype, device);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kIo) throw;
    throw Error(ErrorCode::kIo, file + ": " + e.what());
  }
}

size_t TaesdDecoder::parameter_count() const {
  size_t n = 0;
  for (const auto& [name, shape] : weights_.specs()) n += static_cast<size_t>(shape_numel(shape));
  return n;
}

// Block: ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x), the sum fused into the last conv.
Tensor TaesdDecoder::block(const Tensor& x, const Block& b) const {
  Tensor h = relu(conv2d(x, b.conv0_w, b.conv0_b, 1, 1));  // [N, C, H, W]
  h = relu(conv2d(h, b.conv1_w, b.conv1_b, 1, 1));         // [N, C, H, W]
  return relu(conv2d(h, b.conv2_w, b.conv2_b, 1, 1, x));   // [N, C, H, W]
}

Tensor TaesdDecoder::decode(const Tensor& z) const {
  DIFFUSE_CHECK_ARG(z.ndim() == 4 && z.dim(1) == config_.latent_channels,
                    "[TaesdDecoder] latents must be [N, " + std::to_string(config_.latent_channels) + ", h, w], got " +
                        shape_str(z.shape()));
  DIFFUSE_CHECK_ARG(z.device() == device_, std::string("[TaesdDecoder] latents are on ") + device_name(z.device()) +
                                               ", the decoder on " + device_name(device_));
  Tensor x = z.dtype() == dtype_ ? z : z.to(dtype_);
  x = scale(diffuse::tanh(scale(x, 1.0f / 3.0f)), 3.0f);  // Clamp: [N, L, h, w] softly into (-3, 3)
  x = to_preferred_layout(x);
  x = relu(conv2d(x, w_.in_w, w_.in_b, 1, 1));  // [N, C, h, w]
  for (size_t s = 0; s < w_.stages.size(); ++s) {
    for (const Block& b : w_.stages[s]) x = block(x, b);  // [N, C, H, W]
    if (s + 1 < w_.stages.size()) {
      x = upsample_nearest2x(x);                   // [N, C, 2H, 2W]
      x = conv2d(x, w_.up_w[s], Tensor(), 1, 1);  // [N, C, 2H, 2W]
    }
  }
  return conv2d(x, w_.out_w, w_.out_b, 1, 1);  // [N, 3, 8h, 8w]
}

// ---- files -----------------------------------------------------------------

const TaesdVariant& taesd_variant(Family family) {
  for (const TaesdVariant& v : kTaesdVariants)
    if (v.family == family) return v;
  throw_error(ErrorCode::kUnsupported, std::string("no TAESD decoder is known for family ") + family_name(family));
}

std::optional<std::string> find_taesd_decoder(const std::vector<std::string>& dirs, Family family) {
  const TaesdVariant& v = taesd_variant(family);
  std::error_code ec;
  for (const std::string& d : dirs) {
    for (const char* ext : {".safetensors", ".pth"}) {
      const fs::path p = fs::path(d) / (std::string(v.decoder_stem) + ext);
      if (fs::is_regular_file(p, ec)) return p.string();
    }
    const fs::path folder = fs::path(d) / v.diffusers_folder;
    if (fs::is_regular_file(folder / "diffusion_pytorch_model.safetensors", ec)) return folder.string();
  }
  return std::nullopt;
}

}  // namespace diffuse
