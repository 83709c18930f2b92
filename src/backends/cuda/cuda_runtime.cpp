// CUDA device context, caching allocator and copies.
//
// The allocator follows the idea of PyTorch's CUDACachingAllocator, much
// simplified: freed blocks go to a size-ordered free list and are handed out
// again for requests of a similar size, so a denoising loop that allocates the
// same activations every step reaches a steady state with no cudaMalloc (which
// synchronises the device and costs tens of microseconds). All backend work
// runs on one stream, so a block freed by one op may be reused by the next op
// without events: the stream orders the accesses.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backends/backend_registry.h"
#include "core/runtime_options.h"
#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_context.h"
#include "backends/cuda/cuda_kernels.h"

namespace diffuse {

namespace cuda_detail {
void check_cuda(cudaError_t err, const char* op, const char* what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky-free error state
  ErrorCode code = err == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kRuntime;
  throw_error(code, std::string("[") + op + "] CUDA error: " + cudaGetErrorString(err) + " (" + what + ")");
}
}  // namespace cuda_detail

namespace {

// The device the context is (to be) created on, and whether it exists:
// cuda_select_device() may change the first only while the second is false.
std::atomic<int> g_selected_device{0};
std::atomic<bool> g_context_created{false};

CudaContext make_context() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw_error(ErrorCode::kUnsupported, std::string("[cuda] no CUDA device available: ") +
                                             (err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0"));
  }
  CudaContext ctx;
  ctx.device = g_selected_device.load();
  if (ctx.device >= count) {
    throw_error(ErrorCode::kUnsupported, "[cuda] no device cuda:" + std::to_string(ctx.device) + ": " +
                                             std::to_string(count) + " CUDA device(s) visible");
  }
  DIFFUSE_CUDA_CHECK(cudaSetDevice(ctx.device), "cuda");
  cudaDeviceProp prop{};
  DIFFUSE_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx.device), "cuda");
  err = cuda_kernels::check_kernel_image();
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw_error(ErrorCode::kUnsupported, "[cuda] cuda:" + std::to_string(ctx.device) + " (" + prop.name +
                                             ", compute " + std::to_string(prop.major) + "." +
                                             std::to_string(prop.minor) + ") cannot run this build's kernels: " +
                                             cudaGetErrorString(err) +
                                             " (rebuild with CMAKE_CUDA_ARCHITECTURES naming this GPU)");
  }
  DIFFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking), "cuda");
  ctx.sm_count = prop.multiProcessorCount;
  ctx.max_smem_optin = prop.sharedMemPerBlockOptin;
  g_context_created = true;
  return ctx;
}

// Blocks smaller than this are rounded to 512 bytes, larger ones to 2 MiB.
constexpr size_t kSmallLimit = 1 << 20;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = 2 << 20;

class CachingAllocator {
 public:
  void* allocate(size_t nbytes) {
    size_t size = round(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.alloc_calls;
    if (capturing_) {  // the capture's own freed blocks first: they are the graph's already
      auto ct = capture_free_.lower_bound(size);
      if (ct != capture_free_.end() && ct->first - size <= slack(size)) {
        void* p = ct->second;
        size_t got = ct->first;
        capture_free_.erase(ct);
        parked_.erase(p);
        in_use_[p] = got;
        add_in_use(got);
        return p;
      }
    }
    auto it = free_.lower_bound(size);
    // Reuse a cached block unless it is much larger than asked for (the excess is
    // held but unused, so big blocks get less slack: the VAE's 64-134 MB maps).
    if (it != free_.end() && it->first - size <= slack(size)) {
      void* p = it->second;
      size_t got = it->first;
      free_.erase(it);
      in_use_[p] = got;
      add_in_use(got);
      if (capturing_) pinned_.insert(p);
      return p;
    }
    // DIFFUSE_CUDA_MEMORY_LIMIT_MB: the cache goes back before the cap is passed.
    static const size_t limit = static_cast<size_t>(runtime_options().cuda_memory_limit_mb) << 20;
    if (limit != 0 && stats_.reserved_bytes + size > limit) {
      release_cached_locked();
      if (stats_.reserved_bytes + size > limit)
        throw_error(ErrorCode::kOutOfMemory, "[cuda_allocate] cannot allocate " + std::to_string(nbytes) +
                                                 " bytes: " + std::to_string(stats_.reserved_bytes >> 20) +
                                                 " MiB are reserved and DIFFUSE_CUDA_MEMORY_LIMIT_MB is " +
                                                 std::to_string(limit >> 20));
    }
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back and try once more
      cudaGetLastError();
      release_cached_locked();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw_error(err == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kRuntime,
                  "[cuda_allocate] cannot allocate " + std::to_string(nbytes) + " bytes (" +
                      std::to_string(stats_.reserved_bytes >> 20) + " MiB already reserved): " +
                      cudaGetErrorString(err));
    }
    ++stats_.malloc_calls;
    stats_.reserved_bytes += size;
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
    add_in_use(size);
    in_use_[p] = size;
    if (capturing_) pinned_.insert(p);
    return p;
  }

