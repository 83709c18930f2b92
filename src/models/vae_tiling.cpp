// Tiled VAE decode and encode with exact whole-image GroupNorm statistics.
//
// Why this method (docs/vae-tiling.md has the measurements):
// - diffusers' AutoencoderKL.tiled_decode runs the whole decoder per tile, so
//   every GroupNorm normalises with that tile's own statistics and the mid
//   block's attention sees only the tile; colours shift from tile to tile and
//   the overlap blend only smears the seams. On the v2 fixtures' tiled case it
//   is off by up to 3.67 (raw output units: hundreds of 8-bit levels).
// - Estimating the statistics in one pass over the tiles (each tile with its
//   own statistics, summing the inputs of every GroupNorm) and re-running the
//   tiles with those sums is not enough either: every GroupNorm's input depends
//   on the statistics of the ones before it, so the estimate is off by ~10% from
//   the second GroupNorm on, and on the fixture VAE that is 41/255 on average
//   (more passes do not converge). Tiled VAE of multidiffusion-upscaler keeps
//   the statistics exact by pausing every tile at each GroupNorm, which holds
//   every tile's activations, i.e. the whole image's, at once.
// Here the statistics are exact and only one tile's full-resolution activations
// exist at a time: the work at latent resolution runs on the whole image, and
// each resolution level after it (a stage) runs in tiles from the previous
// level's output, held for the whole image at its lower resolution (below full
// resolution the decoder also keeps the output of every resnet). Before a
// stage applies its k-th GroupNorm, a sweep over the tiles runs the stage up to
// that GroupNorm (the earlier ones now exact) and adds its input's per-channel
// sums of x and x^2 over each tile's core (f64); then the sweep stops there.
// With the stage's receptive field as halo, a tile's core sees no zero padding
// of the tile edge, so every core is what the untiled run computes: the result
// equals decode()/encode() up to rounding, and there is no seam to blend.
// The price is time: a stage with k GroupNorms costs k partial sweeps and the
// final one (the SD decoder: about 3x the untiled decode's CPU time).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "core/ops.h"
#include "core/thread_pool.h"
#include "models/vae.h"

namespace diffuse {

namespace {

constexpr float kNormEps = 1e-6f;  // as vae.cpp: diffusers' Encoder/Decoder GroupNorms

// Vae::NormFn: a GroupNorm (+ SiLU) of the network.
using NormFn = std::function<Tensor(const Tensor& x, const Tensor& gamma, const Tensor& beta, bool silu)>;

// One axis of a tile grid, in latent pixels: a core [core0, core1) and the
// region [reg0, reg1) that is run to compute it (the core plus the halo,
// clipped to the image).
struct Span {
  int64_t core0, core1, reg0, reg1;
};

// Cores of at most `tile` pixels, of near-equal length, covering [0, n).
std::vector<Span> split(int64_t n, int64_t tile, int64_t halo) {
  const int64_t count = (n + tile - 1) / tile;
  std::vector<Span> spans;
  int64_t start = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t end = start + n / count + (i < n % count ? 1 : 0);
    spans.push_back({start, end, std::max<int64_t>(0, start - halo), std::min(n, end + halo)});
    start = end;
  }
  return spans;
}

// Adds x's per-channel sums of x and x^2 (x [1, C, h, w], any strides) to sum/sq, in f64.
void add_channel_moments(const Tensor& x, std::vector<double>& sum, std::vector<double>& sq) {
  const int64_t c = x.dim(1), h = x.dim(2), w = x.dim(3);
  if (x.device() == Device::kCPU && x.dtype() == DType::kF32) {
    // The host reads the view in place (no copy of the core).
    const float* base = x.data<float>();
    const int64_t sc = x.strides()[1], sh = x.strides()[2], sw = x.strides()[3];
    parallel_for(c, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t ci = c0; ci < c1; ++ci) {
        double s = 0, q = 0;
        for (int64_t y = 0; y < h; ++y) {
          const float* row = base + ci * sc + y * sh;
          double rs = 0, rq = 0;  // per row first: shorter sums, less rounding
          for (int64_t xi = 0; xi < w; ++xi) {
            const double v = row[xi * sw];
            rs += v;
            rq += v * v;
          }
          s += rs;
          q += rq;
        }
        sum[ci] += s;
        sq[ci] += q;
      }
    });
    return;
  }
  // Elsewhere the device reduces, in f32: x [C, K] and x*x [C, K] times ones [K, 1].
  const int64_t k = h * w;
  const Tensor rows = x.to(DType::kF32).contiguous().reshape({c, k});
  const Tensor ones = Tensor::full({k, 1}, 1.0f, DType::kF32, x.device());
  const std::vector<float> s = matmul(rows, ones).to_f32_vector();
  const std::vector<float> q = matmul(mul(rows, rows), ones).to_f32_vector();
  for (int64_t ci = 0; ci < c; ++ci) {
    sum[ci] += s[ci];
    sq[ci] += q[ci];
  }
}

