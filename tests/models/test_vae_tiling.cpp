// Tiled VAE decode/encode (src/models/vae_tiling.cpp, docs/vae-tiling.md)
// against the untiled decode()/encode() of the tiny sd1 fixture VAE.
//
// Bounds (issue 21): the tiled image within a mean of 0.5/255 and a max of
// 4/255 of the untiled one, measured on the 8-bit scale of the image the
// pipeline makes (x / 2 + 0.5, before clamping, so clamping cannot hide a
// difference), on (a) the v2 fixtures' tiled-VAE case and (b) a 512x512 decode
// of a smooth latent, where in addition the mean |difference| of neighbouring
// pixel rows (and columns) across a tile border may be at most 1.5x the one
// inside the tiles.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <nlohmann/json.hpp>

#include "core/host_allocator.h"
#include "core/ops.h"
#include "io/checkpoint.h"
#include "io/png.h"
#include "models/vae.h"
#include "io/json_util.h"
#include "test_util.h"

namespace diffuse {
namespace {

using testing::fixtures_dir;

// The tiny sd1 fixture VAE (block_out_channels 32, 32, 32, 64: the real
// architecture, 4 levels, 8x downsampling).
const Vae& tiny_vae() {
  static const Vae* vae = [] {
    const std::string dir = fixtures_dir() + "/sd1/model/vae";
    const VaeConfig cfg = VaeConfig::from_json(read_python_json_file(dir + "/config.json"));
    const Checkpoint weights = load_safetensors(dir + "/diffusion_pytorch_model.safetensors");
    return new Vae(cfg, weights.tensors);
  }();
  return *vae;
}

// Standard normal values from a seeded mt19937_64 (Box-Muller): a stand-in for
// torch.randn when the fixture's tensor is not in the repository's test data.
Tensor seeded_normal(const Shape& shape, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); i += 2) {
    const double u1 = 1.0 - uniform(rng), u2 = uniform(rng);
    const double r = std::sqrt(-2.0 * std::log(u1));
    v[i] = static_cast<float>(r * std::cos(2.0 * M_PI * u2));
    if (i + 1 < v.size()) v[i + 1] = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
  }
  return Tensor::from_vector(v, shape);
}

// A smooth latent [1, 4, 64, 64] (a 512x512 image): a few low-frequency
// sinusoids per channel, amplitude about that of a real latent.
Tensor smooth_latent() {
  const int64_t n = 64;
  std::vector<float> v(static_cast<size_t>(4 * n * n));
  for (int64_t c = 0; c < 4; ++c) {
    for (int64_t y = 0; y < n; ++y) {
      for (int64_t x = 0; x < n; ++x) {
        const double fy = 2.0 * M_PI * y / n, fx = 2.0 * M_PI * x / n;
        v[(c * n + y) * n + x] = static_cast<float>(0.9 * std::sin(fx * (1 + c % 2) + 0.7 * c) +
                                                    0.7 * std::cos(fy * (1 + c / 2) - 0.3 * c) +
                                                    0.4 * std::sin(fx + fy + c));
      }
    }
  }
  return Tensor::from_vector(v, {1, 4, n, n});
}

// The v2 fixtures' init image (cases.json tiled_vae.encode.image) as the
// pipeline feeds it to the encoder: [1, 3, H, W] in [-1, 1].
Tensor init_image() {
  const std::string bytes = testing::read_file(fixtures_dir() + "/v2/inputs/init_256.png");
  const PngImage png = read_png(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  const int64_t hw = static_cast<int64_t>(png.width) * png.height;
  std::vector<float> px(static_cast<size_t>(3 * hw));
  for (int64_t i = 0; i < hw; ++i) {
    for (int c = 0; c < 3; ++c) px[c * hw + i] = png.rgb[i * 3 + c] / 255.0f * 2.0f - 1.0f;
  }
  return Tensor::from_vector(px, {1, 3, png.height, png.width});
}

// The image the pipeline makes, in 8-bit levels, before rounding and clamping.
std::vector<double> levels(const Tensor& decoded) {
  const std::vector<float> v = decoded.to(DType::kF32).contiguous().to_f32_vector();
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = (v[i] / 2.0 + 0.5) * 255.0;
  return out;
}

struct ImageDiff {
  double mean = 0, max = 0;  // 8-bit levels
};
ImageDiff image_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const std::vector<double> x = levels(a), y = levels(b);
  ImageDiff d;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = std::fabs(x[i] - y[i]);
    d.mean += e;
    d.max = std::max(d.max, e);
  }
  d.mean /= static_cast<double>(x.size());
  return d;
}

