// LoRA / LyCORIS merging (adapters/lora.h) on the tiny fixture models:
//  - every format against an fp64 reference of its published formula, on a
//    file the test writes with small random factors (LoCon 3x3 and Tucker
//    "mid", LoHa with and without Tucker cores, LoKr full / factored / Tucker,
//    LyCORIS full, DoRA on both axes, PEFT metadata with rank / alpha
//    patterns and rsLoRA, old diffusers names, OpenCLIP's fused in_proj);
//  - key mapping of the fixture files (kohya SD1/SD2, PEFT, SDXL LDM and
//    diffusers names);
//  - bad input (truncated, corrupt, another family, a wrong shape, not a LoRA,
//    a missing file): an error naming the file, and every weight bitwise as before;
//  - several files with separate UNet / text-encoder weights, and switching
//    sets: the base comes back bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "adapters/lora.h"
#include "io/checkpoint.h"
#include "core/ops.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "text/clip_tokenizer.h"
#include "pipeline/edit_runs.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::error_of;

namespace fs = std::filesystem;
using testing::fixtures_dir;

// ---- a tiny model, loaded from the fixtures --------------------------------------

struct TinyModel {
  Family family = Family::kSD1;
  std::unique_ptr<UNet> unet;
  std::vector<std::pair<std::string, std::unique_ptr<ClipTextModel>>> encoders;

  LoraModel view() const {
    LoraModel m;
    m.family = family;
    m.unet = unet.get();
    for (const auto& [name, te] : encoders) m.text_encoders.emplace_back(name, te.get());
    return m;
  }
  const WeightTable& table(const std::string& component) const {
    if (component == "unet") return unet->weights();
    for (const auto& [name, te] : encoders)
      if (name == component) return te->weights();
    throw std::runtime_error("no component " + component);
  }
  std::vector<double> weight(const std::string& component, const std::string& name) const {
    std::vector<double> out;
    for (float v : table(component).get(name).contiguous().to_f32_vector()) out.push_back(v);
    return out;
  }
};

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(testing::read_file(path)); }

TinyModel load_tiny(const std::string& fam) {
  const std::string dir = fixtures_dir() + "/" + fam + "/model";
  TinyModel m;
  m.family = family_from_name(fam);
  m.unet = std::make_unique<UNet>(UNetConfig::from_json(read_json(dir + "/unet/config.json")),
                                  load_safetensors(dir + "/unet/diffusion_pytorch_model.safetensors").tensors);
  for (const char* te : {"text_encoder", "text_encoder_2"}) {
    if (!fs::exists(dir + "/" + te)) continue;
    const bool projection = std::string(te) == "text_encoder_2";
    m.encoders.emplace_back(te, std::make_unique<ClipTextModel>(
                                    ClipTextConfig::from_json(read_json(dir + "/" + te + "/config.json"), projection),
                                    load_safetensors(dir + "/" + te + "/model.safetensors").tensors));
  }
  return m;
}

// Every weight of the model as bytes, to compare bitwise.
using Snapshot = std::map<std::string, std::string>;
Snapshot snapshot(const TinyModel& m) {
  Snapshot s;
  auto add = [&](const std::string& comp, const WeightTable& t) {
    for (const auto& [name, shape] : t.specs()) {
      const Tensor v = t.get(name).contiguous();
      s[comp + "/" + name] = std::string(static_cast<const char*>(v.raw_data()), v.nbytes());
    }
  };
  add("unet", m.unet->weights());
  for (const auto& [name, te] : m.encoders) add(name, te->weights());
  return s;
}
void expect_same(const Snapshot& a, const Snapshot& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int differ = 0;
  for (const auto& [name, bytes] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second != bytes) {
      if (++differ <= 5) ADD_FAILURE() << what << ": '" << name << "' changed";
    }
  }
  EXPECT_EQ(differ, 0) << what << ": weights that are not bitwise the same";
}

// ---- fp64 references ---------------------------------------------------------------

// Deterministic small random factors.
struct Rand {
  std::mt19937 gen{1234};
  Tensor make(const Shape& shape, double scale = 0.1) {
    std::normal_distribution<float> d(0.0f, static_cast<float>(scale));
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (float& x : v) x = d(gen);
    return Tensor::from_vector(v, shape);
  }
};

std::vector<double> values(const Tensor& t) {
  std::vector<double> out;
  for (float v : t.contiguous().to_f32_vector()) out.push_back(v);
  return out;
}

// A [m, k] @ B [k, n] in double.
std::vector<double> mm(const std::vector<double>& a, const std::vector<double>& b, int64_t m, int64_t k, int64_t n) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}

// Tucker rebuild: out[p, r, kk] = sum_ij t[i, j, kk] wa[i, p] wb[j, r]; t [R, R2, K], wa [R, P], wb [R2, Q].
std::vector<double> tucker_ref(const std::vector<double>& t, const std::vector<double>& wa, const std::vector<double>& wb,
                               int64_t R, int64_t R2, int64_t K, int64_t P, int64_t Q) {
  std::vector<double> out(static_cast<size_t>(P * Q * K), 0.0);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t r = 0; r < Q; ++r)
      for (int64_t kk = 0; kk < K; ++kk) {
        double s = 0;
        for (int64_t i = 0; i < R; ++i)
          for (int64_t j = 0; j < R2; ++j) s += t[(i * R2 + j) * K + kk] * wa[i * P + p] * wb[j * Q + r];
        out[(p * Q + r) * K + kk] = s;
      }
  return out;
}