// Per-channel sums of one GroupNorm's input over the whole image.
struct NormSums {
  std::vector<double> sum, sq;
  double count = 0;  // positions per channel
};

// Thrown by a sweep's GroupNorm once it has recorded its input: the rest of the
// stage is not needed for this tile in this sweep.
struct SweepDone {};

// The GroupNorms of a stage for one tile: number k < exact.size() normalises
// with the whole-image statistics exact[k] (per-channel scale and shift, then
// SiLU: what group_norm computes with those statistics); number `record` adds
// its input over the tile's core to *sums and ends the run.
class StageNorm {
 public:
  StageNorm(int groups, const std::vector<NormSums>& exact, int record, NormSums* sums, const Span& ys,
            const Span& xs, std::vector<std::pair<Tensor, Tensor>>* affine_cache)
      : groups_(groups), exact_(exact), record_(record), sums_(sums), ys_(ys), xs_(xs), cache_(affine_cache) {}

  Tensor operator()(const Tensor& x, const Tensor& gamma, const Tensor& beta, bool silu_after) {
    const int k = index_++;
    if (k == record_) {
      // The core in x's pixels: x covers the region at x.dim(2) / region pixels per latent pixel.
      const int64_t rh = ys_.reg1 - ys_.reg0, rw = xs_.reg1 - xs_.reg0;
      const int64_t y0 = (ys_.core0 - ys_.reg0) * x.dim(2) / rh, y1 = (ys_.core1 - ys_.reg0) * x.dim(2) / rh;
      const int64_t x0 = (xs_.core0 - xs_.reg0) * x.dim(3) / rw, x1 = (xs_.core1 - xs_.reg0) * x.dim(3) / rw;
      if (sums_->sum.empty()) sums_->sum.assign(x.dim(1), 0.0), sums_->sq.assign(x.dim(1), 0.0);
      add_channel_moments(x.slice(2, y0, y1).slice(3, x0, x1), sums_->sum, sums_->sq);
      sums_->count += static_cast<double>((y1 - y0) * (x1 - x0));
      throw SweepDone{};
    }
    DIFFUSE_CHECK(k < static_cast<int>(exact_.size()), ErrorCode::kRuntime,
                  "[Vae tiling] GroupNorm " + std::to_string(k) + " of a stage has no statistics");
    const auto& [scale, shift] = affine(k, gamma, beta, x);
    const Tensor y = add(mul(x, scale), shift);  // [N, C, H, W]
    return silu_after ? silu(y) : y;
  }

 private:
  // gamma / sqrt(var + eps) and beta - mean * that, per channel ([1, C, 1, 1]),
  // from the group statistics of exact[k]; made once per stage.
  const std::pair<Tensor, Tensor>& affine(int k, const Tensor& gamma, const Tensor& beta, const Tensor& like) {
    if (static_cast<int>(cache_->size()) <= k) cache_->resize(k + 1);
    std::pair<Tensor, Tensor>& slot = (*cache_)[k];
    if (slot.first.defined()) return slot;
    const NormSums& e = exact_[k];
    const int64_t c = like.dim(1), per = c / groups_;
    DIFFUSE_CHECK(static_cast<int64_t>(e.sum.size()) == c, ErrorCode::kRuntime,
                  "[Vae tiling] GroupNorm " + std::to_string(k) + ": statistics of " + std::to_string(e.sum.size()) +
                      " channels for an input of " + std::to_string(c));
    const std::vector<float> g = gamma.to(Device::kCPU).to(DType::kF32).contiguous().to_f32_vector();
    const std::vector<float> b = beta.to(Device::kCPU).to(DType::kF32).contiguous().to_f32_vector();
    std::vector<float> scale(c), shift(c);
    for (int64_t gi = 0; gi < groups_; ++gi) {  // as the CPU group_norm: f64 statistics, f32 scale and shift
      double s = 0, q = 0;
      for (int64_t ci = gi * per; ci < (gi + 1) * per; ++ci) s += e.sum[ci], q += e.sq[ci];
      const double n = e.count * static_cast<double>(per);
      const double mean = s / n;
      const double var = std::max(0.0, q / n - mean * mean);
      const double rstd = 1.0 / std::sqrt(var + kNormEps);
      for (int64_t ci = gi * per; ci < (gi + 1) * per; ++ci) {
        scale[ci] = static_cast<float>(rstd * g[ci]);
        shift[ci] = static_cast<float>(b[ci] - mean * rstd * g[ci]);
      }
    }
    slot.first = Tensor::from_vector(scale, {1, c, 1, 1}).to(like.device());  // f32: backends convert as they need
    slot.second = Tensor::from_vector(shift, {1, c, 1, 1}).to(like.device());
    return slot;
  }

