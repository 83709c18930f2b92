// The weights contract (weights.h): checks, the placed table, random init, conversion.
#include "models/weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/ops.h"
#include "core/thread_pool.h"

namespace diffuse {

namespace {

constexpr size_t kListed = 8;  // problems named in one message

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Hands the memory pages wholly inside t's bytes back to the kernel. For a
// tensor read from an mmap'd checkpoint they are clean file pages: the kernel
// drops them, and a later read would fetch them from the file again, so the
// data never changes. MADV_PAGEOUT (not DONTNEED) so that heap memory is never
// zeroed: without swap the kernel just leaves such pages alone.
void release_pages(const Tensor& t) {
#ifdef MADV_PAGEOUT
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.raw_data());
  const uintptr_t lo = (begin + page - 1) / page * page, hi = (begin + t.nbytes()) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_PAGEOUT);
#else
  (void)t;
#endif
}

}  // namespace

void check_weights(const TensorMap& weights, const WeightSpecs& specs, const std::string& model,
                   ExtraWeights extras) {
  std::vector<std::string> problems;
  std::set<std::string> wanted;
  for (const auto& [name, shape] : specs) {
    wanted.insert(name);
    auto it = weights.find(name);
    if (it == weights.end()) {
      problems.push_back("missing '" + name + "' " + shape_str(shape));
    } else if (it->second.shape() != shape) {
      problems.push_back("'" + name + "' has shape " + shape_str(it->second.shape()) + ", expected " +
                         shape_str(shape));
    } else if (!is_floating(it->second.dtype())) {
      problems.push_back("'" + name + "' has dtype " + dtype_name(it->second.dtype()) +
                         ", expected a floating type");
    }
  }
  if (extras == ExtraWeights::kReject) {
    for (const auto& [name, t] : weights)
      if (!wanted.count(name)) problems.push_back("unexpected '" + name + "' " + shape_str(t.shape()));
  }
  if (problems.empty()) return;
  if (problems.size() == 1) throw_error(ErrorCode::kIo, model + ": " + problems[0]);
  std::ostringstream ss;
  ss << model << ": " << problems.size() << " weight problems:";
  for (size_t i = 0; i < problems.size() && i < kListed; ++i) ss << "\n  " << problems[i];
  if (problems.size() > kListed) ss << "\n  ... and " << problems.size() - kListed << " more";
  throw_error(ErrorCode::kIo, ss.str());
}

// ---- WeightTable --------------------------------------------------------------

WeightTable::WeightTable(std::string model, WeightSpecs specs, const TensorMap& source, DType dtype,
                         Device device, ExtraWeights extras)
    : model_(std::move(model)), specs_(std::move(specs)), dtype_(dtype), device_(device) {
  DIFFUSE_CHECK_ARG(is_floating(dtype), model_ + ": weights need a floating dtype, got " + dtype_name(dtype));
  check_weights(source, specs_, model_, extras);
  std::vector<Tensor> src;
  src.reserve(specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i) {
    index_[specs_[i].first] = i;
    src.push_back(source.at(specs_[i].first));
  }
  tensors_ = place_weights(src, dtype_, device_);
}

size_t WeightTable::index_of(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw_error(ErrorCode::kInvalidArgument,
                model_ + ": no weight named '" + name + "' (" + std::to_string(specs_.size()) + " weights)");
  return it->second;
}

const Tensor& WeightTable::get(const std::string& name) const { return tensors_[index_of(name)]; }

Tensor WeightTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? Tensor() : tensors_[it->second];
}

void WeightTable::replace(const std::string& name, const Tensor& value) {
  const size_t i = index_of(name);
  DIFFUSE_CHECK_ARG(value.defined() && value.shape() == specs_[i].second,
                    model_ + ": replacement for '" + name + "' has shape " +
                        (value.defined() ? shape_str(value.shape()) : std::string("(undefined)")) + ", expected " +
                        shape_str(specs_[i].second));
  DIFFUSE_CHECK_ARG(is_floating(value.dtype()), model_ + ": replacement for '" + name + "' has dtype " +
                                                    dtype_name(value.dtype()) + ", expected a floating type");
  tensors_[i] = place_weights({value}, dtype_, device_)[0];
}

void WeightTable::place_again() { tensors_ = place_weights(tensors_, dtype_, device_); }

void WeightTable::park() {
  if (parked_ || device_ == Device::kCPU) return;
  std::vector<Tensor> host;
  host.reserve(tensors_.size());
  for (const Tensor& t : tensors_) host.push_back(t.to(Device::kCPU).contiguous());
  tensors_ = std::move(host);  // the device allocation goes with the last view of it
  parked_ = true;
}

void WeightTable::unpark() {
  if (!parked_) return;
  tensors_ = place_weights(tensors_, dtype_, device_);
  parked_ = false;
}

size_t WeightTable::bytes() const {
  size_t n = 0;
  for (const Tensor& t : tensors_) n += static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  return n;
}

// ---- random init ----------------------------------------------------------------

TensorMap random_weights(const WeightSpecs& specs, uint64_t seed, DType dtype) {
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("[random_weights] dtype must be floating, got ") + dtype_name(dtype));
  constexpr int64_t kChunk = 1 << 16;
  const float half_width = 0.02f * std::sqrt(3.0f);  // U(-a, a) has standard deviation a / sqrt(3)
  const size_t esize = dtype_size(dtype);
  TensorMap out;
  for (size_t ti = 0; ti < specs.size(); ++ti) {
    const auto& [name, shape] = specs[ti];
    // Norm scales sit near 1 so activations keep their scale through the network.
    const float centre = shape.size() == 1 && ends_with(name, ".weight") ? 1.0f : 0.0f;
    Tensor t = Tensor::empty(shape, dtype);
    char* base = static_cast<char*>(t.raw_data());
    const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
    parallel_for(chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> buf(kChunk);
      for (int64_t ci = begin; ci < end; ++ci) {
        // splitmix64 seeded per (seed, tensor, chunk): the values do not depend on the thread count.
        uint64_t s = seed * 0x9E3779B97F4A7C15ull + ti * 0xBF58476D1CE4E5B9ull +
                     static_cast<uint64_t>(ci) * 0x94D049BB133111EBull;
        const int64_t lo = ci * kChunk, count = std::min(kChunk, n - lo);
        for (int64_t i = 0; i < count; ++i) {
          uint64_t z = (s += 0x9E3779B97F4A7C15ull);
          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
          z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
          z ^= z >> 31;
          const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
          buf[i] = centre + u * half_width;
        }
        // Straight into the target dtype: no f32 copy of a multi-GB model.
        convert(buf.data(), DType::kF32, base + lo * esize, dtype, static_cast<size_t>(count));
      }
    });
    out.emplace(name, t);
  }
  return out;
}

// ---- conversion -----------------------------------------------------------------

void convert_weights(TensorMap& weights, DType dtype) {
  DIFFUSE_CHECK_ARG(is_floating(dtype), std::string("[convert_weights] dtype must be floating, got ") + dtype_name(dtype));
  for (auto& [name, t] : weights) {
    if (t.dtype() == dtype || !is_floating(t.dtype()) || t.device() != Device::kCPU) continue;
    Tensor converted = t.to(dtype);  // runs on the thread pool (cpu cast)
    release_pages(t);
    t = converted;
  }
}

}  // namespace diffuse
