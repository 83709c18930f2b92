// The weights contract every model (UNet, CLIP text encoder, VAE) follows.
//
//  - A model declares its tensors once, as specs: (diffusers name, shape), in
//    the order it places them (its expected_tensors()).
//  - One check compares a name -> tensor map with the specs. Every problem is
//    Error(kIo), whatever the model: the file does not hold what the
//    architecture needs. Messages name the tensor and the shape it must have:
//      missing 'conv_in.weight' (320,4,3,3)
//      'conv_in.weight' has shape (320,9,3,3), expected (320,4,3,3)
//      'conv_in.weight' has dtype i32, expected a floating type
//      unexpected 'add_embedding.linear_1.weight' (4,4)   (models that reject extras)
//  - WeightTable keeps a placed model's weights by name: get one, replace one
//    (LoRA patches weights this way), place them all again.
//  - random_weights() is the one initialiser of benchmark / test weights, and
//    convert_weights() the one conversion of loaded weights to a compute dtype.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"

namespace diffuse {

// (diffusers name, shape) of every tensor a model needs, in placement order.
using WeightSpecs = std::vector<std::pair<std::string, Shape>>;

// Whether names the specs do not list are an error. The UNet rejects them (an
// extra name means a wrong key table); the text encoders and the VAE allow them
// (older files carry buffers such as position_ids).
enum class ExtraWeights { kAllow, kReject };

// Throws Error(kIo) listing every missing, mis-shaped or non-floating tensor
// (and, with kReject, every unexpected one): "<model>: <problem>" for one,
// "<model>: N weight problems:" and up to 8 lines for several.
void check_weights(const TensorMap& weights, const WeightSpecs& specs, const std::string& model,
                   ExtraWeights extras = ExtraWeights::kAllow);

// A model's weights, placed (dtype, device, the backend's preferred layout) and
// kept by name. Models bind their forward-pass slots from it and bind again
// after a replace().
class WeightTable {
 public:
  WeightTable() = default;
  // Checks `source` against `specs` (check_weights), then places every tensor in
  // spec order: on a GPU they share one allocation (core/ops.h place_weights).
  WeightTable(std::string model, WeightSpecs specs, const TensorMap& source, DType dtype, Device device,
              ExtraWeights extras);

  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  // The placed tensor; Error(kInvalidArgument) naming an unknown name.
  const Tensor& get(const std::string& name) const;
  // The placed tensor, or an undefined one when `name` is not a spec.
  Tensor find(const std::string& name) const;
  // Replaces one weight by `value` (any floating dtype and device, the spec's
  // shape; Error(kInvalidArgument) otherwise), placed like the others. Views the
  // model made of the old tensor keep the old values until it binds again.
  void replace(const std::string& name, const Tensor& value);
  // Places every weight again from its current values (e.g. after the backend's
  // preferred layout changed).
  void place_again();
  // Gives the device memory up: every weight becomes an exact host copy (its
  // placed dtype, contiguous) until unpark() places them on the device again,
  // as one allocation like the first time. For a model that makes room for
  // another between passes (pipeline/refiner.cpp). No-op for CPU weights.
  // unpark() throws what the placement throws (kOutOfMemory) and then leaves
  // the table parked, unchanged.
  void park();
  void unpark();
  bool parked() const { return parked_; }
  size_t bytes() const;  // the weights' size in their dtype

  const WeightSpecs& specs() const { return specs_; }
  const std::string& model() const { return model_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t size() const { return tensors_.size(); }

 private:
  size_t index_of(const std::string& name) const;
  std::string model_;
  WeightSpecs specs_;
  std::map<std::string, size_t> index_;
  std::vector<Tensor> tensors_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
  bool parked_ = false;
};

// Deterministic pseudo-random weights for every spec, never zeros: values
// uniform with standard deviation 0.02 (GPT-2 / CLIP's initializer_range), norm
// scales (1-D ".weight" tensors) 1 +- that. The values depend only on `seed`
// and each tensor's position in `specs` (not on the thread count); they are
// written straight in `dtype`. For benchmarks (speed does not depend on values)
// and tests.
TensorMap random_weights(const WeightSpecs& specs, uint64_t seed, DType dtype);

// Converts every floating CPU tensor to `dtype` in place, once, before a model
// places it. A tensor read from an mmap'd checkpoint hands its pages back to
// the kernel as soon as it is converted, so a 16-bit file does not stay
// resident next to its converted copy. Tensors on other devices are left to
// the model's placement.
void convert_weights(TensorMap& weights, DType dtype);

}  // namespace diffuse
