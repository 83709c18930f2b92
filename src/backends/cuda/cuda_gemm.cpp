// linear and matmul through cuBLASLt.
//
// Row-major products are computed as their column-major transposes
// (C^T = B^T A^T), so no operand is ever copied just to change its layout:
// a transposed view (k^T in attention) becomes a transpose flag. The compute
// type is always CUBLAS_COMPUTE_32F: f16/bf16 accumulate in f32 and f32 stays
// IEEE f32 (TF32 would be CUBLAS_COMPUTE_32F_FAST_TF32), so f32 results match
// the CPU backend. Bias uses the BIAS epilogue; activations run as a separate
// pass because cuBLASLt's GELU epilogue is the tanh approximation, not erf.
#include <cublasLt.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>

#include "backends/backend_registry.h"
#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/cuda_ops.h"

namespace diffuse::cuda_ops {

namespace {

// 8 MiB: the UNet's GEMMs are large (thousands of rows) and rarely split K; the workspace lives as
// long as the process and counts in every phase's peak memory.
constexpr size_t kWorkspaceBytes = 8u << 20;

void check_lt(cublasStatus_t st, const char* op, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  throw_error(st == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOutOfMemory : ErrorCode::kRuntime,
              std::string("[") + op + "] cuBLASLt error " + std::to_string(static_cast<int>(st)) + " in " + what);
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::kF16: return CUDA_R_16F;
    case DType::kBF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

int alignment_of(const void* p, int64_t ld, int64_t stride, size_t esize) {
  uint64_t v = reinterpret_cast<uintptr_t>(p) | static_cast<uint64_t>(ld * esize) |
               static_cast<uint64_t>(stride * esize) | 256u;
  return static_cast<int>(v & (~v + 1)) > 16 ? 16 : static_cast<int>(v & (~v + 1));
}

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

class LtState {
 public:
  LtState() {
    check_lt(cublasLtCreate(&handle_), "gemm", "cublasLtCreate");
    workspace_ = cuda_allocate(kWorkspaceBytes);
  }

  void run(const GemmArgs& g, const char* op) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t es = dtype_size(g.dtype);
    int al_a = alignment_of(g.a, g.lda, g.stride_a, es), al_b = alignment_of(g.b, g.ldb, g.stride_b, es);
    int al_d = alignment_of(g.d, g.ldd, g.stride_d, es);
    std::string key = std::to_string(static_cast<int>(g.dtype)) + "|" + std::to_string(g.trans_a) +
                      std::to_string(g.trans_b) + "|" + std::to_string(g.m) + "," + std::to_string(g.n) + "," +
                      std::to_string(g.k) + "|" + std::to_string(g.lda) + "," + std::to_string(g.ldb) + "," +
                      std::to_string(g.ldd) + "|" + std::to_string(g.stride_a) + "," + std::to_string(g.stride_b) +
                      "," + std::to_string(g.stride_d) + "|" + std::to_string(g.batch) + "|" +
                      std::to_string(g.bias != nullptr) + "|" + std::to_string(al_a) + std::to_string(al_b) +
                      std::to_string(al_d);
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(g, al_a, al_b, al_d, op)).first;
    Plan& p = it->second;
    if (g.bias)
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)), op,
               "bias pointer");
    float alpha = 1.0f, beta = g.c ? 1.0f : 0.0f;
    cudaStream_t s = cuda_context().stream;
    check_lt(cublasLtMatmul(handle_, p.desc, &alpha, g.a, p.la, g.b, p.lb, &beta, g.c ? g.c : g.d, p.ld, g.d, p.ld, &p.algo,
                            workspace_->data, kWorkspaceBytes, s),
             op, "cublasLtMatmul");
  }

 private:
  Plan make_plan(const GemmArgs& g, int al_a, int al_b, int al_d, const char* op) {
    Plan p;
    cudaDataType_t ct = cuda_type(g.dtype);
    check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), op, "desc");
    cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), op, "transa");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), op, "transb");
    if (g.bias) {
      cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), op, "epi");
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ct, sizeof(ct)), op,
               "bias type");
    }
    auto layout = [&](cublasLtMatrixLayout_t* l, int64_t rows, int64_t cols, int64_t ld, int64_t stride) {
      check_lt(cublasLtMatrixLayoutCreate(l, ct, rows, cols, ld), op, "layout");
      if (g.batch > 1) {
        int32_t bc = static_cast<int32_t>(g.batch);
        check_lt(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)), op,
                 "batch");
        check_lt(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                  sizeof(stride)),
                 op, "batch stride");
      }
    };
    layout(&p.la, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda, g.stride_a);
    layout(&p.lb, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb, g.stride_b);
    layout(&p.ld, g.m, g.n, g.ldd, g.stride_d);

    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), op, "pref");
    size_t ws = kWorkspaceBytes;
    uint32_t ua = al_a, ub = al_b, ud = al_d;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ua, sizeof(ua));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ub, sizeof(ub));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ud, sizeof(ud));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ud, sizeof(ud));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.la, p.lb, p.ld, p.ld, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      throw_error(ErrorCode::kUnsupported, std::string("[") + op + "] cuBLASLt has no algorithm for m=" +
                                               std::to_string(g.m) + " n=" + std::to_string(g.n) +
                                               " k=" + std::to_string(g.k) + " (" + dtype_name(g.dtype) + ")");
    p.algo = res.algo;
    return p;
  }

  std::mutex mu_;
  cublasLtHandle_t handle_ = nullptr;
  std::shared_ptr<Storage> workspace_;
  std::unordered_map<std::string, Plan> plans_;
};

