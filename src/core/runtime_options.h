// Run-time options from the environment: the one place that reads environment
// variables (apart from HOME / XDG_* look-ups of default folders). Every
// variable Diffuse honours is a row of runtime_option_table(), which
// `diffuse --help-env` prints and docs/runtime-options.md lists.
//
// runtime_options() reads the environment once, on first use; hot paths cache
// what they need in function statics, so a value is fixed for the process
// once used (libraries such as libgomp read theirs once too). Tests and
// embedders change options with set_runtime_options(), never with setenv.
#pragma once
#include <string>
#include <vector>

namespace diffuse {

struct RuntimeOptions {
  // CUDA backend
  bool cuda_graph = true;                // DIFFUSE_CUDA_GRAPH=0: every UNet step eager
  bool cuda_log = false;                 // DIFFUSE_CUDA_LOG=1: plan choices, capture failures
  bool cuda_log_peak = false;            // DIFFUSE_CUDA_LOG_PEAK=1: a line per new memory high-water mark
  std::string cuda_layout = "nhwc";      // DIFFUSE_CUDA_LAYOUT: nhwc | nchw (f16/bf16 activations)
  std::string cuda_conv = "auto";        // DIFFUSE_CUDA_CONV: auto (cuDNN, GEMM fallback) | gemm
  bool cuda_tf32 = true;                 // DIFFUSE_CUDA_TF32=0: exact f32 for the upcast VAE too
  int cuda_memory_limit_mb = 0;          // DIFFUSE_CUDA_MEMORY_LIMIT_MB: cap on device memory reserved (0: none)
  bool cuda_attn_single_buffer = false;  // DIFFUSE_CUDA_ATTN_SINGLE_BUFFER=1: A/B runs of flash attention
  // CPU backend
  bool profile = false;                  // DIFFUSE_PROFILE=1: per-op time table at exit
  std::string conv_cache = "f32";        // DIFFUSE_CONV_CACHE: 0 | f32 | all (blocked conv weights kept)
  int pool_mb = 384;                     // DIFFUSE_POOL_MB: free host blocks the allocator keeps
  std::string omp_wait_policy;           // OMP_WAIT_POLICY as the user set it ("" = unset: PASSIVE)
  // Hugging Face hub (huggingface_hub's names)
  std::string data_dir;                  // DIFFUSE_DATA_DIR: where tokenizer / demo data are looked for first
  std::string hf_endpoint;               // HF_ENDPOINT
  std::string hf_token;                  // HF_TOKEN, else HUGGING_FACE_HUB_TOKEN
  std::string hf_token_path;             // HF_TOKEN_PATH
  std::string hf_home;                   // HF_HOME
  std::string hf_hub_cache;              // HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE
  bool hf_hub_offline = false;           // HF_HUB_OFFLINE in {1, true, yes, on}

  // Reads every variable of the table. Throws kInvalidArgument naming the
  // variable for a value it cannot use (e.g. DIFFUSE_POOL_MB=lots).
  static RuntimeOptions from_env();
};

// The options of this process (from_env() on first call), by value.
RuntimeOptions runtime_options();
// Replaces them (tests, embedders). Values already cached by a hot path keep
// their old value; the pipeline reads cuda_graph at every generation.
void set_runtime_options(const RuntimeOptions& options);

struct RuntimeOptionInfo {
  const char* variable;
  const char* values;   // what it accepts
  const char* default_value;
  const char* meaning;
};
// Every variable, in the order `diffuse --help-env` prints them.
const std::vector<RuntimeOptionInfo>& runtime_option_table();
// The table as aligned text (for --help-env).
std::string runtime_options_help();

}  // namespace diffuse