  // Called from Storage deleters: never throws.
  void release(void* p) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = in_use_.find(p);
    if (it == in_use_.end()) return;
    size_t size = it->second;
    in_use_.erase(it);
    stats_.in_use_bytes -= size;
    if (pinned_.count(p)) {  // a captured graph may still write it: keep it out of the free list
      parked_[p] = size;
      // During the capture, later ops of the same graph may reuse it: the
      // graph replays in capture order on one stream, as eager ops would run.
      if (capturing_) capture_free_.emplace(size, p);
      return;
    }
    free_.emplace(size, p);
  }

  // Graph capture support: blocks handed out while capturing are pinned until
  // end_graph_pins(), because graph replays keep writing them.
  void begin_capture() {
    std::lock_guard<std::mutex> lock(mu_);
    capturing_ = true;
  }
  std::vector<void*> end_capture() {
    std::lock_guard<std::mutex> lock(mu_);
    capturing_ = false;
    capture_free_.clear();  // those blocks stay parked until the graph is destroyed
    std::vector<void*> pins(pinned_.begin(), pinned_.end());
    return pins;
  }
  void unpin(const std::vector<void*>& pins) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    for (void* p : pins) {
      pinned_.erase(p);
      auto it = parked_.find(p);
      if (it != parked_.end()) {
        free_.emplace(it->second, p);
        parked_.erase(it);
      }
    }
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }

  CudaAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peaks() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_reserved_bytes = stats_.reserved_bytes;
    stats_.peak_in_use_bytes = stats_.in_use_bytes;
    logged_peak_ = 0;
  }

 private:
  void add_in_use(size_t n) {
    stats_.in_use_bytes += n;
    if (stats_.in_use_bytes > stats_.peak_in_use_bytes) {
      // DIFFUSE_CUDA_LOG_PEAK=1: a line per new high-water mark (16 MiB apart), to see what sets the peak.
      static const bool log_peak = runtime_options().cuda_log_peak;
      if (log_peak && stats_.in_use_bytes >= logged_peak_ + (size_t(16) << 20)) {
        logged_peak_ = stats_.in_use_bytes;
        std::fprintf(stderr, "[cuda alloc] in use %.3f GiB after a block of %.1f MiB (%zu live blocks)\n",
                     stats_.in_use_bytes / double(1ull << 30), n / double(1 << 20), in_use_.size() + 1);
      }
      stats_.peak_in_use_bytes = stats_.in_use_bytes;
    }
  }
  static size_t slack(size_t size) { return size >= (size_t(32) << 20) ? size / 16 : size / 4; }
  static size_t round(size_t n) {
    if (n == 0) n = 1;
    if (n <= kSmallLimit) return (n + kSmallRound - 1) / kSmallRound * kSmallRound;
    return (n + kLargeRound - 1) / kLargeRound * kLargeRound;
  }
  void release_cached_locked() {
    cudaDeviceSynchronize();
    for (auto& [size, p] : free_) {
      cudaFree(p);
      stats_.reserved_bytes -= size;
    }
    free_.clear();
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> in_use_;
  std::unordered_set<void*> pinned_;
  std::unordered_map<void*, size_t> parked_;
  std::multimap<size_t, void*> capture_free_;  // parked blocks the capture in progress may reuse
  bool capturing_ = false;
  CudaAllocatorStats stats_;
  size_t logged_peak_ = 0;
};

// Leaked on purpose: Storage deleters of static tensors may run after main().
CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return *a;
}

}  // namespace

