// RRDBNet (ESRGAN / Real-ESRGAN): see rrdbnet.h for the architecture, the two
// key layouts and the tiling. A port of BasicSR's basicsr/archs/rrdbnet_arch.py
// (RRDBNet, RRDB, ResidualDenseBlock) onto the backend ops; the old ESRGAN
// names are those of the original repository's RRDB_net (model.N.*) that
// A1111's models/ESRGAN files use.
#include "models/rrdbnet.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <sstream>

#include "core/ops.h"

namespace diffuse::rrdbnet {

namespace {

constexpr float kSlope = 0.2f;          // leaky ReLU
constexpr float kResidualScale = 0.2f;  // dense block and RRDB residuals

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// "123" -> 123; anything else -> -1.
int parse_index(const std::string& s) {
  if (s.empty() || s.size() > 6) return -1;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  size_t b = 0;
  for (size_t e; (e = s.find('.', b)) != std::string::npos; b = e + 1) parts.push_back(s.substr(b, e - b));
  parts.push_back(s.substr(b));
  return parts;
}

std::string conv(const std::string& base, bool weight) { return base + (weight ? ".weight" : ".bias"); }
std::string body_conv(int n, int k, int j) {
  return "body." + std::to_string(n) + ".rdb" + std::to_string(k) + ".conv" + std::to_string(j);
}
std::string up_conv(int k) { return "conv_up" + std::to_string(k); }

std::string list_some(const std::vector<std::string>& names, size_t limit = 4) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > limit) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

// Why a file that is not an RRDBNet was refused, with a hint where the keys
// say what it is.
[[noreturn]] void not_rrdbnet(const TensorMap& t, const std::string& what) {
  std::vector<std::string> names;
  bool lora = false, sd = false;
  for (const auto& [name, tensor] : t) {
    names.push_back(name);
    lora = lora || name.find("lora_") != std::string::npos || name.find(".lora.") != std::string::npos ||
           name.find("hada_") != std::string::npos;
    sd = sd || starts_with(name, "model.diffusion_model.") || starts_with(name, "first_stage_model.");
  }
  std::string hint = lora ? " (its keys are a LoRA's)" : sd ? " (its keys are a Stable Diffusion checkpoint's)" : "";
  if (names.empty())
    throw_error(ErrorCode::kIo, what + ": not an ESRGAN / Real-ESRGAN (RRDBNet) model: the file holds no tensors");
  throw_error(ErrorCode::kIo, what + ": not an ESRGAN / Real-ESRGAN (RRDBNet) model" + hint +
                                  ": no 'conv_first.weight' (BasicSR layout) or 'model.0.weight' (ESRGAN layout); it holds " +
                                  list_some(names));
}

// The old ESRGAN layout's names -> BasicSR's. Unknown names are collected in
// `unknown` (the caller reports them with the rest).
TensorMap map_old_layout(const TensorMap& t, const std::string& what, int* num_upsample) {
  TensorMap out;
  std::vector<std::string> unknown;
  std::set<int> blocks, tail;  // model.1.sub.N indices; model.I indices (I >= 2)
  std::map<int, const Tensor*> sub_convs;  // model.1.sub.N.{weight,bias}: candidates for conv_body
  std::map<int, std::pair<Tensor, Tensor>> tail_convs;
  for (const auto& [name, tensor] : t) {
    std::vector<std::string> p = split_dots(name);
    const std::string& leaf = p.back();
    bool wb = leaf == "weight" || leaf == "bias";
    // model.1.sub.N.RDBK.convJ.0.{weight,bias}
    if (p.size() == 8 && p[0] == "model" && p[1] == "1" && p[2] == "sub" && p[6] == "0" && wb &&
        starts_with(p[4], "RDB") && starts_with(p[5], "conv")) {
      int n = parse_index(p[3]), k = parse_index(p[4].substr(3)), j = parse_index(p[5].substr(4));
      if (n >= 0 && k >= 1 && k <= 3 && j >= 1 && j <= 5) {
        blocks.insert(n);
        out[conv(body_conv(n, k, j), leaf == "weight")] = tensor;
        continue;
      }
    }
    // model.1.sub.N.{weight,bias}: the trunk's closing conv (N = number of blocks)
    if (p.size() == 5 && p[0] == "model" && p[1] == "1" && p[2] == "sub" && wb && parse_index(p[3]) >= 0) {
      int n = parse_index(p[3]);
      out[conv("model.1.sub." + p[3], leaf == "weight")] = tensor;  // renamed below once nb is known
      sub_convs[n] = &tensor;
      continue;
    }
    // model.I.{weight,bias}
    if (p.size() == 3 && p[0] == "model" && wb && parse_index(p[1]) >= 0 && p[1] != "1") {
      int i = parse_index(p[1]);
      if (i != 0) tail.insert(i);
      (leaf == "weight" ? tail_convs[i].first : tail_convs[i].second) = tensor;
      continue;
    }
    unknown.push_back(name);
  }
  if (!unknown.empty())
    throw_error(ErrorCode::kIo, what + ": ESRGAN-layout model with tensors this RRDBNet does not have: " +
                                    list_some(unknown) +
                                    " (only plain RRDBNet models are supported, not e.g. the 'plus' variant with 1x1 convs)");
  // The blocks must be 0..nb-1 and the closing conv model.1.sub.nb.
  int nb = static_cast<int>(blocks.size());
  if (nb == 0 || *blocks.rbegin() != nb - 1)
    throw_error(ErrorCode::kIo, what + ": ESRGAN-layout model without consecutive RRDB blocks model.1.sub.0..N");
  for (const auto& [n, tensor] : sub_convs) {
    if (n != nb)
      throw_error(ErrorCode::kIo, what + ": ESRGAN-layout model has a conv at model.1.sub." + std::to_string(n) +
                                      ", expected the trunk's last conv at model.1.sub." + std::to_string(nb));
  }
  for (bool w : {true, false}) {
    auto it = out.find(conv("model.1.sub." + std::to_string(nb), w));
    if (it != out.end()) {
      out[conv("conv_body", w)] = it->second;
      out.erase(it);
    }
  }
  // model.0 conv_first; then one conv per upsampling at 3, 6, ..., 3u; HR conv
  // at 3u + 2 and the last conv at 3u + 4 (the indices between are the
  // parameterless upsample / leaky ReLU modules).
  int last = tail.empty() ? -1 : *tail.rbegin();
  int n_up = last >= 4 && (last - 4) % 3 == 0 ? (last - 4) / 3 : -1;
  std::set<int> expected;
  for (int k = 1; k <= n_up; ++k) expected.insert(3 * k);
  expected.insert(3 * n_up + 2);
  expected.insert(3 * n_up + 4);
  if (n_up < 0 || tail != expected) {
    std::string got;
    for (int i : tail) got += (got.empty() ? "model." : ", model.") + std::to_string(i);
    throw_error(ErrorCode::kIo, what + ": ESRGAN-layout model whose convs after the trunk (" +
                                    (got.empty() ? std::string("none") : got) +
                                    ") are not upsampling convs at model.3, 6, ... followed by the HR and last convs");
  }
  for (const auto& [i, wb] : tail_convs) {
    std::string base = i == 0 ? "conv_first"
                       : i == 3 * n_up + 2 ? "conv_hr"
                       : i == 3 * n_up + 4 ? "conv_last"
                                           : up_conv(i / 3);
    if (wb.first.defined()) out[conv(base, true)] = wb.first;
    if (wb.second.defined()) out[conv(base, false)] = wb.second;
  }
  *num_upsample = n_up;
  return out;
}

int64_t dim_of(const TensorMap& t, const std::string& name, int d, const std::string& what) {
  auto it = t.find(name);
  if (it == t.end()) throw_error(ErrorCode::kIo, what + ": RRDBNet model without '" + name + "'");
  if (it->second.ndim() != 4)
    throw_error(ErrorCode::kIo, what + ": '" + name + "' has shape " + shape_str(it->second.shape()) +
                                    ", expected a 4-D conv weight");
  return it->second.dim(d);
}

}  // namespace

