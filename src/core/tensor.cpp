// Tensor handles, storage and views. Data movement (copies, casts) goes
// through the device's Backend so that CUDA tensors never touch host code.
#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "core/ops.h"

namespace diffuse {

const char* device_name(Device d) { return d == Device::kCUDA ? "cuda" : "cpu"; }

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(s[i]);
  }
  return out + ")";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

Storage::~Storage() {
  if (deleter && data) deleter(data);
}

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device) {
  return backend_for(device).allocate(nbytes);
}

namespace {
thread_local TransferStats t_transfers;
}  // namespace

TransferStats transfer_stats() { return t_transfers; }

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::kCPU && src_dev == Device::kCPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  if (dst_dev != src_dev) {
    (dst_dev == Device::kCPU ? t_transfers.device_to_host : t_transfers.host_to_device) += 1;
    t_transfers.bytes += bytes;
  }
  backend_for(dst_dev == Device::kCPU ? src_dev : dst_dev).copy_bytes(dst, dst_dev, src, src_dev, bytes);
}

namespace {

void check_shape(const Shape& shape, const char* what) {
  for (int64_t d : shape)
    DIFFUSE_CHECK_ARG(d >= 0, std::string("[") + what + "] negative dimension in shape " + shape_str(shape));
}

int wrap_dim(int dim, int ndim, const char* op) {
  int d = dim < 0 ? dim + ndim : dim;
  DIFFUSE_CHECK_ARG(d >= 0 && d < ndim, std::string("[") + op + "] dim " + std::to_string(dim) +
                                            " out of range for a tensor of rank " + std::to_string(ndim));
  return d;
}

}  // namespace