CudaContext& cuda_context() {
  static CudaContext* ctx = new CudaContext(make_context());  // retried on the next call if it throws
  return *ctx;
}

bool cuda_device_available() { return cuda_start().empty(); }

void cuda_select_device(int ordinal) {
  DIFFUSE_CHECK_ARG(ordinal >= 0, "[cuda] device ordinal must be >= 0, got " + std::to_string(ordinal));
  if (g_context_created) {
    const int current = cuda_context().device;
    DIFFUSE_CHECK(current == ordinal, ErrorCode::kUnsupported,
                  "[cuda] the backend already runs on cuda:" + std::to_string(current) +
                      "; one process uses one GPU, cannot switch to cuda:" + std::to_string(ordinal));
    return;
  }
  g_selected_device = ordinal;
}

std::string cuda_start() {
  try {
    cuda_context();
    return "";
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "[cuda] unknown error while starting the backend";
  }
}

std::string cuda_library_versions() {
  auto dotted = [](size_t v) {  // MAJOR*10000 + MINOR*100 + PATCH (cuDNN 9, cuBLAS 12+)
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
  };
  int runtime = 0;
  std::string out = "CUDA runtime ";
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) {
    out += std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10);
  } else {
    cudaGetLastError();
    out += "?";
  }
  return out + ", cuBLASLt " + dotted(cublasLtGetVersion()) + ", cuDNN " + dotted(cudnnGetVersion());
}

std::shared_ptr<Storage> cuda_allocate(size_t nbytes) {
  cuda_context();
  void* p = allocator().allocate(nbytes);
  auto s = std::make_shared<Storage>();
  s->data = p;
  s->nbytes = nbytes;
  s->device = Device::kCUDA;
  s->deleter = [](void* q) { allocator().release(q); };
  return s;
}

void cuda_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::kCPU && src_dev == Device::kCPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaStream_t s = cuda_context().stream;
  cudaMemcpyKind kind = src_dev == Device::kCPU   ? cudaMemcpyHostToDevice
                        : dst_dev == Device::kCPU ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
  DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s), "cuda_copy");
  // Host buffers are pageable and may be freed as soon as we return.
  if (kind != cudaMemcpyDeviceToDevice) DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(s), "cuda_copy");
}

CudaAllocatorStats cuda_allocator_stats() { return allocator().stats(); }
void cuda_reset_peak_stats() { allocator().reset_peaks(); }
void cuda_empty_cache() { allocator().empty_cache(); }
void cuda_synchronize() { DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(cuda_context().stream), "cuda_synchronize"); }

// ---- CUDA graphs ----

struct CudaGraph::Impl {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::vector<void*> pins;
};

CudaGraph::CudaGraph() : impl_(std::make_unique<Impl>()) {}

CudaGraph::~CudaGraph() {
  if (impl_->exec) cudaGraphExecDestroy(impl_->exec);
  if (impl_->graph) cudaGraphDestroy(impl_->graph);
  if (!impl_->pins.empty()) {
    cudaStreamSynchronize(cuda_context().stream);  // a replay may still be writing the pinned blocks
    allocator().unpin(impl_->pins);
  }
}

bool CudaGraph::captured() const { return impl_->exec != nullptr; }

void CudaGraph::capture(const std::function<void()>& fn) {
  DIFFUSE_CHECK(!captured(), ErrorCode::kInvalidArgument, "[cuda_graph] already captured");
  cudaStream_t s = cuda_context().stream;
  allocator().begin_capture();
  DIFFUSE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), "cuda_graph");
  try {
    fn();
  } catch (...) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(s, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    impl_->pins = allocator().end_capture();
    throw;
  }
  cudaError_t err = cudaStreamEndCapture(s, &impl_->graph);
  impl_->pins = allocator().end_capture();
  DIFFUSE_CUDA_CHECK(err, "cuda_graph");
  DIFFUSE_CUDA_CHECK(cudaGraphInstantiate(&impl_->exec, impl_->graph, 0), "cuda_graph");
}

void CudaGraph::replay() {
  DIFFUSE_CHECK(captured(), ErrorCode::kInvalidArgument, "[cuda_graph] replay before capture");
  DIFFUSE_CUDA_CHECK(cudaGraphLaunch(impl_->exec, cuda_context().stream), "cuda_graph");
}

}  // namespace diffuse