Config Config::realesrgan_x4plus() { return Config{}; }
Config Config::realesrgan_x2plus() {
  Config c;
  c.unshuffle = 2;
  return c;
}

void Config::validate() const {
  auto need = [](bool ok, const std::string& m) { DIFFUSE_CHECK_ARG(ok, "[rrdbnet] " + m); };
  need(in_channels >= 1 && in_channels <= 64, "in_channels must be 1-64, got " + std::to_string(in_channels));
  need(out_channels >= 1 && out_channels <= 64, "out_channels must be 1-64, got " + std::to_string(out_channels));
  need(num_feat >= 1 && num_feat <= 1024, "num_feat must be 1-1024, got " + std::to_string(num_feat));
  need(num_block >= 1 && num_block <= 256, "num_block must be 1-256, got " + std::to_string(num_block));
  need(num_grow_ch >= 1 && num_grow_ch <= 1024, "num_grow_ch must be 1-1024, got " + std::to_string(num_grow_ch));
  need(num_upsample >= 0 && num_upsample <= 4, "num_upsample must be 0-4, got " + std::to_string(num_upsample));
  need(unshuffle == 1 || unshuffle == 2 || unshuffle == 4, "unshuffle must be 1, 2 or 4, got " + std::to_string(unshuffle));
  need((1 << num_upsample) % unshuffle == 0,
       "2^num_upsample (" + std::to_string(1 << num_upsample) + ") must be a multiple of unshuffle " +
           std::to_string(unshuffle) + " (the scale would be below 1)");
}

