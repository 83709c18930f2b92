// Pixel upscalers (upscalers.h): the built-in Lanczos and Nearest, and the
// ESRGAN / Real-ESRGAN model files of the upscaler folders.
//
// A model upscale follows A1111 (modules/upscaler.py Upscaler.upscale and
// modules/upscaler_utils.py upscale_without_tiling):
//  - the image goes in as BGR in [0, 1] (the models were trained on OpenCV
//    images), comes out clamped to [0, 1] and is truncated to 8 bits
//    (numpy's astype(uint8) of 255 * x), then flipped back to RGB;
//  - the model runs at its native factor up to 3 times while the image is
//    smaller than the target, then Lanczos resizes it to the target exactly.
#include "adapters/upscalers.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "models/rrdbnet.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

constexpr int kMaxModelPasses = 3;  // A1111's Upscaler.upscale loop
constexpr int kMaxSide = 16384;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool model_extension(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".pth" || e == ".pt" || e == ".safetensors";
}

// The scale a file name states ("4x-UltraSharp", "RealESRGAN_x2plus"), else 4:
// what a file that cannot be probed is listed with.
int scale_from_name(const std::string& stem) {
  const std::string s = lower(stem);
  for (size_t i = 0; i + 1 < s.size(); ++i) {
    if (s[i] >= '1' && s[i] <= '8' && s[i + 1] == 'x' && (i == 0 || !std::isdigit(static_cast<unsigned char>(s[i - 1]))))
      return s[i] - '0';
    if (s[i] == 'x' && s[i + 1] >= '1' && s[i + 1] <= '8' &&
        (i + 2 >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i + 2]))))
      return s[i + 1] - '0';
  }
  return 4;
}

// PIL's NEAREST: source pixel floor((x + 0.5) * src / dst).
image::Rgb resize_nearest(const image::Rgb& in, int w, int h) {
  image::Rgb out;
  out.width = w;
  out.height = h;
  out.px.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    const int sy = std::min(in.height - 1, static_cast<int>((y + 0.5) * in.height / h));
    for (int x = 0; x < w; ++x) {
      const int sx = std::min(in.width - 1, static_cast<int>((x + 0.5) * in.width / w));
      const uint8_t* s = &in.px[(static_cast<size_t>(sy) * in.width + sx) * 3];
      uint8_t* d = &out.px[(static_cast<size_t>(y) * w + x) * 3];
      d[0] = s[0];
      d[1] = s[1];
      d[2] = s[2];
    }
  }
  return out;
}

// RGB bytes -> [1, 3, H, W] f32 BGR in [0, 1].
Tensor to_bgr_tensor(const image::Rgb& img) {
  const int64_t hw = int64_t{img.width} * img.height;
  Tensor t = Tensor::empty({1, 3, img.height, img.width}, DType::kF32);
  float* d = t.data<float>();
  for (int64_t i = 0; i < hw; ++i)
    for (int c = 0; c < 3; ++c) d[(2 - c) * hw + i] = img.px[static_cast<size_t>(i) * 3 + c] / 255.0f;
  return t;
}

// [1, 3, H, W] BGR -> RGB bytes: clamp to [0, 1], 255 * x truncated (A1111).
image::Rgb from_bgr_tensor(const Tensor& t) {
  image::Rgb img;
  img.height = static_cast<int>(t.dim(2));
  img.width = static_cast<int>(t.dim(3));
  const int64_t hw = int64_t{img.width} * img.height;
  img.px.resize(static_cast<size_t>(hw) * 3);
  Tensor c = t.contiguous();
  const float* s = c.data<float>();
  for (int64_t i = 0; i < hw; ++i)
    for (int ch = 0; ch < 3; ++ch) {
      float v = s[(2 - ch) * hw + i];
      v = std::isnan(v) ? 0.0f : std::clamp(v, 0.0f, 1.0f);
      img.px[static_cast<size_t>(i) * 3 + ch] = static_cast<uint8_t>(255.0f * v);
    }
  return img;
}

}  // namespace

UpscalerLibrary::UpscalerLibrary(std::vector<std::string> dirs) : dirs_(std::move(dirs)) {
  if (dirs_.empty()) dirs_.push_back("models/ESRGAN");
  refresh();
}

UpscalerLibrary::~UpscalerLibrary() = default;

void UpscalerLibrary::refresh() {
  struct Found {
    std::string root, path;
  };
  std::vector<Found> found;
  for (const std::string& dir : dirs_) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink |
                                                 fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code fe;
      if (it->is_regular_file(fe) && model_extension(it->path())) found.push_back({dir, it->path().string()});
    }
  }
  std::stable_sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.path < b.path; });
  std::vector<UpscalerInfo> models;
  for (const Found& f : found) {
    UpscalerInfo info{fs::path(f.path).stem().string(), fs::absolute(f.path).lexically_normal().string(), "esrgan", 0};
    // A name listed twice: the first file keeps it (names must resolve to one file).
    bool dup = false;
    for (const UpscalerInfo& m : models) dup = dup || lower(m.name) == lower(info.name);
    if (dup) continue;
    try {
      info.scale = rrdbnet::probe_file(f.path).config.scale();
    } catch (const Error&) {
      info.scale = scale_from_name(info.name);  // listed; upscale() will say what is wrong with it
    }
    models.push_back(std::move(info));
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Cached weights of files that are gone go too.
  for (auto it = cache_.begin(); it != cache_.end();) {
    bool kept = false;
    for (const UpscalerInfo& m : models) kept = kept || it->first.substr(it->first.find(':') + 1) == m.path;
    it = kept ? std::next(it) : cache_.erase(it);
  }
  models_ = std::move(models);
}