LtState& lt() {
  static LtState* s = new LtState();  // leaked: plans live for the process
  return *s;
}

// A matrix operand [.., R, C] seen by cuBLAS: row-major (stride[-1] == 1) or
// column-major (stride[-2] == 1), with a leading dimension.
struct MatView {
  bool row_major = true;
  int64_t ld = 0;
};

bool mat_view(const Tensor& t, MatView* v) {
  int n = t.ndim();
  int64_t r = t.shape()[n - 2], c = t.shape()[n - 1];
  int64_t sr = t.strides()[n - 2], sc = t.strides()[n - 1];
  if (sc == 1 || c == 1) {
    int64_t ld = r == 1 ? std::max<int64_t>(c, 1) : sr;
    if (ld >= std::max<int64_t>(c, 1)) {
      v->row_major = true;
      v->ld = ld;
      return true;
    }
  }
  if (sr == 1 || r == 1) {
    int64_t ld = c == 1 ? std::max<int64_t>(r, 1) : sc;
    if (ld >= std::max<int64_t>(r, 1)) {
      v->row_major = false;
      v->ld = ld;
      return true;
    }
  }
  return false;
}

// Batch dims of t broadcast to `batch`, collapsed into a single stride; false if they do not collapse.
bool batch_stride(const Tensor& t, const Shape& batch, int64_t* stride) {
  int nb = static_cast<int>(batch.size());
  int off = nb - (t.ndim() - 2);
  std::vector<std::pair<int64_t, int64_t>> dims;  // (size, stride), size-1 dims dropped
  for (int i = 0; i < nb; ++i) {
    if (batch[i] == 1) continue;
    int j = i - off;
    int64_t st = (j >= 0 && t.shape()[j] != 1) ? t.strides()[j] : 0;
    dims.push_back({batch[i], st});
  }
  *stride = dims.empty() ? 0 : dims.back().second;
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    if (dims[i].second != dims[i + 1].second * dims[i + 1].first) return false;
  return true;
}

}  // namespace