// Where the tiled decode puts its borders: the cores of VaeTileOptions (no overlap) split
// each side into ceil(n / tile) cores of near-equal length; the borders in pixels.
std::vector<int64_t> borders(int64_t latent, int64_t tile, int64_t scale) {
  std::vector<int64_t> out;
  const int64_t count = (latent + tile - 1) / tile;
  int64_t at = 0;
  for (int64_t i = 0; i + 1 < count; ++i) {
    at += latent / count + (i < latent % count ? 1 : 0);
    out.push_back(at * scale);
  }
  return out;
}

// Mean |difference| between neighbouring rows (and columns) of the image that
// straddle a tile border, and of those that lie inside a tile.
struct SeamStats {
  double across = 0, inside = 0;
};
SeamStats seam_stats(const Tensor& decoded, const std::vector<int64_t>& cuts) {
  const std::vector<double> v = levels(decoded);
  const int64_t c = decoded.dim(1), h = decoded.dim(2), w = decoded.dim(3);
  auto is_cut = [&](int64_t i) { return std::find(cuts.begin(), cuts.end(), i) != cuts.end(); };
  double across = 0, inside = 0;
  int64_t n_across = 0, n_inside = 0;
  for (int64_t ch = 0; ch < c; ++ch) {
    const double* p = v.data() + ch * h * w;
    for (int64_t y = 1; y < h; ++y) {  // rows y-1 | y
      for (int64_t x = 0; x < w; ++x) {
        const double d = std::fabs(p[y * w + x] - p[(y - 1) * w + x]);
        if (is_cut(y)) across += d, ++n_across;
        else inside += d, ++n_inside;
      }
    }
    for (int64_t y = 0; y < h; ++y) {  // columns x-1 | x
      for (int64_t x = 1; x < w; ++x) {
        const double d = std::fabs(p[y * w + x] - p[y * w + x - 1]);
        if (is_cut(x)) across += d, ++n_across;
        else inside += d, ++n_inside;
      }
    }
  }
  return {across / std::max<int64_t>(n_across, 1), inside / std::max<int64_t>(n_inside, 1)};
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// (a) The v2 fixtures' tiled-VAE case: a 32x32 latent (256x256 image) in
// diffusers' tiles of 64 pixels (8 latent pixels).
TEST(VaeTiling, FixtureCaseWithinBoundsOfUntiled) {
  DIFFUSE_REQUIRE_FIXTURES();
  const nlohmann::json cases = read_python_json_file(fixtures_dir() + "/v2/sd1/cases.json");
  const nlohmann::json& tv = cases.at("tiled_vae");
  const int tile = tv.at("settings").at("tile_latent_min_size").get<int>();
  ASSERT_EQ(tile, 8);
  // The case's latent is torch.randn(1, 4, 32, 32) seeded 5800; the repository's
  // test data does not carry it, so use it when present, else a seeded stand-in.
  const Checkpoint golden = load_safetensors(fixtures_dir() + "/v2/sd1/tensors.safetensors");
  const std::string name = tv.at("decode").at("latent").get<std::string>();
  const auto it = golden.tensors.find(name);
  const bool have = it != golden.tensors.end();
  const Tensor z = have ? it->second : seeded_normal({1, 4, 32, 32}, 5800);
  ASSERT_EQ(z.shape(), (Shape{1, 4, 32, 32}));

  const Vae& vae = tiny_vae();
  const Tensor untiled = vae.decode(z);
  VaeTileOptions opt;
  opt.tile = tile;
  const ImageDiff d = image_diff(vae.decode_tiled(z, opt), untiled);
  std::printf("fixture latent (%s): tiled vs untiled mean %.4f/255, max %.4f/255\n",
              have ? "the fixture's" : "seeded stand-in", d.mean, d.max);
  EXPECT_LE(d.mean, 0.5);
  EXPECT_LE(d.max, 4.0);
}

// (b) A smooth 512x512 decode, in 128-pixel tiles (16 tiles): the bounds, and
// no seam: neighbouring rows/columns across a border differ no more than 1.5x
// those inside a tile.
TEST(VaeTiling, SmoothLatentWithinBoundsAndSeamless) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Vae& vae = tiny_vae();
  const Tensor z = smooth_latent();
  const Tensor untiled = vae.decode(z);
  for (int tile : {16, 24}) {
    SCOPED_TRACE("tile " + std::to_string(tile));
    VaeTileOptions opt;
    opt.tile = tile;
    const Tensor tiled = vae.decode_tiled(z, opt);
    const ImageDiff d = image_diff(tiled, untiled);
    const SeamStats s = seam_stats(tiled, borders(64, tile, 8));
    const SeamStats s_ref = seam_stats(untiled, borders(64, tile, 8));
    std::printf("smooth 512, tile %d: mean %.4f/255, max %.4f/255; rows across borders %.4f, inside %.4f "
                "(ratio %.3f; untiled at the same places %.3f)\n",
                tile, d.mean, d.max, s.across, s.inside, s.across / s.inside, s_ref.across / s_ref.inside);
    EXPECT_LE(d.mean, 0.5);
    EXPECT_LE(d.max, 4.0);
    EXPECT_GT(s.inside, 0.0);
    EXPECT_LE(s.across, 1.5 * s.inside);
  }
}