// kron(a [A, B], b [C, D*K]) laid out as a [A*C, B*D, K] weight.
std::vector<double> kron_ref(const std::vector<double>& a, const std::vector<double>& b, int64_t A, int64_t B,
                             int64_t C, int64_t D, int64_t K) {
  std::vector<double> out(static_cast<size_t>(A * C * B * D * K));
  for (int64_t i = 0; i < A; ++i)
    for (int64_t p = 0; p < C; ++p)
      for (int64_t j = 0; j < B; ++j)
        for (int64_t q = 0; q < D; ++q)
          for (int64_t kk = 0; kk < K; ++kk)
            out[((i * C + p) * (B * D) + (j * D + q)) * K + kk] = a[i * B + j] * b[(p * D + q) * K + kk];
  return out;
}

// DoRA: W + w * (m * (W + d) / ||W + d|| - W), the norm per output row or per input column.
std::vector<double> dora_ref(const std::vector<double>& w0, const std::vector<double>& d, const std::vector<double>& m,
                             int64_t out, int64_t in, int64_t K, bool per_out, double weight) {
  std::vector<double> merged(w0.size()), norm(per_out ? out : in, 0.0), res(w0.size());
  for (size_t i = 0; i < w0.size(); ++i) merged[i] = w0[i] + d[i];
  auto axis = [&](int64_t i) { return per_out ? i / (in * K) : (i / K) % in; };
  for (int64_t i = 0; i < static_cast<int64_t>(w0.size()); ++i) norm[axis(i)] += merged[i] * merged[i];
  for (int64_t i = 0; i < static_cast<int64_t>(w0.size()); ++i) {
    const double wd = merged[i] * m[axis(i)] / (std::sqrt(norm[axis(i)]) + 1.1920928955078125e-07);
    res[i] = w0[i] + weight * (wd - w0[i]);
  }
  return res;
}

// W' = W + weight * scale * delta.
std::vector<double> plus(const std::vector<double>& w0, const std::vector<double>& d, double s) {
  std::vector<double> out(w0.size());
  for (size_t i = 0; i < w0.size(); ++i) out[i] = w0[i] + s * d[i];
  return out;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0, scale = 0, change = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  EXPECT_LE(worst, 1e-6 * std::max(1.0, scale)) << what << ": max |merged - fp64 reference| = " << worst;
  (void)change;
}

std::string write_lora(const std::string& name, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  static const std::string dir = testing::temp_dir();
  const std::string path = dir + "/" + name;
  save_safetensors(path, tensors, metadata);
  return path;
}

Tensor scalar(float v) { return Tensor::from_vector({v}, {}); }

const std::string kAttn = "down_blocks.0.attentions.0.transformer_blocks.0.";

// ---- LyCORIS and friends against fp64 -------------------------------------------------