  int groups_;
  const std::vector<NormSums>& exact_;
  int record_;
  NormSums* sums_;
  Span ys_, xs_;
  std::vector<std::pair<Tensor, Tensor>>* cache_;
  int index_ = 0;
};

// One stage run in tiles: `run` maps a region of `input` (the whole image at
// in_scale pixels per latent pixel, h x w latent pixels, on the device) to
// that region of the stage's output, at out_scale pixels per latent pixel.
struct StageJob {
  const Tensor& input;
  int64_t h, w, in_scale, out_scale;
  int groups, norms, halo;
  std::function<Tensor(const Tensor& region, const NormFn& norm)> run;
  NormFn exact;  // the untiled GroupNorm, for a stage that is one tile
};

// The stage's output for the whole image, assembled on the host (CPU) from
// the tiles' cores, in the tiles' dtype.
Tensor run_stage(const StageJob& job, int64_t tile) {
  const std::vector<Span> ys = split(job.h, tile, job.halo), xs = split(job.w, tile, job.halo);
  auto region = [&](const Span& sy, const Span& sx) {
    const Tensor view = job.input.slice(2, sy.reg0 * job.in_scale, sy.reg1 * job.in_scale)
                            .slice(3, sx.reg0 * job.in_scale, sx.reg1 * job.in_scale);
    return to_preferred_layout(copy(view));
  };
  if (ys.size() == 1 && xs.size() == 1) return job.run(job.input, job.exact).to(Device::kCPU).contiguous();

  // The statistics, one GroupNorm after the other.
  std::vector<NormSums> exact;
  std::vector<std::pair<Tensor, Tensor>> affine;
  for (int k = 0; k < job.norms; ++k) {
    NormSums sums;
    for (const Span& sy : ys) {
      for (const Span& sx : xs) {
        StageNorm norm(job.groups, exact, k, &sums, sy, sx, &affine);
        bool stopped = false;
        try {
          job.run(region(sy, sx), std::ref(norm));
        } catch (const SweepDone&) {
          stopped = true;
        }
        DIFFUSE_CHECK(stopped, ErrorCode::kRuntime,
                      "[Vae tiling] a stage has fewer than " + std::to_string(job.norms) + " GroupNorms");
      }
    }
    exact.push_back(std::move(sums));
  }

  // The final sweep: every tile's core into the output.
  Tensor out;
  const int64_t s = job.out_scale;
  for (const Span& sy : ys) {
    for (const Span& sx : xs) {
      StageNorm norm(job.groups, exact, -1, nullptr, sy, sx, &affine);
      const Tensor y = job.run(region(sy, sx), std::ref(norm));  // [1, C, rh * s, rw * s]
      const Tensor core = y.slice(2, (sy.core0 - sy.reg0) * s, (sy.core1 - sy.reg0) * s)
                              .slice(3, (sx.core0 - sx.reg0) * s, (sx.core1 - sx.reg0) * s)
                              .to(Device::kCPU).contiguous();  // [1, C, ch, cw]
      if (!out.defined()) out = Tensor::empty({1, y.dim(1), job.h * s, job.w * s}, y.dtype(), Device::kCPU);
      const size_t esize = dtype_size(out.dtype());
      const int64_t c = out.dim(1), oh = out.dim(2), ow = out.dim(3), ch = core.dim(2), cw = core.dim(3);
      const auto* src = static_cast<const uint8_t*>(core.raw_data());
      auto* dst = static_cast<uint8_t*>(out.raw_data());
      for (int64_t ci = 0; ci < c; ++ci) {
        for (int64_t yi = 0; yi < ch; ++yi) {
          std::memcpy(dst + ((ci * oh + sy.core0 * s + yi) * ow + sx.core0 * s) * esize,
                      src + ((ci * ch + yi) * cw) * esize, static_cast<size_t>(cw) * esize);
        }
      }
    }
  }
  return out;
}