void gemm(const GemmArgs& g, const char* op) { lt().run(g, op); }

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& residual) {
  DType t = x.dtype();
  Tensor xc = contiguous_as(x, t);
  Tensor wc = contiguous_as(w, t);
  int64_t k = x.dim(-1), n = w.dim(0), m = 1;
  for (int i = 0; i + 1 < x.ndim(); ++i) m *= x.shape()[i];
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor y = Tensor::empty(out_shape, t, Device::kCUDA);
  if (y.numel() == 0) return y;
  Tensor bc = bias.defined() ? contiguous_as(bias, t) : Tensor();
  if (k == 0) {  // empty reduction: bias only
    Tensor z = Tensor::zeros(out_shape, t, Device::kCUDA);
    y = bc.defined() ? backend_for(Device::kCUDA).binary(z, bc, Backend::BinaryOp::kAdd) : z;
  } else {
    GemmArgs g;
    g.dtype = t;
    g.trans_a = true;
    g.m = n;
    g.n = m;
    g.k = k;
    g.a = wc.raw_data();
    g.lda = k;
    g.b = xc.raw_data();
    g.ldb = k;
    g.d = y.raw_data();
    g.ldd = n;
    g.bias = bc.defined() ? bc.raw_data() : nullptr;
    // The residual rides in the epilogue (C operand, beta = 1) unless an activation must come first.
    Tensor rc = residual.defined() && act == Activation::kNone ? contiguous_as(residual, t) : Tensor();
    g.c = rc.defined() ? rc.raw_data() : nullptr;
    gemm(g, "linear");
    if (rc.defined()) return y;
  }
  apply_activation_inplace(y, act);
  if (residual.defined()) y = backend_for(Device::kCUDA).binary(y, residual, Backend::BinaryOp::kAdd);
  return y;
}

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  DType t = a_in.dtype();
  Tensor a = a_in.dtype() == t ? a_in : contiguous_as(a_in, t);
  Tensor b = b_in.dtype() == t ? b_in : contiguous_as(b_in, t);
  // Promote 1-D operands as numpy does, and drop the added dim at the end.
  bool a_vec = a.ndim() == 1, b_vec = b.ndim() == 1;
  if (a_vec) a = a.unsqueeze(0);
  if (b_vec) b = b.unsqueeze(1);
  int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1);
  Shape batch;
  int nb = std::max(a.ndim(), b.ndim()) - 2;
  for (int i = 0; i < nb; ++i) {
    int ia = i - (nb - (a.ndim() - 2)), ib = i - (nb - (b.ndim() - 2));
    int64_t da = ia >= 0 ? a.shape()[ia] : 1, db = ib >= 0 ? b.shape()[ib] : 1;
    batch.push_back(da == 1 ? db : da);
  }
  int64_t nbatch = shape_numel(batch);
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor y = Tensor::empty(out_shape, t, Device::kCUDA);
  if (y.numel() > 0 && k == 0) y = Tensor::zeros(out_shape, t, Device::kCUDA);
  if (y.numel() > 0 && k > 0) {
    MatView va, vb;
    int64_t sa = 0, sb = 0;
    // Operands whose layout cuBLAS cannot express are materialised (broadcast included).
    auto fix = [&](Tensor& x, MatView* v, int64_t* s) {
      if (mat_view(x, v) && batch_stride(x, batch, s)) return;
      Shape full = batch;
      full.push_back(x.dim(-2));
      full.push_back(x.dim(-1));
      std::vector<int64_t> st(full.size(), 0);
      int off = static_cast<int>(full.size()) - x.ndim();
      for (int i = 0; i < x.ndim(); ++i) st[off + i] = x.shape()[i] == 1 ? 0 : x.strides()[i];
      x = backend_for(Device::kCUDA).copy(make_view(x, full, st, x.offset()));
      mat_view(x, v);
      batch_stride(x, batch, s);
    };
    fix(a, &va, &sa);
    fix(b, &vb, &sb);
    int64_t rows = m;
    // x[..., M, K] @ W[K, N] with W shared by the batch: one GEMM over all rows.
    if (nbatch > 1 && sb == 0 && va.row_major && sa == m * va.ld) {
      rows = m * nbatch;
      nbatch = 1;
    }
    GemmArgs g;
    g.dtype = t;
    g.m = n;
    g.n = rows;
    g.k = k;
    g.a = b.raw_data();
    g.trans_a = !vb.row_major;
    g.lda = vb.ld;
    g.stride_a = sb;
    g.b = a.raw_data();
    g.trans_b = !va.row_major;
    g.ldb = va.ld;
    g.stride_b = sa;
    g.d = y.raw_data();
    g.ldd = n;
    g.stride_d = m * n;
    g.batch = nbatch;
    gemm(g, "matmul");
  }
  if (a_vec) y = y.squeeze(-2);
  if (b_vec) y = y.squeeze(-1);
  return y;
}

}  // namespace diffuse::cuda_ops