// The tiles reproduce the untiled decode and encode up to f32 rounding: every
// GroupNorm gets the whole image's statistics, and each stage's halo covers its
// receptive field. Without a halo the zero padding at the tile edges shows.
TEST(VaeTiling, TilesReproduceUntiledUpToRounding) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Vae& vae = tiny_vae();
  const Tensor z = seeded_normal({1, 4, 32, 24}, 7);  // not square: rows and columns split differently
  const std::vector<float> untiled = vae.decode(z).to_f32_vector();
  const double scale = max_abs(untiled);
  auto worst = [&](const std::vector<float>& v) { return testing::compare(v, untiled).max_abs / scale; };
  VaeTileOptions opt;
  opt.tile = 8;  // 4 x 3 tiles
  const double tiled = worst(vae.decode_tiled(z, opt).to_f32_vector());
  opt.tile = 13;  // uneven cores (11 + 11 + 10, 12 + 12)
  const double uneven = worst(vae.decode_tiled(z, opt).to_f32_vector());
  opt.halo = 0;
  const double no_halo = worst(vae.decode_tiled(z, opt).to_f32_vector());
  std::printf("decode 256x192: max |tiled - untiled| / max |untiled| %.2e (tile 8), %.2e (tile 13), %.2e (no halo)\n",
              tiled, uneven, no_halo);
  EXPECT_LE(tiled, 1e-5);
  EXPECT_LE(uneven, 1e-5);
  EXPECT_GT(no_halo, 1e-3);
  // The receptive fields of the full-size SD VAE's stages (latent pixels).
  EXPECT_EQ(Vae::decoder_stage_halo(VaeConfig::sd(), 1), 4);
  EXPECT_EQ(Vae::decoder_stage_halo(VaeConfig::sd(), 2), 2);
  EXPECT_EQ(Vae::decoder_stage_halo(VaeConfig::sd(), 3), 1);
  EXPECT_EQ(Vae::encoder_stage_halo(VaeConfig::sd(), 0), 1);
  EXPECT_EQ(Vae::encoder_stage_halo(VaeConfig::sd(), 3), 4);

  const Tensor image = init_image();
  ASSERT_EQ(image.shape(), (Shape{1, 3, 256, 256}));
  const std::vector<float> ref = vae.encode(image).mean.to_f32_vector();
  VaeTileOptions eopt;
  eopt.tile = 8;
  const double enc = testing::compare(vae.encode_tiled(image, eopt).mean.to_f32_vector(), ref).max_abs / max_abs(ref);
  eopt.halo = 0;
  const double enc_no_halo =
      testing::compare(vae.encode_tiled(image, eopt).mean.to_f32_vector(), ref).max_abs / max_abs(ref);
  std::printf("encode 256x256, tile 8: posterior mean max rel %.2e (no halo %.2e)\n", enc, enc_no_halo);
  EXPECT_LE(enc, 1e-5);
  EXPECT_GT(enc_no_halo, 1e-3);
}

// Tiled encode vs untiled, the fixture's 256x256 init image in diffusers'
// 64-pixel tiles. The tiled encoder computes what the untiled one does (exact
// GroupNorm statistics, full receptive fields), so the difference is f32
// rounding in other summation orders: ~1e-6 of the values' scale after the
// encoder's ~30 layers. Bound: the posterior mean and std within 1e-4 of their
// largest magnitude (headroom for oneDNN choosing other kernels for other
// shapes; diffusers' tiled encode of this case is off by 1.49 where the mean
// reaches 1.81: cases.json), and decoding the two posterior means gives images within the decode
// bounds, since that is what img2img / inpainting latents turn into.
TEST(VaeTiling, EncodeWithinBoundsOfUntiled) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Vae& vae = tiny_vae();
  const Tensor image = init_image();
  const Vae::Encoded ref = vae.encode(image);
  VaeTileOptions opt;
  opt.tile = 8;
  const Vae::Encoded tiled = vae.encode_tiled(image, opt);
  const std::vector<float> m0 = ref.mean.to_f32_vector(), m1 = tiled.mean.to_f32_vector();
  const std::vector<float> s0 = ref.std.to_f32_vector(), s1 = tiled.std.to_f32_vector();
  const double dm = testing::compare(m1, m0).max_abs, ds = testing::compare(s1, s0).max_abs;
  const ImageDiff d = image_diff(vae.decode(tiled.mean), vae.decode(ref.mean));
  std::printf("encode 256, tile 64 px: mean max |d| %.2e of max |mean| %.3f; std max |d| %.2e of max std %.3f; "
              "decoded means differ by mean %.4f/255, max %.4f/255\n",
              dm, max_abs(m0), ds, max_abs(s0), d.mean, d.max);
  EXPECT_LE(dm, 1e-4 * max_abs(m0));
  EXPECT_LE(ds, 1e-4 * max_abs(s0));
  EXPECT_LE(d.mean, 0.5);
  EXPECT_LE(d.max, 4.0);
}