TEST(Lora, LycorisFormatsMatchFp64Reference) {
  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd1");
  Rand rnd;
  TensorMap t;
  std::map<std::string, std::vector<double>> want;  // weight name -> reference
  const double w = 0.7, te_w = 0.4;
  auto base = [&](const std::string& name) { return m.weight("unet", name); };
  auto shape = [&](const std::string& name) { return m.unet->weights().get(name).shape(); };

  {  // LoHa on a linear: (w1_a @ w1_b) * (w2_a @ w2_b), scale alpha / rank
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", name = kAttn + "attn1.to_q.weight";
    const Shape s = shape(name);
    const int64_t O = s[0], I = s[1], r = 4;
    Tensor a1 = rnd.make({O, r}), b1 = rnd.make({r, I}), a2 = rnd.make({O, r}), b2 = rnd.make({r, I});
    t[k + ".hada_w1_a"] = a1, t[k + ".hada_w1_b"] = b1, t[k + ".hada_w2_a"] = a2, t[k + ".hada_w2_b"] = b2;
    t[k + ".alpha"] = scalar(2.0f);
    const auto p1 = mm(values(a1), values(b1), O, r, I), p2 = mm(values(a2), values(b2), O, r, I);
    std::vector<double> d(p1.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = p1[i] * p2[i];
    want[name] = plus(base(name), d, w * 2.0 / r);
  }
  {  // LoHa with Tucker cores on a 3x3 conv
    const std::string k = "lora_unet_down_blocks_0_resnets_0_conv1", name = "down_blocks.0.resnets.0.conv1.weight";
    const Shape s = shape(name);
    const int64_t O = s[0], I = s[1], r = 3;
    Tensor t1 = rnd.make({r, r, 3, 3}), a1 = rnd.make({r, O}), b1 = rnd.make({r, I});
    Tensor t2 = rnd.make({r, r, 3, 3}), a2 = rnd.make({r, O}), b2 = rnd.make({r, I});
    t[k + ".hada_t1"] = t1, t[k + ".hada_w1_a"] = a1, t[k + ".hada_w1_b"] = b1;
    t[k + ".hada_t2"] = t2, t[k + ".hada_w2_a"] = a2, t[k + ".hada_w2_b"] = b2;
    t[k + ".alpha"] = scalar(1.0f);
    const auto f1 = tucker_ref(values(t1), values(a1), values(b1), r, r, 9, O, I);
    const auto f2 = tucker_ref(values(t2), values(a2), values(b2), r, r, 9, O, I);
    std::vector<double> d(f1.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = f1[i] * f2[i];
    want[name] = plus(base(name), d, w * 1.0 / r);
  }
  {  // LoKr on a linear: full w1, factored w2; scale alpha / w2_b's rank
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj",
                      name = kAttn + "ff.net.0.proj.weight";
    const Shape s = shape(name);
    const int64_t A = 2, B = 2, C = s[0] / A, D = s[1] / B, r = 2;
    Tensor w1 = rnd.make({A, B}), a2 = rnd.make({C, r}), b2 = rnd.make({r, D});
    t[k + ".lokr_w1"] = w1, t[k + ".lokr_w2_a"] = a2, t[k + ".lokr_w2_b"] = b2, t[k + ".alpha"] = scalar(1.0f);
    const auto d = kron_ref(values(w1), mm(values(a2), values(b2), C, r, D), A, B, C, D, 1);
    want[name] = plus(base(name), d, w * 1.0 / r);
  }
  {  // LoKr on a 3x3 conv: factored w1, full 4-D w2; scale alpha / w1_b's rank
    const std::string k = "lora_unet_down_blocks_0_resnets_0_conv2", name = "down_blocks.0.resnets.0.conv2.weight";
    const Shape s = shape(name);
    const int64_t A = 4, B = 4, C = s[0] / A, D = s[1] / B, r = 2;
    Tensor a1 = rnd.make({A, r}), b1 = rnd.make({r, B}), w2 = rnd.make({C, D, 3, 3});
    t[k + ".lokr_w1_a"] = a1, t[k + ".lokr_w1_b"] = b1, t[k + ".lokr_w2"] = w2, t[k + ".alpha"] = scalar(3.0f);
    const auto d = kron_ref(mm(values(a1), values(b1), A, r, B), values(w2), A, B, C, D, 9);
    want[name] = plus(base(name), d, w * 3.0 / r);
  }
  {  // LoKr with a Tucker core for w2 and no alpha: scale 1
    const std::string k = "lora_unet_down_blocks_0_resnets_1_conv1", name = "down_blocks.0.resnets.1.conv1.weight";
    const Shape s = shape(name);
    const int64_t A = 2, B = 2, C = s[0] / A, D = s[1] / B, r = 3;
    Tensor w1 = rnd.make({A, B}), t2 = rnd.make({r, r, 3, 3}), a2 = rnd.make({r, C}), b2 = rnd.make({r, D});
    t[k + ".lokr_w1"] = w1, t[k + ".lokr_t2"] = t2, t[k + ".lokr_w2_a"] = a2, t[k + ".lokr_w2_b"] = b2;
    const auto d = kron_ref(values(w1), tucker_ref(values(t2), values(a2), values(b2), r, r, 9, C, D), A, B, C, D, 9);
    want[name] = plus(base(name), d, w);
  }
  {  // LoCon on a 3x3 conv: down is the 3x3 conv, up a 1x1 conv
    const std::string k = "lora_unet_down_blocks_0_resnets_1_conv2", name = "down_blocks.0.resnets.1.conv2.weight";
    const Shape s = shape(name);
    const int64_t O = s[0], I = s[1], r = 4;
    Tensor down = rnd.make({r, I, 3, 3}), up = rnd.make({O, r, 1, 1});
    t[k + ".lora_down.weight"] = down, t[k + ".lora_up.weight"] = up, t[k + ".alpha"] = scalar(8.0f);
    want[name] = plus(base(name), mm(values(up), values(down), O, r, I * 9), w * 8.0 / r);
  }
  {  // LoCon's Tucker form: up [O, r] . mid [r, r, 3, 3] . down [r, I] (1x1)
    const std::string k = "lora_unet_mid_block_resnets_0_conv1", name = "mid_block.resnets.0.conv1.weight";
    const Shape s = shape(name);
    const int64_t O = s[0], I = s[1], r = 4;
    Tensor down = rnd.make({r, I, 1, 1}), mid = rnd.make({r, r, 3, 3}), up = rnd.make({O, r, 1, 1});
    t[k + ".lora_down.weight"] = down, t[k + ".lora_mid.weight"] = mid, t[k + ".lora_up.weight"] = up;
    t[k + ".alpha"] = scalar(2.0f);
    // sum_nm up[o, n] mid[n, m, kk] down[m, i] = tucker(mid, wa = up^T, wb = down)
    std::vector<double> upt(static_cast<size_t>(r * O));
    const auto u = values(up);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t n = 0; n < r; ++n) upt[n * O + o] = u[o * r + n];
    want[name] = plus(base(name), tucker_ref(values(mid), upt, values(down), r, r, 9, O, I), w * 2.0 / r);
  }
  {  // DoRA, LyCORIS' default axis: dora_scale [1, in]
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k", name = kAttn + "attn1.to_k.weight";
    const Shape s = shape(name);
    const int64_t O = s[0], I = s[1], r = 4;
    Tensor down = rnd.make({r, I}), up = rnd.make({O, r}), mag = rnd.make({1, I}, 0.2);
    t[k + ".lora_down.weight"] = down, t[k + ".lora_up.weight"] = up, t[k + ".alpha"] = scalar(4.0f);
    t[k + ".dora_scale"] = mag;
    std::vector<double> d = mm(values(up), values(down), O, r, I);
    for (double& x : d) x *= 4.0 / r;
    want[name] = dora_ref(base(name), d, values(mag), O, I, 1, false, w);
  }
  {  // DoRA on the output axis: dora_scale [out, 1]
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v", name = kAttn + "attn1.to_v.weight";
    const Shape s = shape(name);
    const int64_t O = s[0], I = s[1], r = 2;
    Tensor down = rnd.make({r, I}), up = rnd.make({O, r}), mag = rnd.make({O, 1}, 0.2);
    t[k + ".lora_down.weight"] = down, t[k + ".lora_up.weight"] = up, t[k + ".dora_scale"] = mag;
    want[name] = dora_ref(base(name), mm(values(up), values(down), O, r, I), values(mag), O, I, 1, true, w);
  }
  {  // LyCORIS full: the difference itself
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q", name = kAttn + "attn2.to_q.weight";
    Tensor diff = rnd.make(shape(name), 0.01);
    t[k + ".diff"] = diff;
    want[name] = plus(base(name), values(diff), w);
  }
  std::vector<double> te_want;
  const std::string te_name = "text_model.encoder.layers.0.self_attn.q_proj.weight";
  {  // LoHa on the text encoder, with its own weight
    const std::string k = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    const Shape s = m.table("text_encoder").get(te_name).shape();
    const int64_t O = s[0], I = s[1], r = 2;
    Tensor a1 = rnd.make({O, r}), b1 = rnd.make({r, I}), a2 = rnd.make({O, r}), b2 = rnd.make({r, I});
    t[k + ".hada_w1_a"] = a1, t[k + ".hada_w1_b"] = b1, t[k + ".hada_w2_a"] = a2, t[k + ".hada_w2_b"] = b2;
    const auto p1 = mm(values(a1), values(b1), O, r, I), p2 = mm(values(a2), values(b2), O, r, I);
    std::vector<double> d(p1.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = p1[i] * p2[i];
    te_want = plus(m.weight("text_encoder", te_name), d, te_w);
  }

  const Snapshot before = snapshot(m);
  const std::string path = write_lora("lycoris_mix.safetensors", t);
  LoraMerger merger;
  merger.apply(m.view(), {{path, static_cast<float>(w), static_cast<float>(te_w)}});
  ASSERT_EQ(merger.reports().size(), 1u);
  EXPECT_EQ(merger.reports()[0].modules, 11);
  EXPECT_EQ(merger.reports()[0].matched, 11);
  EXPECT_TRUE(merger.warnings().empty());
  EXPECT_EQ(merger.patched_weights(), 11u);
  for (const auto& [name, ref] : want) expect_close(m.weight("unet", name), ref, name);
  expect_close(m.weight("text_encoder", te_name), te_want, te_name);

  // Every other weight is untouched, and the empty set brings the base back bit for bit.
  const Snapshot merged = snapshot(m);
  int changed = 0;
  for (const auto& [name, bytes] : before) changed += merged.at(name) != bytes;
  EXPECT_EQ(changed, 11);
  merger.apply(m.view(), {});
  EXPECT_EQ(merger.patched_weights(), 0u);
  expect_same(snapshot(m), before, "after the empty set");
}

// PEFT files carry rank and alpha in the header: lora_alpha / r, per-module
// rank_pattern / alpha_pattern, lora_alpha / sqrt(r) with use_rslora. The old
// diffusers names (.lora.down, .lora_linear_layer, attention processors) map too.
TEST(Lora, PeftMetadataAndOldDiffusersNames) {
  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd1");
  Rand rnd;
  struct Case {
    std::string key, weight;
    double scale;
  };
  // lora_alpha 8, r 4; to_q's rank 2 from rank_pattern; to_k's alpha 1 from alpha_pattern.
  const std::vector<Case> peft = {
      {"unet." + kAttn + "attn1.to_q", kAttn + "attn1.to_q.weight", 8.0 / 2},
      {"unet." + kAttn + "attn1.to_k", kAttn + "attn1.to_k.weight", 1.0 / 4},
      {"unet." + kAttn + "attn1.to_v", kAttn + "attn1.to_v.weight", 8.0 / 4},
      {"text_encoder.text_model.encoder.layers.1.mlp.fc1", "text_model.encoder.layers.1.mlp.fc1.weight", 6.0 / std::sqrt(3.0)},
  };
  TensorMap t;
  std::map<std::string, std::vector<double>> want;
  for (const Case& c : peft) {
    const bool te = c.key.rfind("text_encoder.", 0) == 0;
    const Shape s = m.table(te ? "text_encoder" : "unet").get(c.weight).shape();
    const int64_t r = 4;
    Tensor a = rnd.make({r, s[1]}), b = rnd.make({s[0], r});
    t[c.key + ".lora_A.weight"] = a, t[c.key + ".lora_B.weight"] = b;
    want[c.weight] = plus(m.weight(te ? "text_encoder" : "unet", c.weight), mm(values(b), values(a), s[0], r, s[1]), c.scale);
  }
  const nlohmann::json meta = {{"unet.r", 4},
                               {"unet.lora_alpha", 8},
                               {"unet.rank_pattern", {{"attn1.to_q", 2}}},
                               {"unet.alpha_pattern", {{"to_k", 1}}},
                               {"text_encoder.r", 3},
                               {"text_encoder.lora_alpha", 6},
                               {"text_encoder.use_rslora", true}};
  const std::string path = write_lora("peft.safetensors", t, {{"lora_adapter_metadata", meta.dump()}});
  LoraMerger merger;
  merger.apply(m.view(), {{path, 1.0f, 1.0f}});
  for (const Case& c : peft) {
    const bool te = c.key.rfind("text_encoder.", 0) == 0;
    expect_close(m.weight(te ? "text_encoder" : "unet", c.weight), want.at(c.weight), c.key);
  }

  // Old diffusers names: no metadata, scale 1 (or alpha / rank with an alpha tensor).
  TinyModel m2 = load_tiny("sd1");
  TensorMap old;
  const std::string out0 = kAttn + "attn2.to_out.0.weight", fc2 = "text_model.encoder.layers.0.mlp.fc2.weight",
                    proj = "down_blocks.1.attentions.0.proj_in.weight";
  const Shape so = m2.table("unet").get(out0).shape(), sf = m2.table("text_encoder").get(fc2).shape(),
              sp = m2.table("unet").get(proj).shape();
  Tensor d1 = rnd.make({2, so[1]}), u1 = rnd.make({so[0], 2});
  old["unet." + kAttn + "attn2.processor.to_out_lora.down.weight"] = d1;
  old["unet." + kAttn + "attn2.processor.to_out_lora.up.weight"] = u1;
  Tensor d2 = rnd.make({2, sf[1]}), u2 = rnd.make({sf[0], 2});
  old["text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_linear_layer.down.weight"] = d2;
  old["text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_linear_layer.up.weight"] = u2;
  Tensor d3 = rnd.make({2, sp[1]}), u3 = rnd.make({sp[0], 2});  // a linear LoRA on SD1's 1x1-conv proj_in
  old["unet.down_blocks.1.attentions.0.proj_in.lora.down.weight"] = d3;
  old["unet.down_blocks.1.attentions.0.proj_in.lora.up.weight"] = u3;
  old["unet.down_blocks.1.attentions.0.proj_in.alpha"] = scalar(1.0f);
  const auto w_out = plus(m2.weight("unet", out0), mm(values(u1), values(d1), so[0], 2, so[1]), 1.0);
  const auto w_fc2 = plus(m2.weight("text_encoder", fc2), mm(values(u2), values(d2), sf[0], 2, sf[1]), 1.0);
  const auto w_proj = plus(m2.weight("unet", proj), mm(values(u3), values(d3), sp[0], 2, sp[1]), 0.5);
  LoraMerger merger2;
  merger2.apply(m2.view(), {{write_lora("old_diffusers.safetensors", old), 1.0f, 1.0f}});
  EXPECT_TRUE(merger2.warnings().empty()) << merger2.warnings()[0];
  expect_close(m2.weight("unet", out0), w_out, "processor to_out_lora");
  expect_close(m2.weight("text_encoder", fc2), w_fc2, "lora_linear_layer");
  expect_close(m2.weight("unet", proj), w_proj, ".lora.down on a 1x1 conv");
}

// OpenCLIP names (SD2 trained on an LDM checkpoint): the fused attn.in_proj's
// delta is split into q, k and v rows, as the single-file key table splits the weight.
TEST(Lora, OpenClipFusedInProjSplitsIntoQkv) {
  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd2");
  Rand rnd;
  const std::string base = "text_model.encoder.layers.1.self_attn.";
  const int64_t D = m.table("text_encoder").get(base + "q_proj.weight").dim(0), r = 4;
  Tensor down = rnd.make({r, D}), up = rnd.make({3 * D, r});
  TensorMap t;
  t["lora_te_model_transformer_resblocks_1_attn_in_proj.lora_down.weight"] = down;
  t["lora_te_model_transformer_resblocks_1_attn_in_proj.lora_up.weight"] = up;
  t["lora_te_model_transformer_resblocks_1_attn_in_proj.alpha"] = scalar(2.0f);
  t["lora_te_model_transformer_resblocks_1_mlp_c_fc.lora_down.weight"] = rnd.make({r, D});
  t["lora_te_model_transformer_resblocks_1_mlp_c_fc.lora_up.weight"] =
      rnd.make({m.table("text_encoder").get("text_model.encoder.layers.1.mlp.fc1.weight").dim(0), r});
  const auto full = mm(values(up), values(down), 3 * D, r, D);
  std::map<std::string, std::vector<double>> want;
  const char* parts[] = {"q_proj", "k_proj", "v_proj"};
  for (int p = 0; p < 3; ++p) {
    std::vector<double> rows(full.begin() + p * D * D, full.begin() + (p + 1) * D * D);
    want[base + parts[p] + ".weight"] = plus(m.weight("text_encoder", base + parts[p] + ".weight"), rows, 0.5 * 2.0 / r);
  }
  LoraMerger merger;
  merger.apply(m.view(), {{write_lora("openclip.safetensors", t), 0.0f, 0.5f}});
  EXPECT_EQ(merger.reports().at(0).matched, 2);
  EXPECT_EQ(merger.patched_weights(), 4u);
  for (const auto& [name, ref] : want) expect_close(m.weight("text_encoder", name), ref, name);
}

// ---- the fixture files map completely ---------------------------------------------------

std::string v2_file(const std::string& fam, const std::string& rel) { return testing::goldens_dir() + "/" + fam + "/" + rel; }

TEST(Lora, FixtureFilesMatchEveryModule) {
  DIFFUSE_REQUIRE_FIXTURES();
  struct Case {
    std::string fam, file;
    size_t modules;
  };
  const std::vector<Case> cases = {{"sd1", "lora/lora_kohya.safetensors", 208},
                                   {"sd1", "lora/lora_peft.safetensors", 208},
                                   {"sd2", "lora/lora_kohya.safetensors", 214},
                                   {"sdxl", "lora/lora_kohya.safetensors", 220},
                                   {"sdxl", "lora/lora_kohya_diffusers_names.safetensors", 220}};
  std::map<std::string, std::set<std::string>> weights_of;  // file -> the weights it patches
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fam + " " + c.file);
    TinyModel m = load_tiny(c.fam);
    const LoraFile f = read_lora_file(v2_file(c.fam, c.file));
    EXPECT_EQ(f.modules.size(), c.modules);
    EXPECT_TRUE(f.unknown_keys.empty());
    const LoraTargets targets = LoraTargets::of(m.view());
    const LoraPlan plan = plan_lora(f, targets, m.family);  // points into f and targets
    EXPECT_TRUE(plan.unmatched.empty()) << plan.unmatched.size() << " unmatched, e.g. " << plan.unmatched[0];
    EXPECT_EQ(plan.patches.size(), c.modules);
    for (const auto& p : plan.patches) {
      EXPECT_FLOAT_EQ(p.module->scale, 0.5f) << p.module->key;  // alpha 2 / rank 4; PEFT: lora_alpha 2 / r 4
      weights_of[c.fam + c.file].insert(p.target->component + "/" + p.target->pieces[0].weight);
    }
  }
  EXPECT_EQ(weights_of["sdxllora/lora_kohya.safetensors"], weights_of["sdxllora/lora_kohya_diffusers_names.safetensors"])
      << "the LDM-named and the diffusers-named SDXL files patch the same weights";
  EXPECT_EQ(weights_of["sd1lora/lora_kohya.safetensors"], weights_of["sd1lora/lora_peft.safetensors"]);
}