std::vector<UpscalerInfo> UpscalerLibrary::list() const {
  std::vector<UpscalerInfo> out{{"Lanczos", "", "lanczos", 4}, {"Nearest", "", "nearest", 4}};
  std::lock_guard<std::mutex> lock(mu_);
  out.insert(out.end(), models_.begin(), models_.end());
  return out;
}

void UpscalerLibrary::set_allow_paths(bool allow) {
  std::lock_guard<std::mutex> lock(mu_);
  allow_paths_ = allow;
}

void UpscalerLibrary::set_tiling(UpscalerTiling tiling) {
  rrdbnet::TileOptions{tiling.tile, tiling.overlap}.validate();
  std::lock_guard<std::mutex> lock(mu_);
  tiling_ = tiling;
}

UpscalerTiling UpscalerLibrary::tiling() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tiling_;
}

UpscalerInfo UpscalerLibrary::find(const std::string& name) const {
  const std::string key = lower(name);
  for (const UpscalerInfo& u : list())
    if (lower(u.name) == key) return u;
  bool allow_paths;
  {
    std::lock_guard<std::mutex> lock(mu_);
    allow_paths = allow_paths_;
  }
  std::error_code ec;
  if (allow_paths && model_extension(name) && fs::is_regular_file(name, ec)) {
    UpscalerInfo info{fs::path(name).stem().string(), fs::absolute(name).lexically_normal().string(), "esrgan", 0};
    info.scale = rrdbnet::probe_file(name).config.scale();  // a bad file fails here, naming the problem
    return info;
  }
  std::string known;
  for (const UpscalerInfo& u : list()) known += (known.empty() ? "" : ", ") + u.name;
  throw_error(ErrorCode::kNotFound, "Upscaler not found: '" + name + "' (known: " + known + ")");
}

std::shared_ptr<const rrdbnet::Model> UpscalerLibrary::model_for(const UpscalerInfo& info, Device device) const {
  const std::string key = std::string(device_name(device)) + ":" + info.path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  // Loaded outside the lock: another thread may load the same file at the
  // same time; the first one stored is kept and the other copy dropped.
  // 16-bit on a GPU (Real-ESRGAN's inference default), f32 on the CPU.
  std::shared_ptr<const rrdbnet::Model> m =
      rrdbnet::load(info.path, device, device == Device::kCPU ? DType::kF32 : DType::kF16);
  if (m->config.in_channels != 3 || m->config.out_channels != 3)
    throw_error(ErrorCode::kUnsupported, info.path + ": a " + std::to_string(m->config.in_channels) + "-to-" +
                                             std::to_string(m->config.out_channels) +
                                             " channel model; image upscaling needs RGB in and out");
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = cache_.emplace(key, m);
  return it->second;
}

image::Rgb UpscalerLibrary::upscale(const std::string& name, const image::Rgb& in, int target_w, int target_h,
                                    Device device) const {
  DIFFUSE_CHECK_ARG(!in.empty() && in.px.size() == static_cast<size_t>(in.width) * in.height * 3,
                    "[upscale] the input image is empty or its pixels do not match " + std::to_string(in.width) + "x" +
                        std::to_string(in.height));
  DIFFUSE_CHECK_ARG(target_w >= 1 && target_w <= kMaxSide && target_h >= 1 && target_h <= kMaxSide,
                    "[upscale] target size must be 1-" + std::to_string(kMaxSide) + " per side, got " +
                        std::to_string(target_w) + "x" + std::to_string(target_h));
  const UpscalerInfo info = find(name);
  if (info.kind == "lanczos") return image::resize(in, target_w, target_h);
  if (info.kind == "nearest") return resize_nearest(in, target_w, target_h);
  std::shared_ptr<const rrdbnet::Model> model = model_for(info, device);
  const UpscalerTiling t = tiling();
  const rrdbnet::TileOptions tiles{t.tile, t.overlap};
  const int s = model->config.scale();
  image::Rgb img = in;
  for (int pass = 0; pass < kMaxModelPasses; ++pass) {
    if (img.width >= target_w && img.height >= target_h) break;
    if (int64_t{img.width} * s > kMaxSide || int64_t{img.height} * s > kMaxSide)
      throw_error(ErrorCode::kInvalidArgument, "[upscale] " + info.name + " would make a " +
                                                   std::to_string(int64_t{img.width} * s) + "x" +
                                                   std::to_string(int64_t{img.height} * s) + " image (at most " +
                                                   std::to_string(kMaxSide) + " per side)");
    if (s == 1 && pass > 0) break;  // a 1x model (a filter) runs once
    img = from_bgr_tensor(rrdbnet::upscale(*model, to_bgr_tensor(img), tiles));
    if (s == 1) break;
  }
  if (img.width != target_w || img.height != target_h) img = image::resize(img, target_w, target_h);
  return img;
}

}  // namespace diffuse
