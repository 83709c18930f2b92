// Live previews: method choice, decoder cache and the step schedule (live_preview.h).
#include "pipeline/live_preview.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/ops.h"

namespace diffuse {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string dirs_text(const std::vector<std::string>& dirs) {
  if (dirs.empty()) return "(no --taesd-dir)";
  std::string s;
  for (const std::string& d : dirs) s += (s.empty() ? "" : ", ") + d;
  return s;
}

}  // namespace

const char* preview_method_name(PreviewMethod m) {
  switch (m) {
    case PreviewMethod::kAuto: return "auto";
    case PreviewMethod::kCheap: return "cheap";
    case PreviewMethod::kTaesd: return "taesd";
  }
  return "auto";
}

PreviewMethod preview_method_from_name(const std::string& name) {
  for (PreviewMethod m : {PreviewMethod::kAuto, PreviewMethod::kCheap, PreviewMethod::kTaesd})
    if (name == preview_method_name(m)) return m;
  throw_error(ErrorCode::kInvalidArgument, "preview method '" + name + "' is not one of auto, cheap, taesd");
}

void PreviewOptions::validate() const {
  DIFFUSE_CHECK_ARG(std::isfinite(max_overhead) && max_overhead >= 0,
                    "preview max_overhead must be a finite number >= 0, got " + std::to_string(max_overhead));
}

LivePreviewer::LivePreviewer(PreviewOptions options) : options_(std::move(options)) { options_.validate(); }

PreviewOptions LivePreviewer::options() const {
  std::lock_guard<std::mutex> lock(mu_);
  return options_;
}

void LivePreviewer::set_options(PreviewOptions options) {
  options.validate();
  std::lock_guard<std::mutex> lock(mu_);
  options_ = std::move(options);
  decoders_.clear();
  tried_.clear();
  notes_.clear();
}

std::string LivePreviewer::note(Family family) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = notes_.find(family);
  return it == notes_.end() ? "" : it->second;
}

std::shared_ptr<const TaesdDecoder> LivePreviewer::decoder(Family family, Device device) {
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.method == PreviewMethod::kCheap) return nullptr;
  const auto key = std::make_pair(family, device);
  if (tried_[key]) {
    auto it = decoders_.find(key);
    return it == decoders_.end() ? nullptr : it->second;
  }
  tried_[key] = true;
  // Loading a 2.4 MB decoder under the lock: only the job worker waits for it.
  std::string why;
  const std::optional<std::string> path = find_taesd_decoder(options_.taesd_dirs, family);
  if (!path) {
    const TaesdVariant& v = taesd_variant(family);
    why = std::string("no ") + v.decoder_stem + ".safetensors / .pth or " + v.diffusers_folder + "/ in " +
          dirs_text(options_.taesd_dirs);
  } else {
    try {
      auto dec = std::make_shared<const TaesdDecoder>(TaesdDecoder::load(*path, DType::kF32, device));
      decoders_[key] = dec;
      notes_.erase(family);
      std::fprintf(stderr, "[preview] %s live previews: TAESD decoder %s (%s)\n", family_name(family), path->c_str(),
                   device_name(device));
      return dec;
    } catch (const Error& e) {
      why = e.what();
    }
  }
  notes_[family] = why;
  std::fprintf(stderr, "[preview] %s live previews use the cheap approximation%s: %s\n", family_name(family),
               options_.method == PreviewMethod::kTaesd ? " although TAESD was asked for" : "", why.c_str());
  return nullptr;
}

std::vector<uint8_t> LivePreviewer::taesd_rgb(const TaesdDecoder& decoder, const Tensor& latents, int index,
                                              int* width, int* height) {
  DIFFUSE_CHECK_ARG(latents.ndim() == 4 && index >= 0 && index < latents.dim(0),
                    "[taesd_rgb] image " + std::to_string(index) + " of latents " + shape_str(latents.shape()));
  Tensor z = latents.slice(0, index, index + 1);
  if (z.device() != decoder.device()) z = z.to(decoder.device());
  const Tensor img = decoder.decode(z).to(DType::kF32).to(Device::kCPU).contiguous();  // [1, 3, H, W]
  const int64_t h = img.dim(2), w = img.dim(3);
  const float* d = img.data<float>();
  std::vector<uint8_t> rgb(static_cast<size_t>(h * w * 3));
  for (int64_t i = 0; i < h * w; ++i)
    for (int c = 0; c < 3; ++c)
      rgb[i * 3 + c] = static_cast<uint8_t>(std::lround(std::clamp(d[c * h * w + i], 0.0f, 1.0f) * 255.0f));
  *width = static_cast<int>(w);
  *height = static_cast<int>(h);
  return rgb;
}

double LivePreviewer::cost_per_pixel(PreviewMethod m, Device d) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cost_.find({m, d});
  return it == cost_.end() ? 0.0 : it->second;
}

void LivePreviewer::record_cost(PreviewMethod m, Device d, double per_pixel) {
  std::lock_guard<std::mutex> lock(mu_);
  cost_[{m, d}] = per_pixel;
}

LivePreviewer::Session LivePreviewer::start(Family family, Device device, std::vector<float> factors) {
  Session s;
  s.owner_ = this;
  s.family_ = family;
  s.factors_ = std::move(factors);
  s.options_ = options();
  if (s.options_.enabled && s.options_.every_n_steps > 0) s.decoder_ = decoder(family, device);
  return s;
}

bool LivePreviewer::Session::due(const StepProgress& s) const {
  if (!options_.enabled || options_.every_n_steps <= 0 || s.step % options_.every_n_steps != 0) return false;
  if (options_.max_overhead <= 0) return true;
  double estimate = estimate_s_;
  if (estimate <= 0 && s.latents.defined() && s.latents.ndim() == 4) {
    estimate = owner_->cost_per_pixel(method(), s.latents.device()) * static_cast<double>(s.latents.dim(2) * s.latents.dim(3));
  }
  const double denoising = std::max(0.0, s.elapsed_s - spent_s_);
  return spent_s_ + estimate <= options_.max_overhead * denoising;
}

LivePreview LivePreviewer::Session::make(const StepProgress& s, int index) {
  // A GPU loop only enqueues its steps: wait for them first, so that their
  // time is not counted as the preview's.
  if (s.latents.defined()) backend_for(s.latents.device()).synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  LivePreview p;
  if (decoder_) {
    try {
      p.rgb = taesd_rgb(*decoder_, s.latents, index, &p.width, &p.height);
      p.method = PreviewMethod::kTaesd;
    } catch (const Error& e) {
      std::fprintf(stderr, "[preview] TAESD preview failed, the cheap approximation goes on: %s\n", e.what());
      decoder_.reset();
      estimate_s_ = 0;
    }
  }
  if (p.rgb.empty()) {
    p.rgb = Pipeline::preview_rgb(s.latents, index, family_, &p.width, &p.height, factors_);
    p.method = PreviewMethod::kCheap;
  }
  p.seconds = seconds_since(t0);
  spent_s_ += p.seconds;
  estimate_s_ = p.seconds;
  const double pixels = static_cast<double>(s.latents.dim(2) * s.latents.dim(3));
  if (pixels > 0) owner_->record_cost(p.method, s.latents.device(), p.seconds / pixels);
  return p;
}

}  // namespace diffuse