TEST(Lora, AddNetHashAndSshsMetadata) {
  DIFFUSE_REQUIRE_FIXTURES();
  // sha256 of the bytes after the header, by Python's hashlib on the fixture files.
  EXPECT_EQ(read_lora_file(v2_file("sd1", "lora/lora_kohya.safetensors")).hash, "0d8e9819fd33");
  EXPECT_EQ(read_lora_file(v2_file("sd2", "lora/lora_kohya.safetensors")).hash, "095fa5a75860");
  EXPECT_EQ(addnet_hash(v2_file("sdxl", "lora/lora_kohya.safetensors")).substr(0, 12), "077da37ff4f9");
  // A file that states its hash (kohya's sshs_model_hash) is named by it.
  TensorMap t = load_safetensors(v2_file("sd1", "lora/lora_kohya.safetensors")).tensors;
  const std::string path = write_lora("with_sshs.safetensors", t, {{"sshs_model_hash", "ABCDEF0123456789abcdef"}});
  EXPECT_EQ(read_lora_file(path).hash, "abcdef012345");
}

// The text encoders with the fixture LoRA merged give diffusers' prompt
// embeddings (its encode_prompt with the PEFT layers injected): SD1/SD2 the
// last hidden state, SDXL both encoders' penultimate states side by side and
// the second one's pooled projection.
TEST(Lora, EncoderOutputsMatchDiffusers) {
  DIFFUSE_REQUIRE_FIXTURES();
  for (const std::string fam : {"sd1", "sd2", "sdxl"}) {
    const testing::EditFamily& f = testing::edit_family(fam);
    TinyModel m = load_tiny(fam);
    LoraMerger merger;
    std::vector<ClipTokenizer> tokenizers;
    for (size_t e = 0; e < m.encoders.size(); ++e)
      tokenizers.push_back(ClipTokenizer::load(fixtures_dir() + "/" + fam + "/model/tokenizer" + (e ? "_2" : "")));
    int compared = 0;
    for (const auto& run : f.cases["lora"]["runs"]) {
      if (!run.contains("encode") || !run.contains("lora_file")) continue;
      const std::string name = run["name"].get<std::string>();
      SCOPED_TRACE(fam + " " + name);
      const float w = run["adapter_weight"].get<float>();
      merger.apply(m.view(), {{f.dir + "/" + run["lora_file"].get<std::string>(), w, w}});
      std::vector<Tensor> states;
      Tensor pooled;
      for (size_t e = 0; e < m.encoders.size(); ++e) {
        const std::vector<int64_t> ids = tokenizers[e].encode(run["prompt"].get<std::string>());
        const ClipTextModel::Output out =
            m.encoders[e].second->forward(Tensor::from_ids(ids, {1, static_cast<int64_t>(ids.size())}));
        states.push_back(m.encoders.size() == 1 ? out.last_hidden_state : out.hidden_states[out.hidden_states.size() - 2]);
        if (out.text_embeds.defined()) pooled = out.text_embeds;
      }
      const Tensor embeds = states.size() == 1 ? states[0] : concat(states, 2);
      const nlohmann::json& enc = run["encode"];
      const std::string key = enc["prompt_embeds"].get<std::string>();
      ASSERT_TRUE(f.tensors.count(key)) << key;
      const testing::Diff d = testing::compare(embeds.to_f32_vector(), f.tensors.at(key).to(DType::kF32).to_f32_vector());
      EXPECT_LE(d.max_rel, 1e-4) << "prompt_embeds " << d.str();
      std::printf("  %s/lora/%s prompt_embeds: %s\n", fam.c_str(), name.c_str(), d.str().c_str());
      if (enc.contains("pooled_prompt_embeds") && f.tensors.count(enc["pooled_prompt_embeds"].get<std::string>())) {
        ASSERT_TRUE(pooled.defined());
        const testing::Diff p = testing::compare(
            pooled.to_f32_vector(), f.tensors.at(enc["pooled_prompt_embeds"].get<std::string>()).to(DType::kF32).to_f32_vector());
        EXPECT_LE(p.max_rel, 1e-4) << "pooled_prompt_embeds " << p.str();
      }
      ++compared;
    }
    EXPECT_GE(compared, 2) << fam;
  }
}