const char* key_layout_name(KeyLayout l) { return l == KeyLayout::kBasicSR ? "basicsr" : "esrgan"; }

WeightSpecs expected_tensors(const Config& c) {
  const int64_t nf = c.num_feat, gc = c.num_grow_ch;
  WeightSpecs s;
  auto add = [&s](const std::string& base, int64_t out, int64_t in) {
    s.emplace_back(base + ".weight", Shape{out, in, 3, 3});
    s.emplace_back(base + ".bias", Shape{out});
  };
  add("conv_first", nf, int64_t{c.in_channels} * c.unshuffle * c.unshuffle);
  for (int n = 0; n < c.num_block; ++n)
    for (int k = 1; k <= 3; ++k) {
      for (int j = 1; j <= 4; ++j) add(body_conv(n, k, j), gc, nf + (j - 1) * gc);
      add(body_conv(n, k, 5), nf, nf + 4 * gc);
    }
  add("conv_body", nf, nf);
  for (int k = 1; k <= c.num_upsample; ++k) add(up_conv(k), nf, nf);
  add("conv_hr", nf, nf);
  add("conv_last", c.out_channels, nf);
  return s;
}

Detected detect(const TensorMap& tensors, const std::string& what) {
  // Wrappers: BasicSR saves {"params_ema": sd} / {"params": sd} (the torch
  // reader unwraps those); a converted file may keep them as prefixes, and a
  // DataParallel one has "module.".
  const TensorMap* src = &tensors;
  TensorMap unwrapped;
  for (const char* prefix : {"params_ema.", "params.", "module."}) {
    for (const auto& [name, t] : *src)
      if (starts_with(name, prefix)) unwrapped[name.substr(std::strlen(prefix))] = t;
    if (!unwrapped.empty()) {
      src = &unwrapped;
      break;
    }
  }
  Detected d;
  if (src->count("conv_first.weight")) {
    d.layout = KeyLayout::kBasicSR;
    d.weights = *src;
    int n_up = 0;
    while (d.weights.count(up_conv(n_up + 1) + ".weight")) ++n_up;
    d.config.num_upsample = n_up;
  } else if (src->count("model.0.weight")) {
    d.layout = KeyLayout::kOldEsrgan;
    d.weights = map_old_layout(*src, what, &d.config.num_upsample);
  } else {
    not_rrdbnet(*src, what);
  }
  int nb = 0;
  while (d.weights.count(body_conv(nb, 1, 1) + ".weight")) ++nb;
  if (nb == 0) throw_error(ErrorCode::kIo, what + ": RRDBNet model without RRDB blocks (no '" + body_conv(0, 1, 1) + ".weight')");
  Config& c = d.config;
  c.num_block = nb;
  c.num_feat = static_cast<int>(dim_of(d.weights, "conv_first.weight", 0, what));
  c.num_grow_ch = static_cast<int>(dim_of(d.weights, body_conv(0, 1, 1) + ".weight", 0, what));
  c.out_channels = static_cast<int>(dim_of(d.weights, "conv_last.weight", 0, what));
  const int64_t in = dim_of(d.weights, "conv_first.weight", 1, what);
  // pixel_unshuffle in front of x2 / x1 models multiplies the input channels by u^2.
  c.unshuffle = 0;
  for (int u : {1, 2, 4})
    if (in == int64_t{c.out_channels} * u * u) c.unshuffle = u;
  if (c.unshuffle == 0)
    throw_error(ErrorCode::kIo, what + ": conv_first takes " + std::to_string(in) + " channels and conv_last gives " +
                                    std::to_string(c.out_channels) +
                                    ": not an RRDBNet whose input is its output's channels, x4 or x16 (pixel_unshuffle)");
  c.in_channels = static_cast<int>(in / (int64_t{c.unshuffle} * c.unshuffle));
  try {
    c.validate();
  } catch (const Error& e) {
    throw_error(ErrorCode::kIo, what + ": unsupported RRDBNet: " + e.what());
  }
  // Shapes, missing and extra names all at once.
  check_weights(d.weights, expected_tensors(c), what, ExtraWeights::kReject);
  return d;
}