Tensor make_view(const Tensor& base, Shape shape, std::vector<int64_t> strides, int64_t offset) {
  Tensor t;
  t.storage_ = base.storage_;
  t.dtype_ = base.dtype_;
  t.shape_ = std::move(shape);
  t.strides_ = std::move(strides);
  t.offset_ = offset;
  return t;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "empty");
  Tensor t;
  t.storage_ = allocate_storage(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  if (device != Device::kCPU) return zeros(shape, dtype, Device::kCPU).to(device);
  Tensor t = empty(shape, dtype, device);
  std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device device) {
  if (device != Device::kCPU) return full(shape, value, dtype, Device::kCPU).to(device);
  Tensor t = empty(shape, DType::kF32, Device::kCPU);
  float* p = t.data<float>();
  std::fill(p, p + t.numel(), value);
  return t.to(dtype);
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  DIFFUSE_CHECK_ARG(shape_numel(shape) == static_cast<int64_t>(values.size()),
                    "[from_vector] " + std::to_string(values.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::kF32);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::from_ids(const std::vector<int64_t>& values, const Shape& shape) {
  DIFFUSE_CHECK_ARG(shape_numel(shape) == static_cast<int64_t>(values.size()),
                    "[from_ids] " + std::to_string(values.size()) + " values do not fill shape " + shape_str(shape));
  Tensor t = empty(shape, DType::kI64);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner, Device device) {
  check_shape(shape, "from_blob");
  DIFFUSE_CHECK_ARG(data != nullptr || shape_numel(shape) == 0, "[from_blob] null data for shape " + shape_str(shape));
  auto s = std::make_shared<Storage>();
  s->data = data;
  s->nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  s->device = device;
  if (owner) s->deleter = [owner = std::move(owner)](void*) mutable { owner.reset(); };
  Tensor t;
  t.storage_ = std::move(s);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

int64_t Tensor::dim(int i) const {
  int d = wrap_dim(i, ndim(), "dim");
  return shape_[d];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

bool Tensor::is_channels_last() const {
  if (shape_.size() != 4) return false;
  int64_t expected = 1;
  for (int d : {1, 3, 2, 0}) {  // physical order from the innermost: C, W, H, N
    if (shape_[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

void* Tensor::raw_data() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

void Tensor::check_element_size(size_t size) const {
  DIFFUSE_CHECK_ARG(size == dtype_size(dtype_), std::string("[tensor] data<T>() with sizeof(T)=") +
                                                    std::to_string(size) + " on a " + dtype_name(dtype_) + " tensor");
}

Tensor Tensor::contiguous() const {
  if (!defined() || is_contiguous()) return *this;
  return backend_for(device()).copy(*this);
}

Tensor Tensor::to(DType dtype) const {
  if (!defined() || dtype == dtype_) return *this;
  return backend_for(device()).cast(*this, dtype);  // backends take any strides (and may keep a dense layout)
}

Tensor Tensor::to(Device dev) const {
  if (!defined() || dev == device()) return *this;
  Tensor src = contiguous();
  Tensor dst = empty(shape_, dtype_, dev);
  copy_bytes(dst.raw_data(), dev, src.raw_data(), src.device(), src.nbytes());
  return dst;
}

std::vector<Tensor> pack_on_device(const std::vector<size_t>& sizes, Device device,
                                   const std::function<Tensor(size_t)>& make) {
  constexpr size_t kAlign = 256;
  std::vector<size_t> offsets(sizes.size());
  size_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    offsets[i] = total;
    total += (sizes[i] + kAlign - 1) / kAlign * kAlign;
  }
  std::shared_ptr<Storage> arena = allocate_storage(std::max<size_t>(total, 1), device);
  // Tensors of the first tensor's dtype are views of one tensor over the whole arena (so neighbours
  // can be viewed together, e.g. q/k/v weights as one matrix); any other dtype gets its own handle.
  Tensor base;
  std::vector<Tensor> out;
  out.reserve(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    const Tensor t = make(i);
    const bool cl = !t.is_contiguous() && t.is_channels_last();
    DIFFUSE_CHECK(t.device() == device && (t.is_contiguous() || cl) && t.nbytes() == sizes[i], ErrorCode::kRuntime,
                  "[pack_on_device] tensor " + std::to_string(i) + " " + t.str() + " is not a dense " +
                      std::to_string(sizes[i]) + "-byte tensor on " + device_name(device));
    const Shape phys = cl ? Shape{t.dim(0), t.dim(2), t.dim(3), t.dim(1)} : t.shape();  // memory order
    void* slot = static_cast<char*>(arena->data) + offsets[i];
    const size_t es = dtype_size(t.dtype());
    if (!base.defined() && total % es == 0)
      base = Tensor::from_blob(arena->data, {static_cast<int64_t>(total / es)}, t.dtype(), arena, device);
    Tensor view = base.defined() && base.dtype() == t.dtype()
                      ? make_view(base, phys, contiguous_strides(phys), static_cast<int64_t>(offsets[i] / es))
                      : Tensor::from_blob(slot, phys, t.dtype(), arena, device);
    copy_bytes(slot, device, t.raw_data(), t.device(), t.nbytes());
    out.push_back(cl ? view.permute({0, 3, 1, 2}) : view);
  }
  return out;
}

Tensor Tensor::clone() const {
  if (!defined()) return *this;
  return backend_for(device()).copy(*this);
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      DIFFUSE_CHECK_ARG(infer < 0, "[reshape] more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      DIFFUSE_CHECK_ARG(s[i] >= 0, "[reshape] negative dimension in " + shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    DIFFUSE_CHECK_ARG(known != 0 && numel() % known == 0,
                      "[reshape] cannot reshape " + shape_str(shape_) + " to " + shape_str(shape));
    s[infer] = numel() / known;
  }
  DIFFUSE_CHECK_ARG(shape_numel(s) == numel(), "[reshape] cannot reshape " + shape_str(shape_) + " (" +
                                                    std::to_string(numel()) + " elements) to " + shape_str(shape));
  if (!is_contiguous()) return contiguous().reshape(s);
  return make_view(*this, s, contiguous_strides(s), offset_);
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  DIFFUSE_CHECK_ARG(static_cast<int>(dims.size()) == ndim(),
                    "[permute] got " + std::to_string(dims.size()) + " dims for a tensor " + shape_str(shape_));
  Shape s(dims.size());
  std::vector<int64_t> st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int d = wrap_dim(dims[i], ndim(), "permute");
    DIFFUSE_CHECK_ARG(!seen[d], "[permute] repeated dim " + std::to_string(dims[i]));
    seen[d] = true;
    s[i] = shape_[d];
    st[i] = strides_[d];
  }
  return make_view(*this, s, st, offset_);
}

Tensor Tensor::transpose(int a, int b) const {
  int da = wrap_dim(a, ndim(), "transpose"), db = wrap_dim(b, ndim(), "transpose");
  Shape s = shape_;
  std::vector<int64_t> st = strides_;
  std::swap(s[da], s[db]);
  std::swap(st[da], st[db]);
  return make_view(*this, s, st, offset_);
}

Tensor Tensor::slice(int dim, int64_t start, int64_t end, int64_t step) const {
  int d = wrap_dim(dim, ndim(), "slice");
  DIFFUSE_CHECK_ARG(step > 0, "[slice] step must be positive, got " + std::to_string(step));
  int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, 0, n);
  int64_t len = end > start ? (end - start + step - 1) / step : 0;
  Shape s = shape_;
  std::vector<int64_t> st = strides_;
  s[d] = len;
  st[d] = strides_[d] * step;
  return make_view(*this, s, st, offset_ + (len > 0 ? start * strides_[d] : 0));
}

Tensor Tensor::select(int dim, int64_t index) const {
  int d = wrap_dim(dim, ndim(), "select");
  int64_t i = index < 0 ? index + shape_[d] : index;
  DIFFUSE_CHECK_ARG(i >= 0 && i < shape_[d], "[select] index " + std::to_string(index) + " out of range for dim " +
                                                 std::to_string(dim) + " of " + shape_str(shape_));
  Shape s = shape_;
  std::vector<int64_t> st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return make_view(*this, s, st, offset_ + i * strides_[d]);
}

Tensor Tensor::unsqueeze(int dim) const {
  int d = wrap_dim(dim, ndim() + 1, "unsqueeze");
  Shape s = shape_;
  std::vector<int64_t> st = strides_;
  int64_t stride = d < ndim() ? strides_[d] * shape_[d] : 1;
  s.insert(s.begin() + d, 1);
  st.insert(st.begin() + d, stride);
  return make_view(*this, s, st, offset_);
}

Tensor Tensor::squeeze(int dim) const {
  int d = wrap_dim(dim, ndim(), "squeeze");
  if (shape_[d] != 1) return *this;
  Shape s = shape_;
  std::vector<int64_t> st = strides_;
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  return make_view(*this, s, st, offset_);
}

Tensor Tensor::flatten(int start_dim, int end_dim) const {
  if (ndim() == 0) return reshape({1});
  int a = wrap_dim(start_dim, ndim(), "flatten"), b = wrap_dim(end_dim, ndim(), "flatten");
  DIFFUSE_CHECK_ARG(a <= b, "[flatten] start_dim after end_dim");
  Shape s(shape_.begin(), shape_.begin() + a);
  int64_t m = 1;
  for (int i = a; i <= b; ++i) m *= shape_[i];
  s.push_back(m);
  s.insert(s.end(), shape_.begin() + b + 1, shape_.end());
  return reshape(s);
}

std::vector<float> Tensor::to_f32_vector() const {
  if (!defined()) return {};
  Tensor t = to(Device::kCPU).contiguous();
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert(t.raw_data(), t.dtype(), out.data(), DType::kF32, out.size());
  return out;
}

std::vector<int64_t> Tensor::to_i64_vector() const {
  if (!defined()) return {};
  Tensor t = to(Device::kCPU).contiguous();
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  convert(t.raw_data(), t.dtype(), out.data(), DType::kI64, out.size());
  return out;
}

float Tensor::item() const {
  DIFFUSE_CHECK_ARG(defined() && numel() == 1, "[item] needs a tensor with one element, got " + shape_str(shape_));
  return to_f32_vector()[0];
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return std::string("Tensor(") + dtype_name(dtype_) + ", " + device_name(device()) + ", " + shape_str(shape_) + ")";
}

}  // namespace diffuse