// A LoRA saved by torch.save (a .pt zip) is read by the restricted unpickler:
// tests/adapters/data/kohya_tiny.pt, written by make_pt_lora.py beside it,
// whose docstring gives the factors' values.
TEST(Lora, TorchPtFileThroughTheUnpickler) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string path = std::string(DIFFUSE_SOURCE_DIR) + "/tests/adapters/data/kohya_tiny.pt";
  TinyModel m = load_tiny("sd1");
  auto factors = [](int64_t out, int64_t in, int64_t rank) {
    std::vector<double> down, up;
    for (int64_t r = 0; r < rank; ++r)
      for (int64_t i = 0; i < in; ++i) down.push_back(static_cast<double>((r * 7 + i) % 11 - 5) / 64);
    for (int64_t o = 0; o < out; ++o)
      for (int64_t r = 0; r < rank; ++r) up.push_back(static_cast<double>((o * 3 + r) % 13 - 6) / 32);
    return mm(up, down, out, rank, in);
  };
  const std::string q = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight";
  const std::string v = "text_model.encoder.layers.1.self_attn.v_proj.weight";
  const auto want_q = plus(m.weight("unet", q), factors(64, 64, 2), 0.5 * 1.0 / 2);
  const auto want_v = plus(m.weight("text_encoder", v), factors(16, 16, 2), 2.0);
  LoraMerger merger;
  merger.apply(m.view(), {{path, 0.5f, 2.0f}});
  ASSERT_EQ(merger.reports().size(), 1u);
  EXPECT_EQ(merger.reports()[0].matched, 2);
  EXPECT_EQ(merger.reports()[0].hash, "06f70bf0a8b7");  // sha256 of the whole file (not a safetensors file)
  expect_close(m.weight("unet", q), want_q, q);
  expect_close(m.weight("text_encoder", v), want_v, v);
}