Model::Model(const Detected& d, DType compute_dtype, Device on_device)
    : config(d.config), layout(d.layout), dtype(compute_dtype), device(on_device) {
  config.validate();
  TensorMap w = d.weights;
  // 0.2 * conv5(x) + x as one conv with a fused residual: conv5 pre-scaled.
  for (int n = 0; n < config.num_block; ++n)
    for (int k = 1; k <= 3; ++k)
      for (bool is_w : {true, false}) {
        std::string name = conv(body_conv(n, k, 5), is_w);
        auto it = w.find(name);
        if (it != w.end()) it->second = scale(it->second.to(Device::kCPU).to(DType::kF32), kResidualScale);
      }
  weights = WeightTable("RRDBNet", expected_tensors(config), w, dtype, device, ExtraWeights::kReject);
}

namespace {

Tensor conv3x3(const Tensor& x, const WeightTable& w, const std::string& base, const Tensor& residual = {}) {
  return conv2d(x, w.get(base + ".weight"), w.get(base + ".bias"), 1, 1, residual);
}

// torch.nn.functional.pixel_unshuffle: out[n, c*u*u + i*u + j, h, w] = x[n, c, h*u + i, w*u + j].
Tensor pixel_unshuffle(const Tensor& x, int u) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2) / u, w = x.dim(3) / u;
  Tensor v = x.contiguous().reshape({n, c, h, u, w, u}).permute({0, 1, 3, 5, 2, 4});  // [N, C, u, u, h, w]
  return copy(v).reshape({n, c * u * u, h, w});
}

}  // namespace

Tensor Model::forward(const Tensor& x_in) const {
  DIFFUSE_CHECK_ARG(x_in.ndim() == 4 && x_in.dim(1) == config.in_channels,
                    "[rrdbnet] input must be [N, " + std::to_string(config.in_channels) + ", H, W], got " +
                        shape_str(x_in.shape()));
  const int u = config.unshuffle;
  DIFFUSE_CHECK_ARG(x_in.dim(2) % u == 0 && x_in.dim(3) % u == 0,
                    "[rrdbnet] input height and width must be multiples of " + std::to_string(u) + " (pixel_unshuffle), got " +
                        shape_str(x_in.shape()));
  const WeightTable& w = weights;
  Tensor x = x_in.to(device).to(dtype);                                           // [N, C, H, W]
  if (u > 1) x = pixel_unshuffle(x, u);                                           // [N, C*u*u, h, w]
  Tensor feat = conv3x3(to_preferred_layout(x), w, "conv_first");                 // [N, nf, h, w]
  Tensor body = feat;
  for (int n = 0; n < config.num_block; ++n) {
    Tensor rrdb_in = body;
    for (int k = 1; k <= 3; ++k) {
      std::vector<Tensor> feats{body};                                            // dense block input
      for (int j = 1; j <= 4; ++j)                                                // [N, gc, h, w] each
        feats.push_back(leaky_relu(conv3x3(concat(feats, 1), w, body_conv(n, k, j)), kSlope));
      body = conv3x3(concat(feats, 1), w, body_conv(n, k, 5), body);              // 0.2*conv5 + x: [N, nf, h, w]
    }
    body = axpby(body, kResidualScale, rrdb_in, 1.0f);                            // RRDB residual
  }
  feat = conv3x3(body, w, "conv_body", feat);                                     // feat + conv_body(body)
  for (int k = 1; k <= config.num_upsample; ++k)                                  // [N, nf, h*2^k, w*2^k]
    feat = leaky_relu(conv3x3(upsample_nearest2x(feat), w, up_conv(k)), kSlope);
  feat = leaky_relu(conv3x3(feat, w, "conv_hr"), kSlope);
  return conv3x3(feat, w, "conv_last");                                           // [N, out, H*s, W*s]
}

Detected probe_file(const std::string& path) {
  Checkpoint ck = load_checkpoint(path);
  return detect(ck.tensors, path);
}

std::shared_ptr<Model> load(const std::string& path, Device device, DType dtype) {
  return std::make_shared<Model>(probe_file(path), dtype, device);
}

void TileOptions::validate() const {
  DIFFUSE_CHECK_ARG(tile == 0 || (tile >= 16 && tile <= 4096),
                    "tile must be 0 (no tiling) or 16-4096 pixels, got " + std::to_string(tile));
  DIFFUSE_CHECK_ARG(overlap >= 0 && overlap <= 1024, "tile overlap must be 0-1024 pixels, got " + std::to_string(overlap));
}

