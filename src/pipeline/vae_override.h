// Which VAE a generation decodes with, and the fp16 overflow fallback
// (docs/vae.md). Internal to the pipeline (pipeline_impl.h holds one
// VaeOverrides per Pipeline).
//
// GenerationParams::vae names a VAE file or folder (models/vae_file.h); ""
// is the model's own. The last VAE read is kept (by path, size and
// modification time), so calls with the same VAE read it once; the model's own
// VAE is never modified, and a VAE that fails to load leaves everything as it
// was. A call holds the VAE it chose (a shared_ptr) for its whole run, so
// another call switching VAEs never changes one in flight.
//
// Overflow: a VAE running in f16/bf16 (SDXL's original VAE in fp16 is the
// known case) can produce Inf/NaN. A decode (or an edit's encode) whose output
// is not finite runs again in f32, on an f32 copy of that VAE made from its
// placed weights on first need and kept with the VAE (A1111's "--no-half-vae"
// fallback; its weights are the half ones widened, exactly as A1111's
// model.to(float32)). The copy costs 4 bytes per VAE parameter (335 MB for the
// SD/SDXL VAE) while that VAE is in use.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "models/vae.h"

namespace diffuse {

struct VaeInUse {
  std::shared_ptr<const Vae> vae;
  std::string path;  // "" for the model's own VAE
  std::string name;  // A1111 "VAE" (file name), "" for the model's own
  std::string hash;  // A1111 "VAE hash" (sha256[:10] of the file), "" for the model's own
};

// How an override VAE is placed: the model's dtype rule and device.
struct VaePlacement {
  VaeConfig model_config;  // the model's own VAE config (latent scaling, default architecture)
  DType model_dtype = DType::kF32;  // the UNet's weight dtype (Pipeline::Impl::dtype)
  // FamilySpec::vae_dtype of the model's family for a config.
  std::function<DType(DType compute, const VaeConfig&)> vae_dtype;
  Device device = Device::kCPU;
};

// Reads `path` (models/vae_file.h) and places it as the model's VAE would be.
// Throws as read_vae_file and Vae's constructor do (Error(kIo) naming a missing
// or mis-shaped tensor).
VaeInUse load_vae_override(const std::string& path, const VaePlacement& placement);

// An f32 copy of `vae` from its placed weights (same config and device).
std::shared_ptr<const Vae> vae_f32_copy(const Vae& vae);

// True when every value of `t` (any float dtype, any device) is finite.
bool all_finite(const Tensor& t);

class VaeOverrides {
 public:
  // The model's own VAE for path "", else the one `path` names (read when it
  // is not the one kept). Thread-safe.
  VaeInUse choose(const Vae& own, const std::string& path, const VaePlacement& placement);
  // The f32 copy of a chosen VAE, made once per VAE and kept with it.
  std::shared_ptr<const Vae> f32_of(const VaeInUse& use);

 private:
  std::mutex mu_;
  struct Kept {
    std::string path;
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    VaeInUse use;
    std::shared_ptr<const Vae> f32;
  };
  std::optional<Kept> kept_;
  std::shared_ptr<const Vae> own_f32_;
  const Vae* own_ = nullptr;
};

// The VAE's run for one image with the overflow fallback: `run(vae, input)`
// with the input in that VAE's dtype; when the VAE is not f32 and the result
// is not finite, again with the f32 copy and an f32 input, and a warning
// (once per call) in `warnings`. `input` is f32. Decode returns the image as
// f32 on the CPU.
Tensor decode_with_fallback(VaeOverrides& overrides, const VaeInUse& use, const Tensor& z,
                            const std::function<Tensor(const Vae&, const Tensor&)>& run,
                            std::vector<std::string>& warnings);
Vae::Encoded encode_with_fallback(VaeOverrides& overrides, const VaeInUse& use, const Tensor& x,
                                  const std::function<Vae::Encoded(const Vae&, const Tensor&)>& run,
                                  std::vector<std::string>& warnings);

// The warning a fallback adds ("decode" or "encode").
std::string vae_fallback_warning(DType dtype, const char* what);

}  // namespace diffuse
