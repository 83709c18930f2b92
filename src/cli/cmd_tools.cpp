// diffuse make-checkpoint: a random-weight single-file checkpoint with exactly
// the tensor names and shapes of a key list (shared/fixtures/baselines/
// single_file_keys_*.tsv: "name<TAB>[d0, d1, ...]<TAB>dtype" per line). It
// lets other engines (stable-diffusion.cpp) be timed on the same architecture
// as `diffuse bench` without downloading real weights. Values are never all
// zeros: weights and biases ~ N(0, 0.02), 1-D norm weights ~ 1 + N(0, 0.02)
// (every 1-D ".weight" in an SD single-file checkpoint is a norm gain).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "cli/cli.h"
#include "core/error.h"
#include "io/checkpoint.h"

namespace diffuse::cli {
namespace {

struct MakeCheckpointOptions {
  std::string keys, out, dtype = "f16";
  uint64_t seed = 0;
};

// splitmix64 then Box-Muller: fast, seedable and the same on every machine.
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  float next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = (static_cast<double>(bits() >> 11) + 0.5) * 0x1.0p-53;
    double u2 = static_cast<double>(bits() >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1)), a = 6.283185307179586 * u2;
    spare_ = static_cast<float>(r * std::sin(a));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(a));
  }

 private:
  uint64_t bits() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
  float spare_ = 0;
  bool has_spare_ = false;
};

Shape parse_shape(const std::string& text, const std::string& name) {
  // "[320, 4, 3, 3]"
  if (text.size() < 2 || text.front() != '[' || text.back() != ']') {
    throw_error(ErrorCode::kInvalidArgument, "[make-checkpoint] bad shape '" + text + "' for " + name);
  }
  Shape shape;
  std::stringstream ss(text.substr(1, text.size() - 2));
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    shape.push_back(std::stoll(item));
  }
  return shape;
}

int run_make_checkpoint(const MakeCheckpointOptions& o) {
  DType dtype;
  if (o.dtype == "f16") {
    dtype = DType::kF16;
  } else if (o.dtype == "f32") {
    dtype = DType::kF32;
  } else {
    throw_error(ErrorCode::kInvalidArgument, "[make-checkpoint] --dtype must be f16 or f32, got " + o.dtype);
  }
  std::ifstream in(o.keys);
  if (!in) throw_error(ErrorCode::kNotFound, "[make-checkpoint] cannot open key list " + o.keys);
  NormalRng rng(o.seed);
  TensorMap tensors;
  std::string line;
  int64_t params = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    if (t1 == std::string::npos) {
      throw_error(ErrorCode::kInvalidArgument, "[make-checkpoint] expected 'name<TAB>[shape]' in: " + line);
    }
    std::string name = line.substr(0, t1);
    Shape shape = parse_shape(line.substr(t1 + 1, t2 == std::string::npos ? std::string::npos : t2 - t1 - 1), name);
    const bool norm_gain = shape.size() == 1 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    const float mean = norm_gain ? 1.0f : 0.0f;
    Tensor t = Tensor::empty(shape, dtype);
    int64_t n = t.numel();
    if (dtype == DType::kF16) {
      auto* p = static_cast<uint16_t*>(t.raw_data());
      for (int64_t i = 0; i < n; ++i) p[i] = f32_to_f16(mean + 0.02f * rng.next());
    } else {
      float* p = t.data<float>();
      for (int64_t i = 0; i < n; ++i) p[i] = mean + 0.02f * rng.next();
    }
    params += n;
    tensors.emplace(std::move(name), std::move(t));
  }
  if (tensors.empty()) throw_error(ErrorCode::kInvalidArgument, "[make-checkpoint] no tensors listed in " + o.keys);
  save_safetensors(o.out, tensors, {{"format", "pt"}, {"generator", "diffuse make-checkpoint (random weights)"}});
  std::fprintf(stderr, "make-checkpoint: wrote %zu tensors, %.1f M parameters (%s) to %s\n", tensors.size(),
               params / 1e6, o.dtype.c_str(), o.out.c_str());
  return kExitOk;
}

}  // namespace

Action add_make_checkpoint(CLI::App& app) {
  auto o = std::make_shared<MakeCheckpointOptions>();
  CLI::App* c = app.add_subcommand("make-checkpoint", "Write a random-weight single-file checkpoint from a key list");
  c->footer("Example: diffuse make-checkpoint --keys shared/fixtures/baselines/single_file_keys_sd15.tsv "
            "--out sd15_random.safetensors");
  c->add_option("--keys", o->keys, "TSV of name, [shape], dtype (one tensor a line)")->required();
  c->add_option("--out", o->out, "Output .safetensors path")->required();
  c->add_option("--dtype", o->dtype, "f16 (default) or f32");
  c->add_option("--seed", o->seed, "Random seed (default 0)");
  return [o]() { return run_make_checkpoint(*o); };
}

}  // namespace diffuse::cli