int64_t downsampling(const VaeConfig& c) { return int64_t{1} << (c.block_out_channels.size() - 1); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void VaeTileOptions::validate() const {
  DIFFUSE_CHECK_ARG(tile >= 1, "[Vae tiling] tile must be at least 1 latent pixel, got " + std::to_string(tile));
  DIFFUSE_CHECK_ARG(halo >= -1, "[Vae tiling] halo must be -1 (automatic) or >= 0, got " + std::to_string(halo));
}

// Decoder stage i works at 2^i pixels per latent pixel. Walking back from its
// output, each 3x3 conv adds a pixel of reach; the nearest 2x upsample at its
// start halves it (rounding up) onto the stage's input, at 2^(i-1).
int Vae::decoder_stage_halo(const VaeConfig& c, int stage) {
  const int levels = static_cast<int>(c.block_out_channels.size());
  DIFFUSE_CHECK_ARG(stage >= 1 && stage < levels, "[Vae] decoder stage " + std::to_string(stage) + " of " +
                                                       std::to_string(levels) + " levels");
  const int64_t convs = 1 + 2 * (c.layers_per_block + 1) + (stage + 1 == levels ? 1 : 0);
  return static_cast<int>(ceil_div(ceil_div(convs, 2), int64_t{1} << (stage - 1)));
}

// Encoder stage i works at 2^(levels-1-i) pixels per latent pixel. Its convs
// reach one pixel each; its Downsample2D pads one column/row at the right and
// bottom before the stride-2 conv, so output j reads inputs 2j .. 2j+2: one
// pixel more to that side.
int Vae::encoder_stage_halo(const VaeConfig& c, int stage) {
  const int levels = static_cast<int>(c.block_out_channels.size());
  DIFFUSE_CHECK_ARG(stage >= 0 && stage < levels, "[Vae] encoder stage " + std::to_string(stage) + " of " +
                                                      std::to_string(levels) + " levels");
  const int64_t convs = (stage == 0 ? 1 : 0) + 2 * c.layers_per_block + (stage + 1 < levels ? 1 : 0);
  return static_cast<int>(ceil_div(convs, int64_t{1} << (levels - 1 - stage)));
}

Tensor Vae::decode_tiled(const Tensor& z, const TileOptions& options) const {
  DIFFUSE_CHECK_ARG(z.ndim() == 4 && z.dim(1) == config_.latent_channels,
                    "[Vae::decode_tiled] expects latents [B, " + std::to_string(config_.latent_channels) +
                        ", h, w], got " + z.str());
  options.validate();
  if (z.dim(0) == 1) return decode_tiled_one(z, options);
  std::vector<Tensor> images;
  for (int64_t b = 0; b < z.dim(0); ++b) images.push_back(decode_tiled_one(z.slice(0, b, b + 1), options));
  return concat(images, 0);
}

Tensor Vae::decode_tiled_one(const Tensor& z, const TileOptions& opt) const {
  const int levels = static_cast<int>(w_.up.size());
  if (levels == 1) return decode(z);  // everything runs at latent resolution
  AllowTf32 scope(tf32_);
  const int64_t h = z.dim(2), w = z.dim(3);
  const int groups = config_.norm_num_groups;
  auto halo = [&](int64_t convs, int64_t in_scale, int64_t out_scale) {  // latent pixels
    return opt.halo >= 0 ? opt.halo : static_cast<int>(ceil_div(ceil_div(convs * in_scale, out_scale), in_scale));
  };
  Tensor x = decoder_head(to_preferred_layout(z.to(device_).to(act_dtype_)));  // [1, Ctop, h, w]
  for (int i = 1; i + 1 < levels; ++i) {
    // Below full resolution a stage's activations may be held for the whole
    // image: a checkpoint after every resnet (decoder_stage's steps, one job
    // each), so a sweep re-runs one resnet, not the stage up to its GroupNorm.
    const int64_t in = int64_t{1} << (i - 1), out = int64_t{1} << i;
    const std::vector<Resnet>& resnets = w_.up[i].resnets;
    for (size_t r = 0; r < resnets.size(); ++r) {
      const Block& prev = w_.up[i - 1];
      const Resnet& res = resnets[r];
      auto run = [this, &prev, &res, r](const Tensor& region, const NormFn& norm) {
        if (r > 0) return resnet(region, res, norm);                                          // [1, C, s, s]
        const Tensor up = conv2d(upsample_nearest2x(region), prev.sample_w, prev.sample_b, 1, 1);  // [1, C, 2s, 2s]
        return resnet(up, res, norm);                                                         // [1, C', 2s, 2s]
      };
      const StageJob job{x,   h,      w,    r == 0 ? in : out, out, groups, 2,
                         halo(r == 0 ? 3 : 2, r == 0 ? in : out, out), run, exact_norm()};
      x = to_preferred_layout(run_stage(job, opt.tile).to(device_));  // [1, C', 2^i h, 2^i w]
    }
  }
  // The last stage works at full resolution: only tiles, from the stage's input.
  const int i = levels - 1;
  const StageJob job{x,
                     h,
                     w,
                     int64_t{1} << (i - 1),
                     int64_t{1} << i,
                     groups,
                     2 * (config_.layers_per_block + 1) + 1,
                     opt.halo >= 0 ? opt.halo : decoder_stage_halo(config_, i),
                     [this, i](const Tensor& region, const NormFn& norm) { return decoder_stage(i, region, norm); },
                     exact_norm()};
  return run_stage(job, opt.tile).to(device_);  // [1, out, 8h, 8w]
}

Vae::Encoded Vae::encode_tiled(const Tensor& image, const TileOptions& options) const {
  DIFFUSE_CHECK_ARG(image.ndim() == 4 && image.dim(1) == config_.in_channels,
                    "[Vae::encode_tiled] expects images [B, " + std::to_string(config_.in_channels) +
                        ", H, W], got " + image.str());
  const int64_t f = downsampling(config_);
  DIFFUSE_CHECK_ARG(image.dim(2) % f == 0 && image.dim(3) % f == 0,
                    "[Vae::encode_tiled] H and W must be multiples of " + std::to_string(f) + ", got " +
                        image.str());
  options.validate();
  AllowTf32 scope(tf32_);
  std::vector<Tensor> heads;
  for (int64_t b = 0; b < image.dim(0); ++b) heads.push_back(encode_head_tiled(image.slice(0, b, b + 1), options));
  const Tensor head = heads.size() == 1 ? heads[0] : concat(heads, 0);  // [B, Ctop, h, w]
  return encoder_tail(to_preferred_layout(head.to(device_)));
}

Tensor Vae::encode_head_tiled(const Tensor& image, const TileOptions& opt) const {
  const int levels = static_cast<int>(w_.down.size());
  const int64_t f = downsampling(config_);
  Tensor x = to_preferred_layout(image.to(device_).to(act_dtype_));  // [1, in, H, W]
  for (int i = 0; i < levels; ++i) {
    const int64_t in_scale = f >> i;
    const StageJob job{x,
                       image.dim(2) / f,
                       image.dim(3) / f,
                       in_scale,
                       i + 1 < levels ? in_scale / 2 : in_scale,
                       config_.norm_num_groups,
                       2 * config_.layers_per_block,
                       opt.halo >= 0 ? opt.halo : encoder_stage_halo(config_, i),
                       [this, i](const Tensor& region, const NormFn& norm) { return encoder_stage(i, region, norm); },
                       exact_norm()};
    x = to_preferred_layout(run_stage(job, opt.tile).to(device_));  // [1, Ci, .., ..]
  }
  return x;  // [1, Ctop, h, w]
}

// ---- memory estimates --------------------------------------------------------

namespace {

// Region side (latent pixels) of a tile of `tile` with `halo` on an image side of n.
uint64_t region(uint64_t n, const VaeTileOptions& opt, int halo) {
  return std::min<uint64_t>(n, static_cast<uint64_t>(opt.tile) + 2 * static_cast<uint64_t>(halo));
}

}  // namespace

uint64_t Vae::tiled_decode_peak_bytes(const VaeConfig& c, DType act, int width, int height,
                                      const TileOptions& opt) {
  const std::vector<int>& ch = c.block_out_channels;
  const int levels = static_cast<int>(ch.size());
  const uint64_t f = static_cast<uint64_t>(downsampling(c)), b = dtype_size(act);
  const uint64_t h = static_cast<uint64_t>(height) / f, w = static_cast<uint64_t>(width) / f, hw = h * w;
  const uint64_t top = static_cast<uint64_t>(ch.back());
  // The head at latent resolution: a resnet's input, temporaries and output, and the attention's q, k, v.
  uint64_t peak = 6 * top * hw * b;
  for (int i = 1; i < levels; ++i) {
    const uint64_t cin = static_cast<uint64_t>(ch[levels - i]);
    const bool last = i + 1 == levels;
    const uint64_t cout = static_cast<uint64_t>(last ? c.out_channels : ch[levels - 1 - i]);
    const uint64_t cmid = static_cast<uint64_t>(ch[levels - 1 - i]);
    const uint64_t in_px = hw << (2 * (i - 1)), out_px = hw << (2 * i);
    const int halo = opt.halo >= 0 ? opt.halo : decoder_stage_halo(c, i);
    const uint64_t tile_px = (region(h, opt, halo) * region(w, opt, halo)) << (2 * i);
    // A step's input and output for the whole image (before the last stage a
    // step is one resnet: input and output may both be at the stage's size); in
    // a tile, the upsampled input and its conv, a resnet's temporaries (with the
    // scale-and-shift GroupNorm's).
    const uint64_t held = last ? cin * in_px + 2 * cout * out_px  // the last: also the image on the device
                               : std::max(cin * in_px + cmid * out_px, 2 * cmid * out_px);
    peak = std::max(peak, (held + (2 * cin + 3 * cmid) * tile_px) * b);
  }
  return peak;
}

uint64_t Vae::tiled_encode_peak_bytes(const VaeConfig& c, DType act, int width, int height,
                                      const TileOptions& opt) {
  const std::vector<int>& ch = c.block_out_channels;
  const int levels = static_cast<int>(ch.size());
  const uint64_t f = static_cast<uint64_t>(downsampling(c)), b = dtype_size(act);
  const uint64_t h = static_cast<uint64_t>(height) / f, w = static_cast<uint64_t>(width) / f, hw = h * w;
  const uint64_t top = static_cast<uint64_t>(ch.back());
  const uint64_t image = static_cast<uint64_t>(c.in_channels) * hw * f * f * (4 + b);  // host f32 + device
  uint64_t peak = image + 6 * top * hw * b;  // the tail (mid block) at latent resolution
  for (int i = 0; i < levels; ++i) {
    const uint64_t scale = f >> i, out_scale = i + 1 < levels ? scale / 2 : scale;
    const uint64_t cin = static_cast<uint64_t>(i == 0 ? c.in_channels : ch[i - 1]);
    const uint64_t cout = static_cast<uint64_t>(ch[i]);
    const int halo = opt.halo >= 0 ? opt.halo : encoder_stage_halo(c, i);
    const uint64_t tile_px = region(h, opt, halo) * region(w, opt, halo) * scale * scale;
    // Input and output for the whole image; in a tile, conv_in's output, a
    // resnet's temporaries and the downsampler's padded copy.
    const uint64_t stage = (cin * hw * scale * scale + cout * hw * out_scale * out_scale + 5 * cout * tile_px) * b;
    peak = std::max(peak, image + stage);
  }
  return peak;
}

int Vae::tile_for_budget(const VaeConfig& c, DType act, int width, int height, uint64_t budget) {
  const int64_t f = downsampling(c);
  const int longest = static_cast<int>(std::max(width, height) / f);
  for (int tile = (longest + 7) / 8 * 8; tile >= 16; tile -= 8) {
    TileOptions opt;
    opt.tile = tile;
    if (tiled_decode_peak_bytes(c, act, width, height, opt) <= budget) return tile;
  }
  return 0;
}

}  // namespace diffuse