// ---- bad input -----------------------------------------------------------------------------

TEST(Lora, BadFilesChangeNoWeight) {
  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd1");
  const std::string good = v2_file("sd1", "lora/lora_kohya.safetensors");
  // A set is merged already: a failed change must keep it, bit for bit.
  LoraMerger merger;
  const Snapshot base = snapshot(m);
  merger.apply(m.view(), {{good, 0.8f, 0.8f}});
  const LoraSetKey merged = merger.merged();
  const Snapshot with_good = snapshot(m);
  ASSERT_NE(merger.patched_weights(), 0u);

  const std::string bytes = testing::read_file(good);
  const std::string dir = testing::temp_dir();
  auto file = [&](const std::string& name, const std::string& data) {
    std::ofstream(dir + "/" + name, std::ios::binary) << data;
    return dir + "/" + name;
  };
  struct Bad {
    std::string what, path;
    ErrorCode code;
    std::vector<std::string> says;
  };
  std::vector<Bad> bad = {
      {"truncated", file("truncated.safetensors", bytes.substr(0, bytes.size() / 2)), ErrorCode::kIo, {"truncated.safetensors"}},
      {"corrupt header", file("corrupt.safetensors", std::string("\x18\0\0\0\0\0\0\0", 8) + "{not json, not at all}  "),
       ErrorCode::kIo, {"corrupt.safetensors"}},
      {"empty", file("empty.safetensors", ""), ErrorCode::kIo, {"empty.safetensors"}},
      {"sdxl lora on sd1", v2_file("sdxl", "lora/lora_kohya.safetensors"), ErrorCode::kInvalidArgument,
       {"lora_kohya", "sdxl", "sd1"}},
      {"not a lora", v2_file("sd1", "ti/ti_fixture_concept.pt"), ErrorCode::kInvalidArgument,
       {"ti_fixture_concept.pt", "no LoRA"}},
      {"missing", dir + "/missing.safetensors", ErrorCode::kNotFound, {"missing.safetensors"}},
  };
  {  // one module of the right name with the wrong width, among good ones
    TensorMap t = load_safetensors(good).tensors;
    const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    t[k + ".lora_down.weight"] = Tensor::zeros({4, 40}, DType::kF16);
    bad.push_back({"shape", write_lora("wrong_shape.safetensors", t), ErrorCode::kInvalidArgument,
                   {"wrong_shape", k, "(32,40)", "(32,16)"}});
  }
  {  // factors that disagree with each other
    TensorMap t = load_safetensors(good).tensors;
    t["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"] = Tensor::zeros({32, 3, 1, 1}, DType::kF16);
    bad.push_back({"inconsistent", write_lora("inconsistent.safetensors", t), ErrorCode::kIo,
                   {"inconsistent", "lora_unet_mid_block_attentions_0_proj_in"}});
  }
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    // Through the merger (the first file good, the bad one second: nothing of either applies).
    const Error e = error_of([&] { merger.apply(m.view(), {{good, 1.0f, 1.0f}, {b.path, 1.0f, 1.0f}}); });
    EXPECT_EQ(e.code(), b.code) << e.what();
    std::printf("  %s: [%s] %s\n", b.what.c_str(), error_code_name(e.code()), e.what());
    for (const std::string& s : b.says) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    EXPECT_TRUE(merger.merged() == merged);
    expect_same(snapshot(m), with_good, b.what);
  }
  merger.apply(m.view(), {});
  expect_same(snapshot(m), base, "base after the bad files");
}

