#include "core/runtime_options.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <optional>

#include "core/error.h"

namespace diffuse {
namespace {

// The one getenv of the project (HOME / XDG_* defaults aside).
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string lower(std::string v) {
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  return v;
}

// A boolean variable: unset or empty keeps `fallback`.
bool flag(const char* name, bool fallback) {
  const std::string v = lower(env(name));
  if (v.empty()) return fallback;
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  throw_error(ErrorCode::kInvalidArgument, std::string(name) + "='" + v + "': expected 1 or 0 (true/false, yes/no, on/off)");
}

std::string choice(const char* name, const std::string& fallback, std::initializer_list<const char*> allowed) {
  const std::string v = lower(env(name));
  if (v.empty()) return fallback;
  std::string list;
  for (const char* a : allowed) {
    if (v == a) return v;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw_error(ErrorCode::kInvalidArgument, std::string(name) + "='" + v + "': expected one of " + list);
}

int integer(const char* name, int fallback, int lo, int hi) {
  const std::string v = env(name);
  if (v.empty()) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (end == v.c_str() || *end != '\0' || x < lo || x > hi)
    throw_error(ErrorCode::kInvalidArgument, std::string(name) + "='" + v + "': expected an integer from " +
                                                 std::to_string(lo) + " to " + std::to_string(hi));
  return static_cast<int>(x);
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

RuntimeOptions RuntimeOptions::from_env() {
  RuntimeOptions o;
  o.cuda_graph = flag("DIFFUSE_CUDA_GRAPH", o.cuda_graph);
  o.cuda_log = flag("DIFFUSE_CUDA_LOG", o.cuda_log);
  o.cuda_log_peak = flag("DIFFUSE_CUDA_LOG_PEAK", o.cuda_log_peak);
  o.cuda_layout = choice("DIFFUSE_CUDA_LAYOUT", o.cuda_layout, {"nhwc", "nchw"});
  o.cuda_conv = choice("DIFFUSE_CUDA_CONV", o.cuda_conv, {"auto", "gemm"});
  o.cuda_tf32 = flag("DIFFUSE_CUDA_TF32", o.cuda_tf32);
  o.cuda_memory_limit_mb = integer("DIFFUSE_CUDA_MEMORY_LIMIT_MB", o.cuda_memory_limit_mb, 0, 1 << 24);
  o.cuda_attn_single_buffer = flag("DIFFUSE_CUDA_ATTN_SINGLE_BUFFER", o.cuda_attn_single_buffer);
  o.profile = flag("DIFFUSE_PROFILE", o.profile);
  o.conv_cache = choice("DIFFUSE_CONV_CACHE", o.conv_cache, {"0", "f32", "all"});
  o.pool_mb = integer("DIFFUSE_POOL_MB", o.pool_mb, 0, 1 << 20);
  o.omp_wait_policy = env("OMP_WAIT_POLICY");
  o.data_dir = env("DIFFUSE_DATA_DIR");
  o.hf_endpoint = trim(env("HF_ENDPOINT"));
  o.hf_token = trim(env("HF_TOKEN"));
  if (o.hf_token.empty()) o.hf_token = trim(env("HUGGING_FACE_HUB_TOKEN"));
  o.hf_token_path = env("HF_TOKEN_PATH");
  o.hf_home = env("HF_HOME");
  o.hf_hub_cache = env("HF_HUB_CACHE");
  if (o.hf_hub_cache.empty()) o.hf_hub_cache = env("HUGGINGFACE_HUB_CACHE");
  {  // huggingface_hub's rule: these spellings are true, anything else false
    const std::string v = lower(env("HF_HUB_OFFLINE"));
    o.hf_hub_offline = v == "1" || v == "true" || v == "yes" || v == "on";
  }
  return o;
}

namespace {
std::mutex g_options_mu;
std::optional<RuntimeOptions> g_options;
}  // namespace

RuntimeOptions runtime_options() {
  std::lock_guard<std::mutex> lk(g_options_mu);
  if (!g_options) g_options = RuntimeOptions::from_env();
  return *g_options;
}

void set_runtime_options(const RuntimeOptions& options) {
  std::lock_guard<std::mutex> lk(g_options_mu);
  g_options = options;
}

const std::vector<RuntimeOptionInfo>& runtime_option_table() {
  static const std::vector<RuntimeOptionInfo> t = {
      {"DIFFUSE_CUDA_GRAPH", "1 | 0", "1", "Capture the UNet step as a CUDA graph and replay it (0: every step eager)."},
      {"DIFFUSE_CUDA_LOG", "1 | 0", "0", "Log cuDNN plan choices and CUDA graph capture failures to stderr."},
      {"DIFFUSE_CUDA_LOG_PEAK", "1 | 0", "0", "Log each new CUDA memory high-water mark (16 MiB apart) to stderr."},
      {"DIFFUSE_CUDA_LAYOUT", "nhwc | nchw", "nhwc", "Memory layout of f16/bf16 activations on CUDA."},
      {"DIFFUSE_CUDA_CONV", "auto | gemm", "auto", "CUDA convolutions: cuDNN with a GEMM fallback, or im2col + GEMM only."},
      {"DIFFUSE_CUDA_TF32", "1 | 0", "1",
       "TF32 convolutions for the f32 VAE inside an fp16 pipeline, as PyTorch's default (0: exact f32)."},
      {"DIFFUSE_CUDA_MEMORY_LIMIT_MB", "integer", "0",
       "Most MiB of GPU memory diffuse reserves per device (0: all there is): share a GPU, or see what a smaller "
       "card would do (models that do not fit beside each other take turns: docs/refiner.md)."},
      {"DIFFUSE_CUDA_ATTN_SINGLE_BUFFER", "1 | 0", "0", "Flash attention without cp.async double buffering (A/B runs)."},
      {"DIFFUSE_PROFILE", "1 | 0", "0", "CPU backend: print a per-op time table at exit."},
      {"DIFFUSE_CONV_CACHE", "0 | f32 | all", "f32",
       "CPU conv weights kept in oneDNN's blocked layout: none, those already in the compute dtype, or all "
       "(bf16 weights widened: faster bf16, fp32's memory)."},
      {"DIFFUSE_POOL_MB", "integer", "384", "MiB of freed host blocks the host allocator keeps for reuse."},
      {"OMP_WAIT_POLICY", "PASSIVE | ACTIVE", "PASSIVE",
       "oneDNN's OpenMP threads: sleep (PASSIVE, set by diffuse unless given) or spin while waiting."},
      {"DIFFUSE_DATA_DIR", "path", "",
       "Looked in first for diffuse's data (tokenizers, the demo model): set by the Python module for the build "
       "or install it belongs to."},
      {"HF_ENDPOINT", "URL", "https://huggingface.co", "The Hugging Face hub to download from."},
      {"HF_TOKEN", "token", "", "Hub token for gated models (also HUGGING_FACE_HUB_TOKEN)."},
      {"HF_TOKEN_PATH", "path", "$HF_HOME/token", "File holding the hub token."},
      {"HF_HOME", "path", "${XDG_CACHE_HOME:-~/.cache}/huggingface", "Hugging Face home folder."},
      {"HF_HUB_CACHE", "path", "$HF_HOME/hub", "The hub cache read and filled by diffuse (also HUGGINGFACE_HUB_CACHE)."},
      {"HF_HUB_OFFLINE", "1 | 0", "0", "Never touch the network; use only what the cache holds."},
  };
  return t;
}

std::string runtime_options_help() {
  size_t w = 0;
  for (const RuntimeOptionInfo& r : runtime_option_table()) w = std::max(w, std::string(r.variable).size());
  std::string out = "Environment variables read by diffuse (read once, at first use):\n\n";
  for (const RuntimeOptionInfo& r : runtime_option_table()) {
    out += "  " + std::string(r.variable) + std::string(w - std::string(r.variable).size() + 2, ' ') + r.meaning + "\n";
    out += std::string(w + 4, ' ') + "values: " + r.values + "; default: " +
           (r.default_value[0] ? r.default_value : "(none)") + "\n";
  }
  return out;
}

}  // namespace diffuse
