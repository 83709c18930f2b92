// Tensor: a cheap value handle to shared storage plus shape, strides and dtype.
//
// Copying a Tensor copies the handle, not the data (like mlx::array or
// torch.Tensor). Views (reshape of a contiguous tensor, permute, slice,
// transpose) share storage. Storage owns its bytes through a deleter, so an
// mmap'd checkpoint can back tensors with zero copies.
//
// Dimensions are in PyTorch order (NCHW). Strides are in elements.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace diffuse {

enum class Device : uint8_t { kCPU, kCUDA };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2,4,64,64)"
int64_t shape_numel(const Shape& s);

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::kCPU;
  std::function<void(void*)> deleter;  // called with data; may be empty (borrowed memory)
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

// A device allocator's counters (bench, tests): Backend::memory_stats(). The
// host's come from the one host allocator (core/host_allocator.h).
struct DeviceMemoryStats {
  uint64_t malloc_calls = 0;       // blocks taken from the system / driver (cache misses)
  uint64_t alloc_calls = 0;        // allocations served
  size_t reserved_bytes = 0;       // held from the system / driver (in use + cached)
  size_t in_use_bytes = 0;
  size_t peak_reserved_bytes = 0;  // high-water marks since start or reset_peak_memory_stats()
  size_t peak_in_use_bytes = 0;
};

// Allocates device memory through the device's Backend: host memory from the
// host allocator (64-byte aligned), CUDA memory from the CUDA backend's
// caching allocator (throws kUnsupported when there is none).
std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device);

// Copies bytes between any two devices (through the non-CPU one's Backend).
// Every host<->device transfer goes through here and is counted.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

// Host<->device transfers made by the calling thread since it started (the
// pipeline reports those of its denoising loop: none).
struct TransferStats {
  uint64_t host_to_device = 0, device_to_host = 0, bytes = 0;
  uint64_t count() const { return host_to_device + device_to_host; }
};
TransferStats transfer_stats();

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (defined() == false), used for "no bias"

  // Factories. empty() leaves memory uninitialised.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::kCPU);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::kCPU);
  static Tensor full(const Shape& shape, float value, DType dtype = DType::kF32, Device device = Device::kCPU);
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);  // f32, CPU
  static Tensor from_ids(const std::vector<int64_t>& values, const Shape& shape);   // i64, CPU
  // Zero-copy wrap of external memory; `owner` keeps it alive (e.g. an mmap).
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner,
                          Device device = Device::kCPU);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end; throws on out of range
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::kCPU; }
  bool is_contiguous() const;
  // 4-D [N, C, H, W] stored channels-last: NHWC in memory, strides (H*W*C, 1, W*C, C)
  // (size-1 dims may have any stride). A tensor can be both this and contiguous.
  bool is_channels_last() const;
  int64_t offset() const { return offset_; }  // in elements
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to element [0,...,0]. data<T>() checks that sizeof(T) matches the dtype.
  void* raw_data() const;
  template <class T>
  T* data() const {
    check_element_size(sizeof(T));
    return static_cast<T*>(raw_data());
  }

  // Copies / conversions. These return *this when nothing needs doing.
  Tensor contiguous() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  Tensor clone() const;  // always a fresh contiguous copy

  // Views (no copy) where the layout allows; reshape copies a non-contiguous tensor.
  Tensor reshape(const Shape& shape) const;  // one dim may be -1
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;  // python semantics, negatives ok
  Tensor select(int dim, int64_t index) const;  // removes dim
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  Tensor flatten(int start_dim = 0, int end_dim = -1) const;

  // Host-side helpers (copy to CPU/f32 first). Mainly for tests and small tensors.
  std::vector<float> to_f32_vector() const;
  std::vector<int64_t> to_i64_vector() const;
  float item() const;  // numel()==1

  std::string str() const;  // "Tensor(f32, cpu, (2,4,64,64))"

 private:
  void check_element_size(size_t size) const;

  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;
  Shape shape_;
  std::vector<int64_t> strides_;
  DType dtype_ = DType::kF32;

  friend Tensor make_view(const Tensor& base, Shape shape, std::vector<int64_t> strides, int64_t offset);
};

// Puts tensors on `device` in one allocation (256-byte aligned slots) instead of
// one each: no per-block rounding (device blocks round to 2 MiB) and one entry
// in the allocator for a model's weights. make(i) returns tensor i, dense
// (contiguous or channels-last), on `device`; it is called once per tensor, in
// order, and its result is copied in and dropped, so one temporary lives at a
// time. sizes[i] must be make(i)'s numel() * dtype size.
std::vector<Tensor> pack_on_device(const std::vector<size_t>& sizes, Device device,
                                   const std::function<Tensor(size_t)>& make);

std::vector<int64_t> contiguous_strides(const Shape& shape);
// Builds a view sharing base's storage (used by backends).
Tensor make_view(const Tensor& base, Shape shape, std::vector<int64_t> strides, int64_t offset);

}  // namespace diffuse