// Unmatched modules are a warning (A1111's "networks with errors"), not an error.
TEST(Lora, UnmatchedKeysAreWarnings) {
  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd1");
  TensorMap t = load_safetensors(v2_file("sd1", "lora/lora_kohya.safetensors")).tensors;
  t["lora_unet_no_such_block_0_proj.lora_down.weight"] = Tensor::zeros({4, 8}, DType::kF32);
  t["lora_unet_no_such_block_0_proj.lora_up.weight"] = Tensor::zeros({8, 4}, DType::kF32);
  t["oft_blocks_whatever"] = Tensor::zeros({2}, DType::kF32);
  LoraMerger merger;
  merger.apply(m.view(), {{write_lora("extra_keys.safetensors", t), 1.0f, 1.0f}});
  ASSERT_EQ(merger.reports().size(), 1u);
  EXPECT_EQ(merger.reports()[0].matched, 208);
  EXPECT_EQ(merger.reports()[0].unmatched, std::vector<std::string>{"lora_unet_no_such_block_0_proj"});
  const std::vector<std::string> w = merger.warnings();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("lora_unet_no_such_block_0_proj"), std::string::npos) << w[0];
  EXPECT_NE(w[1].find("oft_blocks_whatever"), std::string::npos) << w[1];
}

// ---- several files, switching sets --------------------------------------------------------

