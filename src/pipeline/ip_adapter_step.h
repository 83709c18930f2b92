// Internal (pipeline): the IP-Adapter of one generate() call, as diffusers'
// StableDiffusion(XL)Pipeline with load_ip_adapter does it
// (prepare_ip_adapter_image_embeds / encode_image):
//  - each reference image through CLIPImageProcessor's steps (image/clip_preprocess.h)
//    and the CLIP vision encoder: image_embeds (base adapters) or hidden_states[-2]
//    (plus / full-face);
//  - negative embeddings: zeros (base), or the encoder's hidden_states[-2] of
//    all-zero pixel values (plus / full-face);
//  - the adapter's projection per image; the images' tokens concatenated;
//  - the UNet batch's tokens: [negative x n, positive x n] with CFG (the
//    negative tokens go with the negative prompt), positive x n without.
// The result is the UNetImagePrompt every UNet call of the run receives.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "adapters/ip_adapter.h"
#include "models/clip_vision.h"
#include "models/unet.h"
#include "pipeline/ip_adapter_params.h"

namespace diffuse {

// The adapter and encoder a pipeline has read: kept while calls ask for the
// same files (one pair at a time). Thread-safe.
class IpAdapterCache {
 public:
  struct Entry {
    std::shared_ptr<const IpAdapter> adapter;
    std::shared_ptr<const ClipVisionModel> encoder;
    std::string encoder_path;
  };
  Entry get(const std::string& adapter_path, const std::string& encoder_path, DType dtype, DType act_dtype,
            Device device);
  void clear();

 private:
  std::mutex mutex_;
  std::string key_;
  Entry entry_;
};

// The image encoder for `adapter` read from `adapter_path`: `given` when set
// (it must exist), else the first of <dir>/image_encoder, <dir>/../models/image_encoder
// and <dir>/../image_encoder whose widths fit the adapter. Throws
// Error(kNotFound) naming the file to get when there is none, and
// Error(kInvalidArgument) when the one found has other widths (saying which encoder the adapter needs).
std::string find_image_encoder(const std::string& adapter_path, const std::string& given, const IpAdapter& adapter);

struct ImagePromptInputs {
  const UNet* unet = nullptr;
  std::string model_label;  // "SDXL model 'name'" for the messages
  DType dtype = DType::kF32, act_dtype = DType::kF32;
  Device device = Device::kCPU;
  int images = 1;  // n; the UNet batch is 2n with CFG
  bool cfg = false;
};

// The UNet's image prompt for the call; nullptr when `p` is not active.
// Throws what the files and checks throw; the pipeline's models are untouched.
std::unique_ptr<UNetImagePrompt> prepare_image_prompt(IpAdapterCache& cache, const IpAdapterParams& p,
                                                      const ImagePromptInputs& in);

}  // namespace diffuse