// The tiles' activations are all that exists at full resolution: the host
// allocator's peak during a tiled decode is a fraction of the untiled one's.
TEST(VaeTiling, PeakMemoryFollowsTheTile) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Vae& vae = tiny_vae();
  const Tensor z = smooth_latent();
  auto peak_of = [&](const std::function<void()>& fn) {
    host_empty_cache();
    const size_t base = host_memory_stats().in_use_bytes;
    host_reset_peak_memory_stats();
    fn();
    return host_memory_stats().peak_in_use_bytes - base;
  };
  const size_t untiled = peak_of([&] { (void)vae.decode(z); });
  VaeTileOptions opt;
  opt.tile = 16;
  const size_t tiled = peak_of([&] { (void)vae.decode_tiled(z, opt); });
  std::printf("peak in use: untiled %.1f MiB, tiled (tile 16) %.1f MiB\n", untiled / 1048576.0, tiled / 1048576.0);
  EXPECT_LT(tiled * 2, untiled);

  // The estimates the pipeline chooses with: SD1.5 at 2048x2048 in f32 (the
  // untiled decode: ~10 GiB, pipeline.cpp vae_decode_peak_bytes).
  const VaeConfig sd = VaeConfig::sd();
  const uint64_t est = Vae::tiled_decode_peak_bytes(sd, DType::kF32, 2048, 2048, VaeTileOptions{});
  std::printf("SD1.5 2048x2048 f32, tile 64: estimated peak %.2f GiB\n", est / 1073741824.0);
  EXPECT_LT(est, uint64_t{4} << 30);
  EXPECT_GT(est, uint64_t{2} << 30);
  const uint64_t budget = uint64_t{3} << 30;
  const int tile = Vae::tile_for_budget(sd, DType::kF32, 2048, 2048, budget);
  EXPECT_GE(tile, 16);
  VaeTileOptions chosen;
  chosen.tile = tile;
  EXPECT_LE(Vae::tiled_decode_peak_bytes(sd, DType::kF32, 2048, 2048, chosen), budget);
  chosen.tile = tile + 8;
  EXPECT_GT(Vae::tiled_decode_peak_bytes(sd, DType::kF32, 2048, 2048, chosen), budget);
  EXPECT_EQ(Vae::tile_for_budget(sd, DType::kF32, 2048, 2048, uint64_t{1} << 30), 0);
}

TEST(VaeTiling, BatchesSmallImagesAndBadOptions) {
  DIFFUSE_REQUIRE_FIXTURES();
  const Vae& vae = tiny_vae();
  // One tile covering the image is the untiled decode.
  const Tensor small = seeded_normal({1, 4, 8, 8}, 3);
  EXPECT_EQ(testing::compare(vae.decode_tiled(small).to_f32_vector(), vae.decode(small).to_f32_vector()).max_abs,
            0.0);
  // A batch decodes image by image.
  const Tensor a = seeded_normal({1, 4, 16, 16}, 4), b = seeded_normal({1, 4, 16, 16}, 5);
  VaeTileOptions opt;
  opt.tile = 8;
  const Tensor both = vae.decode_tiled(concat({a, b}, 0), opt);
  ASSERT_EQ(both.shape(), (Shape{2, 3, 128, 128}));
  EXPECT_EQ(testing::compare(both.slice(0, 1, 2).contiguous().to_f32_vector(),
                             vae.decode_tiled(b, opt).to_f32_vector())
                .max_abs,
            0.0);
  for (auto bad : {VaeTileOptions{0}, VaeTileOptions{8, -2}}) EXPECT_THROW(vae.decode_tiled(a, bad), Error);
  EXPECT_THROW(vae.encode_tiled(Tensor::zeros({1, 3, 60, 64}, DType::kF32), opt), Error);
  EXPECT_THROW(vae.decode_tiled(Tensor::zeros({1, 3, 8, 8}, DType::kF32), opt), Error);
}

}  // namespace
}  // namespace diffuse