TEST(Lora, SeveralFilesWithSeparateWeightsAndSwitching) {
  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd1");
  const Snapshot base = snapshot(m);
  const std::string kohya = v2_file("sd1", "lora/lora_kohya.safetensors"), peft = v2_file("sd1", "lora/lora_peft.safetensors");
  // A weight both files patch, on the UNet and on the text encoder.
  const std::string uk = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", un = kAttn + "attn1.to_q.weight";
  const std::string tk = "lora_te_text_model_encoder_layers_1_mlp_fc1", tn = "text_model.encoder.layers.1.mlp.fc1.weight";
  const TensorMap kt = load_safetensors(kohya).tensors, pt = load_safetensors(peft).tensors;
  auto delta = [](const Tensor& up, const Tensor& down) {
    return mm(values(up), values(down), up.dim(0), up.dim(1), down.numel() / down.dim(0));
  };
  const auto dku = delta(kt.at(uk + ".lora_up.weight"), kt.at(uk + ".lora_down.weight"));
  const auto dpu = delta(pt.at("unet." + kAttn + "attn1.to_q.lora_B.weight"), pt.at("unet." + kAttn + "attn1.to_q.lora_A.weight"));
  const auto dkt = delta(kt.at(tk + ".lora_up.weight"), kt.at(tk + ".lora_down.weight"));
  const auto dpt = delta(pt.at("text_encoder.encoder.layers.1.mlp.fc1.lora_B.weight"),
                         pt.at("text_encoder.encoder.layers.1.mlp.fc1.lora_A.weight"));
  const auto w_u = m.weight("unet", un), w_t = m.weight("text_encoder", tn);

  LoraMerger merger;
  merger.apply(m.view(), {{kohya, 1.0f, 0.5f}, {peft, 0.3f, -1.0f}});
  EXPECT_EQ(merger.infotext_hashes(), "lora_kohya: 0d8e9819fd33, lora_peft: d0e80698b0e6");
  expect_close(m.weight("unet", un), plus(plus(w_u, dku, 1.0 * 0.5), dpu, 0.3 * 0.5), un);
  expect_close(m.weight("text_encoder", tn), plus(plus(w_t, dkt, 0.5 * 0.5), dpt, -1.0 * 0.5), tn);

  // A unet weight of 0 leaves the UNet alone.
  merger.apply(m.view(), {{kohya, 0.0f, 1.0f}});
  EXPECT_EQ(m.weight("unet", un), w_u);
  expect_close(m.weight("text_encoder", tn), plus(w_t, dkt, 0.5), tn);

  // Switching to another set gives what that set gives on a fresh model, bit for bit.
  merger.apply(m.view(), {{peft, 0.6f, 0.6f}});
  TinyModel fresh = load_tiny("sd1");
  LoraMerger fresh_merger;
  fresh_merger.apply(fresh.view(), {{peft, 0.6f, 0.6f}});
  expect_same(snapshot(m), snapshot(fresh), "peft after kohya vs peft alone");

  merger.apply(m.view(), {});
  EXPECT_EQ(merger.infotext_hashes(), "");
  expect_same(snapshot(m), base, "base after switching sets");
}

TEST(Lora, SetKeyFollowsFilesAndWeights) {
  DIFFUSE_REQUIRE_FIXTURES();
  const std::string path = write_lora("touched.safetensors", load_safetensors(v2_file("sd1", "lora/lora_peft.safetensors")).tensors);
  const LoraSetKey a = lora_set_key({{path, 1.0f, 1.0f}});
  EXPECT_TRUE(a == lora_set_key({{path, 1.0f, 1.0f}}));
  EXPECT_FALSE(a == lora_set_key({{path, 1.0f, 0.5f}}));
  EXPECT_FALSE(a == lora_set_key({}));
  fs::last_write_time(path, fs::last_write_time(path) + std::chrono::seconds(5));
  EXPECT_FALSE(a == lora_set_key({{path, 1.0f, 1.0f}})) << "a rewritten file must be merged again";
  EXPECT_EQ(error_of([&] { lora_set_key({{path, std::nanf(""), 1.0f}}); }).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(error_of([&] { lora_set_key({{path + ".gone", 1.0f, 1.0f}}); }).code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace diffuse

namespace diffuse {
namespace {

// The originals a merge keeps take 16 bits a value when they hold exactly
// (compact_exact): an f32 model read from an fp16 file restores bit for bit
// from half the memory; values no 16-bit type holds stay f32.
TEST(Lora, OriginalsKeptInSixteenBitsWhenExact) {
  const Tensor halves = Tensor::from_vector({0.5f, -1.25f, std::ldexp(1.0f, -16), 65504.0f, 0.0f}, {5});
  EXPECT_EQ(compact_exact(halves).dtype(), DType::kF16);
  const Tensor bf16_only =  // beyond fp16's range, 8 significant bits
      Tensor::from_vector({std::ldexp(1.0f, 100), -std::ldexp(1.5f, -100), 1.5f}, {3});
  EXPECT_EQ(compact_exact(bf16_only).dtype(), DType::kBF16);
  const Tensor wide = Tensor::from_vector({0.1f, 1.0f + 1.0e-7f}, {2});
  EXPECT_EQ(compact_exact(wide).dtype(), DType::kF32);
  for (const Tensor& t : {halves, bf16_only})
    EXPECT_EQ(compact_exact(t).to(DType::kF32).to_f32_vector(), t.to_f32_vector());

  DIFFUSE_REQUIRE_FIXTURES();
  TinyModel m = load_tiny("sd1");
  // The model as the f32 CPU pipeline holds an fp16 checkpoint: every value an fp16 value.
  for (const std::string& component : {std::string("unet"), std::string("text_encoder")}) {
    const WeightTable& t = m.table(component);
    for (const auto& [name, shape] : t.specs()) {
      const Tensor rounded = t.get(name).to(DType::kF16).to(DType::kF32);
      if (component == "unet") m.unet->replace_weight(name, rounded);
      else m.encoders[0].second->replace_weight(name, rounded);
    }
  }
  const Snapshot base = snapshot(m);
  LoraMerger merger;
  merger.apply(m.view(), {{v2_file("sd1", "lora/lora_kohya.safetensors"), 1.0f, 1.0f}});
  // Every patched weight changed (a random LoRA): its f32 bytes, against what is kept.
  ASSERT_GT(merger.patched_weights(), 0u);
  size_t patched_f32 = 0, changed = 0;
  const Snapshot merged = snapshot(m);
  for (const auto& [name, bytes] : merged) {
    if (base.at(name) == bytes) continue;
    patched_f32 += bytes.size();
    ++changed;
  }
  EXPECT_EQ(changed, merger.patched_weights());
  EXPECT_EQ(merger.kept_bytes() * 2, patched_f32);
  merger.apply(m.view(), {});
  expect_same(snapshot(m), base, "base restored from 16-bit originals");
}

}  // namespace
}  // namespace diffuse
