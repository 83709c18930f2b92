// VAE overrides and the f16/bf16 overflow fallback (vae_override.h).
#include "pipeline/vae_override.h"

#include <filesystem>

#include "io/hash_cache.h"
#include "io/tensor_checks.h"
#include "models/probe.h"
#include "models/vae_file.h"
#include "models/weights.h"

namespace fs = std::filesystem;

namespace diffuse {
namespace {

// The loader's activation rule (model_loader.cpp activation_dtype_for): bf16
// weights on the CPU compute with f32 activations.
DType activation_dtype(Device device, DType weights) {
  return device == Device::kCPU && weights == DType::kBF16 ? DType::kF32 : weights;
}

// Which file a path stands for now: a rewritten file is read again.
struct Stamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};
Stamp stamp_of(const std::string& weights_path) {
  std::error_code ec;
  Stamp s;
  s.size = fs::file_size(weights_path, ec);
  if (ec) s.size = 0;
  const auto t = fs::last_write_time(weights_path, ec);
  if (!ec) s.mtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return s;
}

// The weights file behind a VAE path (a folder's weights, a pipeline folder's vae/).
std::string weights_file_of(const std::string& path) {
  if (!fs::is_directory(path)) return path;
  for (const fs::path& dir : {fs::path(path), fs::path(path) / "vae"}) {
    if (!fs::exists(dir / "config.json")) continue;
    try {
      return find_component_weights(dir.string());  // the file read_vae_file reads
    } catch (const Error&) {
      return path;  // no weights: read_vae_file says so
    }
  }
  return path;
}

}  // namespace

VaeInUse load_vae_override(const std::string& path, const VaePlacement& placement) {
  VaeFile file = read_vae_file(path);
  const VaeConfig config = vae_config_for(file, placement.model_config);
  const DType dtype = placement.vae_dtype ? placement.vae_dtype(placement.model_dtype, config) : placement.model_dtype;
  if (placement.device == Device::kCPU) convert_weights(file.weights, dtype);
  auto vae = std::make_shared<Vae>(config, file.weights, dtype, placement.device);
  vae->set_allow_tf32(dtype == DType::kF32 && placement.model_dtype != DType::kF32);  // as the loader does
  vae->set_activation_dtype(activation_dtype(placement.device, dtype));
  file.weights.clear();
  VaeInUse use;
  use.vae = std::move(vae);
  use.path = file.path;
  use.name = file.name;
  use.hash = cached_sha256(file.weights_path).substr(0, 10);
  return use;
}

std::shared_ptr<const Vae> vae_f32_copy(const Vae& vae) {
  TensorMap weights;
  for (const auto& [name, shape] : vae.weights().specs()) weights.emplace(name, vae.weights().get(name).to(DType::kF32));
  auto copy = std::make_shared<Vae>(vae.config(), weights, DType::kF32, vae.device());
  copy->set_activation_dtype(DType::kF32);
  return copy;
}

bool all_finite(const Tensor& t) {
  const Tensor host = t.to(Device::kCPU);
  return find_non_finite(TensorMap{{"x", host}}, 1).empty();
}

VaeInUse VaeOverrides::choose(const Vae& own, const std::string& path, const VaePlacement& placement) {
  if (path.empty()) {
    VaeInUse use;
    use.vae = std::shared_ptr<const Vae>(std::shared_ptr<const Vae>(), &own);  // owned by the pipeline
    return use;
  }
  const std::string abs = fs::absolute(path).lexically_normal().string();
  const Stamp now = stamp_of(weights_file_of(abs));
  std::lock_guard<std::mutex> lock(mu_);
  if (kept_ && kept_->path == abs && kept_->size == now.size && kept_->mtime_ns == now.mtime_ns) return kept_->use;
  // Read the new one first: a failure leaves the kept VAE (and the model) as they were.
  VaeInUse use = load_vae_override(path, placement);
  kept_ = Kept{abs, now.size, now.mtime_ns, use, nullptr};
  return use;
}

std::shared_ptr<const Vae> VaeOverrides::f32_of(const VaeInUse& use) {
  std::lock_guard<std::mutex> lock(mu_);
  if (use.path.empty()) {
    if (!own_f32_ || own_ != use.vae.get()) {
      own_f32_ = vae_f32_copy(*use.vae);
      own_ = use.vae.get();
    }
    return own_f32_;
  }
  if (kept_ && kept_->use.vae == use.vae) {
    if (!kept_->f32) kept_->f32 = vae_f32_copy(*use.vae);
    return kept_->f32;
  }
  return vae_f32_copy(*use.vae);  // the kept VAE changed since this call chose it
}

std::string vae_fallback_warning(DType dtype, const char* what) {
  const std::string half = dtype == DType::kBF16 ? "bf16" : "fp16";
  return "the VAE's " + half + " " + what + " overflowed; " + (std::string(what) == "decode" ? "decoded" : "encoded") +
         " again in f32 (A1111's --no-half-vae)";
}

namespace {
void warn_once(std::vector<std::string>& warnings, const std::string& w) {
  for (const std::string& x : warnings)
    if (x == w) return;
  warnings.push_back(w);
}
}  // namespace

Tensor decode_with_fallback(VaeOverrides& overrides, const VaeInUse& use, const Tensor& z,
                            const std::function<Tensor(const Vae&, const Tensor&)>& run,
                            std::vector<std::string>& warnings) {
  const Vae& vae = *use.vae;
  Tensor out = run(vae, z.to(vae.dtype()).to(vae.device())).to(Device::kCPU).to(DType::kF32);
  if (vae.activation_dtype() == DType::kF32 || all_finite(out)) return out;
  const std::shared_ptr<const Vae> f32 = overrides.f32_of(use);
  out = run(*f32, z.to(DType::kF32).to(f32->device())).to(Device::kCPU).to(DType::kF32);
  warn_once(warnings, vae_fallback_warning(vae.activation_dtype(), "decode"));
  return out;
}

Vae::Encoded encode_with_fallback(VaeOverrides& overrides, const VaeInUse& use, const Tensor& x,
                                  const std::function<Vae::Encoded(const Vae&, const Tensor&)>& run,
                                  std::vector<std::string>& warnings) {
  const Vae& vae = *use.vae;
  Vae::Encoded e = run(vae, x.to(vae.dtype()).to(vae.device()));
  if (vae.activation_dtype() == DType::kF32 || (all_finite(e.mean) && all_finite(e.std))) return e;
  const std::shared_ptr<const Vae> f32 = overrides.f32_of(use);
  e = run(*f32, x.to(DType::kF32).to(f32->device()));
  warn_once(warnings, vae_fallback_warning(vae.activation_dtype(), "encode"));
  return e;
}

}  // namespace diffuse
