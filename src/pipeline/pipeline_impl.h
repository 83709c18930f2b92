// Internals of Pipeline shared by its source files (not a public header).
#pragma once
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/embedding.h"
#include "adapters/lora.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "pipeline/controlnet_step.h"
#include "pipeline/ip_adapter_step.h"
#include "pipeline/pipeline.h"
#include "pipeline/vae_override.h"
#include "sampling/scheduler.h"
#include "text/clip_tokenizer.h"

namespace diffuse {

// One text encoder and how the pipeline reads it. SD1/SD2 use one encoder's
// last_hidden_state (final LayerNorm applied); SDXL concatenates the
// penultimate hidden states of two encoders and takes the pooled projection
// from the second. Families differ only in this list, never in code paths.
struct TextEncoderSlot {
  std::unique_ptr<ClipTokenizer> tokenizer;
  std::unique_ptr<ClipTextModel> model;
  bool penultimate = false;     // hidden_states[-2] without final LN (SDXL) vs last_hidden_state
  bool provides_pooled = false; // its text_embeds feed the UNet's text_time embedding
};

struct Pipeline::Impl {
  ModelInfo info;
  Device device = Device::kCPU;
  Precision precision = Precision::kFp32;
  DType dtype = DType::kF32;      // UNet / text encoder weight dtype
  DType act_dtype = DType::kF32;  // activation dtype (f32 for bf16 on the CPU: weight-only bf16)
  std::vector<TextEncoderSlot> encoders;
  std::unique_ptr<UNet> unet;
  std::unique_ptr<Vae> vae;
  nlohmann::json scheduler_config;  // as shipped (scheduler/scheduler_config.json)
  // scheduler_config parsed, with what the sampling layer needs to know of the
  // model (its family: align_your_steps' tables). Every pass builds its
  // Scheduler from this.
  SchedulerConfig sampling_config() const;
  bool force_zeros_for_empty_prompt = false;
  // The SDXL refiner's time ids: an aesthetic score instead of the target size
  // (model_index.json requires_aesthetics_score; single files: the family row's 5 time ids).
  bool requires_aesthetics_score = false;

  // The merged LoRA set (adapters/lora.h). generate() holds adapters_mutex
  // shared for its whole run with the set it asked for, and exclusively only
  // to change the set (pipeline.cpp hold_lora_set), so concurrent calls with
  // the same set share the merged weights.
  mutable std::shared_mutex adapters_mutex;
  LoraMerger loras;
  // Pipeline::park_weights: the weights are in host memory (changed under
  // adapters_mutex held exclusively, like the LoRA set).
  bool parked = false;
  size_t park();  // every model's WeightTable::park; the device bytes given up
  void unpark();

  // GenerationParams::vae: the VAE read for it (kept while calls ask for the
  // same one) and the f32 copies of the overflow fallback (vae_override.h).
  std::unique_ptr<VaeOverrides> vae_overrides = std::make_unique<VaeOverrides>();

  // Text conditioning for a batch: context [B, L, D] (in dtype, on device) and
  // pooled [B, P] (SDXL) or undefined.
  struct Conditioning {
    Tensor context;
    Tensor pooled;
    int encoder_runs = 0;  // distinct prompts encoded (each distinct prompt runs the encoders once)
  };
  // With `embeddings`, a prompt that names one uses its vectors (textual
  // inversion, A1111's rule); the set records which were used.
  Conditioning encode_prompts(const std::vector<std::string>& prompts, int clip_skip,
                              EmbeddingSet* embeddings = nullptr) const;
  // The embeddings a generation may use (adapters/embedding.h), checked against these encoders.
  EmbeddingSet embeddings_for(const GenerationParams& params) const;
  std::shared_ptr<EmbeddingCache> embedding_cache = std::make_shared<EmbeddingCache>();  // files read, by mtime
  // ControlNets read for GenerationParams::controlnets, kept while calls ask for them.
  std::shared_ptr<ControlNetCache> controlnet_cache = std::make_shared<ControlNetCache>();
  // The IP-Adapter and image encoder read for GenerationParams::ip_adapter.
  std::shared_ptr<IpAdapterCache> ip_adapter_cache = std::make_shared<IpAdapterCache>();
  Conditioning zero_conditioning(const Conditioning& like) const;
  // Pads the shorter conditioning with empty-prompt chunks so both have the same length (A1111).
  void match_lengths(Conditioning& a, Conditioning& b, int clip_skip) const;
  // SDXL's add_time_ids for a batch of n images ([uncond x n, cond x n] with
  // CFG), f32 on the host: [rows, 6] (sizes, crop, target size) or, with
  // requires_aesthetics_score, [rows, 5] (sizes, crop, aesthetic score).
  // `p` has its size resolved (time_ids.cpp).
  Tensor time_ids(const GenerationParams& p, int n, bool cfg) const;
};

// The base -> refiner hand-off of a call with GenerationParams::refiner (refiner.cpp).
GenerationResult generate_with_refiner(Pipeline& base, const Pipeline::Impl& base_impl,
                                       const GenerationParams& params, const ProgressCallback& progress);

// Loader entry points (model_loader.cpp).
std::unique_ptr<Pipeline::Impl> load_pipeline_impl(const std::string& path, const LoadOptions& options);
std::unique_ptr<Pipeline::Impl> random_pipeline_impl(const std::string& arch, const LoadOptions& options,
                                                     uint64_t seed);
// diffusers scheduler class name -> our sampler name ("PNDMScheduler" -> "pndm").
std::string sampler_for_scheduler_class(const std::string& class_name);

}  // namespace diffuse
