// Live previews of a running generation: which method makes them (TAESD when
// a decoder for the model's family is found, else the cheap latent -> RGB
// approximation, Pipeline::preview_rgb) and at which steps (a period, and a
// ceiling on the time previews may take next to the denoising). docs/previews.md.
//
// One LivePreviewer per server; each job opens a Session from its progress
// callback's thread. Decoders are loaded on first use for each family and
// device and kept; a missing or broken decoder is reported once (stderr,
// "[preview] ...") and the cheap approximation is used instead.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "models/taesd.h"
#include "pipeline/pipeline.h"

namespace diffuse {

enum class PreviewMethod {
  kAuto,   // TAESD when a decoder for the family is found, else cheap
  kCheap,  // Pipeline::preview_rgb: a linear map at latent resolution (A1111 "Approx cheap")
  kTaesd,  // TAESD, falling back to cheap (with a log line) when there is no decoder
};
const char* preview_method_name(PreviewMethod m);  // "auto", "cheap", "taesd"
// "auto" | "cheap" | "taesd"; throws kInvalidArgument naming the choices.
PreviewMethod preview_method_from_name(const std::string& name);

struct PreviewOptions {
  bool enabled = true;  // A1111's live_previews_enable: false, no live previews
  PreviewMethod method = PreviewMethod::kAuto;
  // Searched in order for taesd_decoder / taesdxl_decoder (models/taesd.h find_taesd_decoder).
  std::vector<std::string> taesd_dirs;
  // A preview at steps that are multiples of this; 0 or less: no live previews
  // (A1111's show_progress_every_n_steps; its -1 shows only the result).
  int every_n_steps = 1;
  // The time previews may take, as a share of the time spent denoising: a step
  // that is due gets a preview only while (previews so far + this one's
  // expected cost) <= max_overhead x (denoising time so far). 0: no ceiling.
  double max_overhead = 0.1;
  void validate() const;  // throws kInvalidArgument
};

struct LivePreview {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width*height*3
  PreviewMethod method = PreviewMethod::kCheap;  // kCheap or kTaesd: what made it
  double seconds = 0;       // what making it took (decode, host copy and RGB conversion)
};

class LivePreviewer {
 public:
  explicit LivePreviewer(PreviewOptions options = {});

  PreviewOptions options() const;
  // New options for the jobs that start afterwards; forgets loaded decoders and
  // notes, so a decoder put in place since is found.
  void set_options(PreviewOptions options);

  // The decoder previews for `family` on `device` use, loading it on first
  // call; nullptr when the method is cheap or no usable decoder exists (why:
  // note()).
  std::shared_ptr<const TaesdDecoder> decoder(Family family, Device device);
  // Why the last decoder() for `family` gave none ("" when it gave one).
  std::string note(Family family) const;

  // RGB of image `index` of `latents` by TAESD: clamp(decode, 0, 1) * 255, rounded.
  static std::vector<uint8_t> taesd_rgb(const TaesdDecoder& decoder, const Tensor& latents, int index, int* width,
                                        int* height);

  // One job's previews.
  class Session {
   public:
    // Whether step s.step gets a preview (the period, then the time ceiling).
    bool due(const StepProgress& s) const;
    // The preview of image `index` of s.latents; records its cost. A TAESD
    // failure is logged and the session goes on with the cheap approximation.
    LivePreview make(const StepProgress& s, int index = 0);
    PreviewMethod method() const { return decoder_ ? PreviewMethod::kTaesd : PreviewMethod::kCheap; }

   private:
    friend class LivePreviewer;
    LivePreviewer* owner_ = nullptr;
    Family family_ = Family::kSD1;
    PreviewOptions options_;
    std::shared_ptr<const TaesdDecoder> decoder_;
    std::vector<float> factors_;  // the model's own cheap-preview factors (ModelInfo::preview_factors)
    double spent_s_ = 0;     // previews so far
    double estimate_s_ = 0;  // expected cost of the next one; 0 while unknown
  };
  // A session for a job of `family` whose latents live on `device`; the cheap
  // approximation uses `factors` when given (ModelInfo::preview_factors).
  Session start(Family family, Device device, std::vector<float> factors = {});

 private:
  // Seconds per latent pixel of the last preview by (method, device): the first
  // preview of a job is estimated from the previous jobs'.
  double cost_per_pixel(PreviewMethod m, Device d) const;
  void record_cost(PreviewMethod m, Device d, double per_pixel);

  mutable std::mutex mu_;
  PreviewOptions options_;
  std::map<std::pair<Family, Device>, std::shared_ptr<const TaesdDecoder>> decoders_;
  std::map<std::pair<Family, Device>, bool> tried_;
  std::map<Family, std::string> notes_;
  std::map<std::pair<PreviewMethod, Device>, double> cost_;
};

}  // namespace diffuse