int receptive_radius(const Config& c) {
  // At the trunk's resolution: conv_first, 15 convs per RRDB, conv_body; each
  // later conv is counted as a whole trunk pixel too (an upper bound).
  int trunk = 2 + 15 * c.num_block + c.num_upsample + 2;
  return trunk * c.unshuffle + (c.unshuffle - 1);
}

namespace {

// Mirror index (numpy / torch 'reflect': the edge pixel is not repeated);
// edge replication where the image is too small to mirror.
int64_t reflect(int64_t i, int64_t n) {
  if (n == 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

Tensor pad_reflect(const Tensor& x, int64_t hp, int64_t wp) {
  const int64_t c = x.dim(1), h = x.dim(2), w = x.dim(3);
  if (hp == h && wp == w) return x;
  Tensor src = x.contiguous();
  Tensor out = Tensor::empty({1, c, hp, wp}, DType::kF32);
  const float* s = src.data<float>();
  float* d = out.data<float>();
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = 0; y < hp; ++y)
      for (int64_t xx = 0; xx < wp; ++xx)
        d[(ch * hp + y) * wp + xx] = s[(ch * h + reflect(y, h)) * w + reflect(xx, w)];
  return out;
}

}  // namespace

Tensor upscale(const Model& m, const Tensor& x_in, const TileOptions& tiles, const std::function<void(int, int)>& progress) {
  tiles.validate();
  DIFFUSE_CHECK_ARG(x_in.ndim() == 4 && x_in.dim(0) == 1 && x_in.dim(1) == m.config.in_channels && x_in.dim(2) > 0 &&
                        x_in.dim(3) > 0,
                    "[rrdbnet] upscale input must be [1, " + std::to_string(m.config.in_channels) + ", H, W], got " +
                        shape_str(x_in.shape()));
  const int u = m.config.unshuffle, s = m.config.scale();
  const int64_t h = x_in.dim(2), w = x_in.dim(3);
  const int64_t hp = (h + u - 1) / u * u, wp = (w + u - 1) / u * u;
  Tensor x = pad_reflect(x_in.to(Device::kCPU).to(DType::kF32), hp, wp);          // [1, C, Hp, Wp]
  // Tile cores and their context, multiples of u so pixel_unshuffle sees whole blocks.
  const int64_t core = tiles.tile == 0 ? std::max(hp, wp) : std::max<int64_t>(u, tiles.tile / u * u);
  const int64_t ctx = (tiles.overlap + u - 1) / u * u;
  const int64_t oc = m.config.out_channels, oh = hp * s, ow = wp * s;
  Tensor out = Tensor::empty({1, oc, oh, ow}, DType::kF32);
  float* dst = out.data<float>();
  const int rows = static_cast<int>((hp + core - 1) / core), cols = static_cast<int>((wp + core - 1) / core);
  int done = 0;
  for (int ty = 0; ty < rows; ++ty) {
    const int64_t y0 = ty * core, y1 = std::min(hp, y0 + core);
    const int64_t cy0 = std::max<int64_t>(0, y0 - ctx), cy1 = std::min(hp, y1 + ctx);
    for (int tx = 0; tx < cols; ++tx) {
      const int64_t x0 = tx * core, x1 = std::min(wp, x0 + core);
      const int64_t cx0 = std::max<int64_t>(0, x0 - ctx), cx1 = std::min(wp, x1 + ctx);
      Tensor tile = x.slice(2, cy0, cy1).slice(3, cx0, cx1).contiguous();       // [1, C, th, tw]
      Tensor y = m.forward(tile).to(Device::kCPU).to(DType::kF32).contiguous();  // [1, oc, th*s, tw*s]
      const int64_t yh = y.dim(2), yw = y.dim(3);
      const float* ys = y.data<float>();
      // The core's rows and columns of the tile's output.
      const int64_t r0 = (y0 - cy0) * s, r1 = (y1 - cy0) * s, c0 = (x0 - cx0) * s, c1 = (x1 - cx0) * s;
      for (int64_t ch = 0; ch < oc; ++ch)
        for (int64_t r = r0; r < r1; ++r)
          std::memcpy(dst + (ch * oh + y0 * s + (r - r0)) * ow + x0 * s, ys + (ch * yh + r) * yw + c0,
                      static_cast<size_t>(c1 - c0) * sizeof(float));
      ++done;
      if (progress) progress(done, rows * cols);
    }
  }
  if (hp == h && wp == w) return out;
  return out.slice(2, 0, h * s).slice(3, 0, w * s).contiguous();
}

}  // namespace diffuse::rrdbnet
