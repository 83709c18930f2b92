// Op parity across backends, in the spirit of ggml's test-backend-ops: every
// op case below runs on every available backend (cpu, plus cuda when a device
// is present) in f32, bf16 and f16, and is compared with a naive fp64
// reference (parity_reference.h) computed from the same rounded inputs.
//
// Error measure: max |out - ref| / max |ref| (max error relative to the
// output's scale). Bounds are per dtype: f32 results must be accurate to f32
// accumulation, bf16/f16 results to a few output roundings (2^-8 / 2^-11).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "core/ops.h"
#include "parity_reference.h"
#include "test_util.h"

// Readable test parameters in gtest/ctest output.
namespace diffuse {
void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
void PrintTo(Device d, std::ostream* os) { *os << device_name(d); }
}  // namespace diffuse

using namespace diffuse;
using namespace diffuse::testing;

namespace {

using View = std::function<Tensor(const Tensor&)>;

struct Input {
  Shape shape;       // shape of the generated (base) tensor
  View view;         // optional view applied to it (permute/slice) -> non-contiguous input
  float lo = -1, hi = 1;
  bool ids = false;  // integer ids in [0, id_max)
  int64_t id_max = 0;
  DType id_type = DType::kI64;
  bool keep_f32 = false;  // a weight kept in f32 while the activation is bf16/f16
};

struct Tol {
  double f32 = 2e-6, bf16 = 1.2e-2, f16 = 1.5e-3;
};

struct Case {
  std::string name;
  std::vector<Input> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> run;
  std::function<Ref(const std::vector<Ref>&)> ref;
  Tol tol;
  bool f32_only = false;   // op defined on f32 inputs only (timestep_embedding)
  bool out_f32 = false;    // output dtype is f32 regardless of input
};

Input in(Shape s, float lo = -1, float hi = 1) { return Input{std::move(s), nullptr, lo, hi}; }
Input in_view(Shape s, View v, float lo = -1, float hi = 1) { return Input{std::move(s), std::move(v), lo, hi}; }
Input in_ids(Shape s, int64_t max, DType t = DType::kI64) {
  Input i{std::move(s), nullptr};
  i.ids = true;
  i.id_max = max;
  i.id_type = t;
  return i;
}
Input weight(Shape s, float lo = -1, float hi = 1) {
  Input i = in(std::move(s), lo, hi);
  i.keep_f32 = true;
  return i;
}

Tol tol(double f32, double bf16, double f16) { return Tol{f32, bf16, f16}; }

std::vector<Case> make_cases() {
  std::vector<Case> cs;
  using A = Activation;
  auto add_case = [&](std::string name, std::vector<Input> ins, std::function<Tensor(const std::vector<Tensor>&)> run,
                      std::function<Ref(const std::vector<Ref>&)> ref, Tol t = {}) {
    cs.push_back(Case{std::move(name), std::move(ins), std::move(run), std::move(ref), t});
  };

  // --- linear -------------------------------------------------------------
  add_case("linear_bias", {in({2, 7, 33}), in({17, 33}), in({17})},
           [](auto& t) { return linear(t[0], t[1], t[2]); },
           [](auto& r) { return ref_linear(r[0], r[1], &r[2], Activation::kNone); });
  add_case("linear_gelu_nobias", {in({3, 64}), in({48, 64})}, [](auto& t) { return linear(t[0], t[1], {}, A::kGelu); },
           [](auto& r) { return ref_linear(r[0], r[1], nullptr, Activation::kGelu); });
  add_case("linear_quick_gelu", {in({5, 24}, -3, 3), in({9, 24}), in({9})},
           [](auto& t) { return linear(t[0], t[1], t[2], A::kQuickGelu); },
           [](auto& r) { return ref_linear(r[0], r[1], &r[2], Activation::kQuickGelu); });
  add_case("linear_silu_rows1", {in({1, 1, 5}), in({3, 5}), in({3})},
           [](auto& t) { return linear(t[0], t[1], t[2], A::kSilu); },
           [](auto& r) { return ref_linear(r[0], r[1], &r[2], Activation::kSilu); });
  add_case("linear_permuted_x", {in_view({33, 2, 7}, [](const Tensor& t) { return t.permute({1, 2, 0}); }), in({20, 33}),
                                 in({20})},
           [](auto& t) { return linear(t[0], t[1], t[2]); },
           [](auto& r) { return ref_linear(r[0], r[1], &r[2], Activation::kNone); });
  add_case("linear_clip_shape", {in({2, 77, 768}), in({320, 768}, -0.05f, 0.05f), in({320})},
           [](auto& t) { return linear(t[0], t[1], t[2]); },
           [](auto& r) { return ref_linear(r[0], r[1], &r[2], Activation::kNone); }, tol(4e-6, 1.2e-2, 1.5e-3));
  add_case("linear_f32_weight", {in({4, 40}), weight({24, 40}), weight({24})},
           [](auto& t) { return linear(t[0], t[1], t[2]); },
           [](auto& r) { return ref_linear(r[0], r[1], &r[2], Activation::kNone); });
  add_case("linear_transposed_w", {in({6, 31}), in_view({31, 18}, [](const Tensor& t) { return t.transpose(0, 1); })},
           [](auto& t) { return linear(t[0], t[1]); },
           [](auto& r) { return ref_linear(r[0], r[1], nullptr, Activation::kNone); });

  // --- matmul -------------------------------------------------------------
  add_case("matmul_batched", {in({2, 3, 5, 7}), in({2, 3, 7, 4})}, [](auto& t) { return matmul(t[0], t[1]); },
           [](auto& r) { return ref_matmul(r[0], r[1]); });
  add_case("matmul_broadcast", {in({1, 5, 7}), in({3, 7, 9})}, [](auto& t) { return matmul(t[0], t[1]); },
           [](auto& r) { return ref_matmul(r[0], r[1]); });
  add_case("matmul_broadcast_2d_b", {in({4, 3, 65}), in({65, 33})}, [](auto& t) { return matmul(t[0], t[1]); },
           [](auto& r) { return ref_matmul(r[0], r[1]); });
  add_case("matmul_transposed_b", {in({2, 6, 10}), in_view({2, 11, 10}, [](const Tensor& t) { return t.transpose(1, 2); })},
           [](auto& t) { return matmul(t[0], t[1]); }, [](auto& r) { return ref_matmul(r[0], r[1]); });

  // --- conv2d -------------------------------------------------------------
  add_case("conv3x3_pad1", {in({2, 5, 9, 11}), in({7, 5, 3, 3}), in({7})},
           [](auto& t) { return conv2d(t[0], t[1], t[2], 1, 1); },
           [](auto& r) { return ref_conv2d(r[0], r[1], &r[2], 1, 1, nullptr); });
  add_case("conv3x3_stride2", {in({1, 4, 10, 9}), in({6, 4, 3, 3}), in({6})},
           [](auto& t) { return conv2d(t[0], t[1], t[2], 2, 1); },
           [](auto& r) { return ref_conv2d(r[0], r[1], &r[2], 2, 1, nullptr); });
  add_case("conv1x1_nobias", {in({2, 8, 6, 6}), in({4, 8, 1, 1})}, [](auto& t) { return conv2d(t[0], t[1]); },
           [](auto& r) { return ref_conv2d(r[0], r[1], nullptr, 1, 0, nullptr); });
  add_case("conv3x3_residual", {in({1, 3, 8, 8}), in({5, 3, 3, 3}), in({5}), in({1, 5, 8, 8})},
           [](auto& t) { return conv2d(t[0], t[1], t[2], 1, 1, t[3]); },
           [](auto& r) { return ref_conv2d(r[0], r[1], &r[2], 1, 1, &r[3]); });
  add_case("conv3x3_nhwc_view", {in_view({2, 9, 11, 5}, [](const Tensor& t) { return t.permute({0, 3, 1, 2}); }),
                                 in({6, 5, 3, 3}), in({6})},
           [](auto& t) { return conv2d(t[0], t[1], t[2], 1, 1); },
           [](auto& r) { return ref_conv2d(r[0], r[1], &r[2], 1, 1, nullptr); });
  add_case("conv3x3_nopad", {in({1, 3, 7, 6}), in({2, 3, 3, 3})}, [](auto& t) { return conv2d(t[0], t[1], {}, 1, 0); },
           [](auto& r) { return ref_conv2d(r[0], r[1], nullptr, 1, 0, nullptr); });
  add_case("conv_in_4_to_32", {in({2, 4, 16, 16}, -3, 3), in({32, 4, 3, 3}, -0.2f, 0.2f), in({32})},
           [](auto& t) { return conv2d(t[0], t[1], t[2], 1, 1); },
           [](auto& r) { return ref_conv2d(r[0], r[1], &r[2], 1, 1, nullptr); });
  add_case("conv3x3_64ch_residual_f32w", {in({1, 64, 8, 8}), weight({32, 64, 3, 3}, -0.05f, 0.05f), weight({32}),
                                          in({1, 32, 8, 8})},
           [](auto& t) { return conv2d(t[0], t[1], t[2], 1, 1, t[3]); },
           [](auto& r) { return ref_conv2d(r[0], r[1], &r[2], 1, 1, &r[3]); }, tol(4e-6, 1.2e-2, 1.5e-3));

  // --- group_norm / layer_norm ---------------------------------------------
  add_case("group_norm_1ch_per_group", {in({2, 32, 5, 7}), in({32}), in({32})},
           [](auto& t) { return group_norm(t[0], 32, t[1], t[2], 1e-6f); },
           [](auto& r) { return ref_group_norm(r[0], 32, r[1], r[2], 1e-6, false); });
  add_case("group_norm_2ch_per_group_silu", {in({2, 64, 4, 4}), in({64}), in({64})},
           [](auto& t) { return group_norm(t[0], 32, t[1], t[2], 1e-5f, true); },
           [](auto& r) { return ref_group_norm(r[0], 32, r[1], r[2], 1e-5, true); });
  add_case("group_norm_3d_silu", {in({1, 6, 13}), in({6}), in({6})},
           [](auto& t) { return group_norm(t[0], 2, t[1], t[2], 1e-5f, true); },
           [](auto& r) { return ref_group_norm(r[0], 2, r[1], r[2], 1e-5, true); });
  add_case("group_norm_offset_mean", {in({1, 8, 16, 16}, 4.0f, 6.0f), in({8}), in({8})},
           [](auto& t) { return group_norm(t[0], 4, t[1], t[2], 1e-6f); },
           [](auto& r) { return ref_group_norm(r[0], 4, r[1], r[2], 1e-6, false); }, tol(1e-5, 1.2e-2, 1.5e-3));
  add_case("group_norm_permuted", {in_view({2, 6, 5, 16}, [](const Tensor& t) { return t.permute({0, 3, 1, 2}); }),
                                   in({16}), in({16})},
           [](auto& t) { return group_norm(t[0], 4, t[1], t[2], 1e-5f, true); },
           [](auto& r) { return ref_group_norm(r[0], 4, r[1], r[2], 1e-5, true); });
  add_case("layer_norm", {in({2, 7, 33}), in({33}), in({33})},
           [](auto& t) { return layer_norm(t[0], t[1], t[2], 1e-5f); },
           [](auto& r) { return ref_layer_norm(r[0], r[1], r[2], 1e-5); });
  add_case("layer_norm_768_offset", {in({3, 768}, 2.0f, 3.0f), in({768}), in({768})},
           [](auto& t) { return layer_norm(t[0], t[1], t[2], 1e-5f); },
           [](auto& r) { return ref_layer_norm(r[0], r[1], r[2], 1e-5); }, tol(1e-5, 1.2e-2, 1.5e-3));
  add_case("layer_norm_sliced", {in_view({4, 3, 40}, [](const Tensor& t) { return t.slice(2, 5, 37); }), in({32}), in({32})},
           [](auto& t) { return layer_norm(t[0], t[1], t[2], 1e-5f); },
           [](auto& r) { return ref_layer_norm(r[0], r[1], r[2], 1e-5); });

  // --- softmax ------------------------------------------------------------
  add_case("softmax_last", {in({4, 77}, -4, 4)}, [](auto& t) { return softmax(t[0]); },
           [](auto& r) { return ref_softmax(r[0], -1); });
  add_case("softmax_mid_dim", {in({2, 5, 3}, -4, 4)}, [](auto& t) { return softmax(t[0], 1); },
           [](auto& r) { return ref_softmax(r[0], 1); });
  add_case("softmax_large_values", {in({3, 50}, -60, 60)}, [](auto& t) { return softmax(t[0]); },
           [](auto& r) { return ref_softmax(r[0], -1); });
  add_case("softmax_transposed", {in_view({9, 6}, [](const Tensor& t) { return t.transpose(0, 1); }, -3, 3)},
           [](auto& t) { return softmax(t[0]); }, [](auto& r) { return ref_softmax(r[0], -1); });

  // --- attention ----------------------------------------------------------
  add_case("attention_self", {in({2, 16, 32}), in({2, 16, 32}), in({2, 16, 32})},
           [](auto& t) { return attention(t[0], t[1], t[2], 4, 1.0f / std::sqrt(8.0f)); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 4, 1.0 / std::sqrt(8.0), false); });
  add_case("attention_cross_77", {in({2, 64, 40}, -2, 2), in({2, 77, 40}, -2, 2), in({2, 77, 40})},
           [](auto& t) { return attention(t[0], t[1], t[2], 8, 1.0f / std::sqrt(5.0f)); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 8, 1.0 / std::sqrt(5.0), false); });
  add_case("attention_causal_77", {in({1, 77, 64}, -2, 2), in({1, 77, 64}, -2, 2), in({1, 77, 64})},
           [](auto& t) { return attention(t[0], t[1], t[2], 4, 0.25f, true); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 4, 0.25, true); });
  // Several query and key blocks, causal mask crossing block borders.
  add_case("attention_causal_long", {in({1, 200, 64}, -2, 2), in({1, 200, 64}, -2, 2), in({1, 200, 64})},
           [](auto& t) { return attention(t[0], t[1], t[2], 2, 0.18f, true); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 2, 0.18, true); });
  add_case("attention_dv_differs", {in({1, 10, 12}), in({1, 10, 12}), in({1, 10, 10})},
           [](auto& t) { return attention(t[0], t[1], t[2], 2, 0.4f); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 2, 0.4, false); });
  add_case("attention_head40_odd_lengths", {in({1, 33, 80}, -2, 2), in({1, 19, 80}, -2, 2), in({1, 19, 80})},
           [](auto& t) { return attention(t[0], t[1], t[2], 2, 1.0f / std::sqrt(40.0f)); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 2, 1.0 / std::sqrt(40.0), false); });
  add_case("attention_head64_long", {in({1, 300, 128}, -2, 2), in({1, 300, 128}, -2, 2), in({1, 300, 128})},
           [](auto& t) { return attention(t[0], t[1], t[2], 2, 0.125f); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 2, 0.125, false); });
  // q, k, v sliced out of one packed projection (non-contiguous rows).
  add_case("attention_packed_qkv_views",
           {in_view({2, 20, 72}, [](const Tensor& t) { return t.slice(2, 0, 24); }),
            in_view({2, 20, 72}, [](const Tensor& t) { return t.slice(2, 24, 48); }),
            in_view({2, 20, 72}, [](const Tensor& t) { return t.slice(2, 48, 72); })},
           [](auto& t) { return attention(t[0], t[1], t[2], 3, 0.35f); },
           [](auto& r) { return ref_attention(r[0], r[1], r[2], 3, 0.35, false); });

  // --- activations ----------------------------------------------------------
  add_case("gelu", {in({3, 1000}, -6, 6)}, [](auto& t) { return gelu(t[0]); },
           [](auto& r) { return ref_unary(r[0], Activation::kGelu); });
  add_case("quick_gelu", {in({7, 130}, -6, 6)}, [](auto& t) { return quick_gelu(t[0]); },
           [](auto& r) { return ref_unary(r[0], Activation::kQuickGelu); });
  add_case("silu_permuted", {in_view({5, 4, 33}, [](const Tensor& t) { return t.permute({2, 0, 1}); }, -8, 8)},
           [](auto& t) { return silu(t[0]); }, [](auto& r) { return ref_unary(r[0], Activation::kSilu); });
  // ESRGAN's slope, on a channels-last-sized 4-D input, and a slope above 1 (a select, not a max).
  auto ref_leaky = [](const Ref& x, double slope) {
    Ref r = x;
    for (double& v : r.v) v = v >= 0 ? v : v * slope;
    return r;
  };
  add_case("leaky_relu_esrgan", {in({2, 8, 5, 7}, -4, 4)}, [](auto& t) { return leaky_relu(t[0], 0.2f); },
           [ref_leaky](auto& r) { return ref_leaky(r[0], 0.2); });
  add_case("leaky_relu_permuted_slope3",
           {in_view({5, 4, 33}, [](const Tensor& t) { return t.permute({2, 0, 1}); }, -4, 4)},
           [](auto& t) { return leaky_relu(t[0], 3.0f); }, [ref_leaky](auto& r) { return ref_leaky(r[0], 3.0); });
  add_case("geglu", {in({2, 5, 48}, -3, 3)}, [](auto& t) { return geglu(t[0]); }, [](auto& r) { return ref_geglu(r[0]); });
  add_case("relu", {in({3, 257}, -4, 4)}, [](auto& t) { return relu(t[0]); },
           [](auto& r) { return ref_unary(r[0], Activation::kRelu); });
  add_case("tanh_permuted", {in_view({5, 4, 33}, [](const Tensor& t) { return t.permute({2, 0, 1}); }, -5, 5)},
           [](auto& t) { return diffuse::tanh(t[0]); }, [](auto& r) { return ref_unary(r[0], Activation::kTanh); });

  // --- binary / axpby / scale ----------------------------------------------
  auto bin = [&](std::string name, Input a, Input b, Backend::BinaryOp op) {
    add_case(std::move(name), {std::move(a), std::move(b)},
             [op](auto& t) {
               return op == Backend::BinaryOp::kAdd ? add(t[0], t[1])
                      : op == Backend::BinaryOp::kSub ? sub(t[0], t[1])
                                                      : mul(t[0], t[1]);
             },
             [op](auto& r) { return ref_binary(r[0], r[1], op); });
  };
  bin("add_same", in({3, 129}), in({3, 129}), Backend::BinaryOp::kAdd);
  bin("add_broadcast_mid", in({2, 3, 4, 5}), in({3, 1, 5}), Backend::BinaryOp::kAdd);
  bin("add_channel_bias", in({2, 4, 6, 6}), in({2, 4, 1, 1}), Backend::BinaryOp::kAdd);
  bin("sub_broadcast_a", in({1, 7}), in({5, 1}), Backend::BinaryOp::kSub);
  bin("mul_scalar_b", in({4, 9}), in({1}), Backend::BinaryOp::kMul);
  bin("mul_permuted", in_view({6, 5}, [](const Tensor& t) { return t.transpose(0, 1); }), in({5, 6}),
      Backend::BinaryOp::kMul);
  add_case("axpby", {in({3, 50}), in({3, 50})}, [](auto& t) { return axpby(t[0], 0.7f, t[1], -1.3f); },
           [](auto& r) {
             Ref o = r[0];
             for (size_t i = 0; i < o.v.size(); ++i) o.v[i] = 0.7 * r[0].v[i] + -1.3 * r[1].v[i];
             return o;
           });
  add_case("scale_sliced", {in_view({4, 30}, [](const Tensor& t) { return t.slice(1, 1, 30, 3); })},
           [](auto& t) { return scale(t[0], 0.18215f); },
           [](auto& r) {
             Ref o = r[0];
             for (double& e : o.v) e *= 0.18215;
             return o;
           });

  // --- layout ---------------------------------------------------------------
  add_case("concat_dim1", {in({2, 3, 4}), in({2, 5, 4}), in({2, 1, 4})},
           [](auto& t) { return concat({t[0], t[1], t[2]}, 1); },
           [](auto& r) { return ref_concat({r[0], r[1], r[2]}, 1); });
  add_case("concat_last_views", {in_view({3, 2, 6}, [](const Tensor& t) { return t.transpose(0, 1); }), in({2, 3, 2})},
           [](auto& t) { return concat({t[0], t[1]}, -1); }, [](auto& r) { return ref_concat({r[0], r[1]}, -1); });
  add_case("concat_dim0", {in({1, 4, 3, 3}), in({2, 4, 3, 3})}, [](auto& t) { return concat({t[0], t[1]}, 0); },
           [](auto& r) { return ref_concat({r[0], r[1]}, 0); });
  add_case("copy_permuted", {in_view({2, 3, 4, 5}, [](const Tensor& t) { return t.permute({3, 1, 0, 2}); })},
           [](auto& t) { return copy(t[0]); }, [](auto& r) { return r[0]; });
  add_case("copy_strided_slice", {in_view({7, 9}, [](const Tensor& t) { return t.slice(0, 1, 7, 2).slice(1, 0, 9, 4); })},
           [](auto& t) { return copy(t[0]); }, [](auto& r) { return r[0]; });
  add_case("upsample", {in({2, 3, 5, 7})}, [](auto& t) { return upsample_nearest2x(t[0]); },
           [](auto& r) { return ref_upsample(r[0]); });
  add_case("upsample_permuted", {in_view({1, 4, 3, 2}, [](const Tensor& t) { return t.permute({0, 3, 1, 2}); })},
           [](auto& t) { return upsample_nearest2x(t[0]); }, [](auto& r) { return ref_upsample(r[0]); });
  add_case("embedding_i64", {in_ids({2, 7}, 50), in({50, 12})}, [](auto& t) { return embedding(t[0], t[1]); },
           [](auto& r) { return ref_embedding(r[0], r[1]); });
  add_case("embedding_i32", {in_ids({5}, 9, DType::kI32), in({9, 16})}, [](auto& t) { return embedding(t[0], t[1]); },
           [](auto& r) { return ref_embedding(r[0], r[1]); });

  // --- timestep embedding (f32 in, f32 out) -----------------------------------
  // f32 bound: diffusers itself computes the frequencies in f32, so t * freq
  // for t ~ 1000 carries ~1e-4 absolute error against exact arithmetic.
  Case te{"timestep_embedding_flip", {in({3}, 0, 1000)},
          [](auto& t) { return timestep_embedding(t[0], 32, true, 0.0f); },
          [](auto& r) { return ref_timestep_embedding(r[0], 32, true, 0.0, 10000.0); }, tol(3e-4, 0, 0), true, true};
  cs.push_back(te);
  Case te2{"timestep_embedding_odd_shift1", {in({4}, 0, 1000)},
           [](auto& t) { return timestep_embedding(t[0], 33, false, 1.0f); },
           [](auto& r) { return ref_timestep_embedding(r[0], 33, false, 1.0, 10000.0); }, tol(3e-4, 0, 0), true, true};
  cs.push_back(te2);
  return cs;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = make_cases();
  return cs;
}

using Param = std::tuple<size_t, DType, Device>;

class OpParity : public ::testing::TestWithParam<Param> {};

TEST_P(OpParity, MatchesFp64Reference) {
  auto [index, dtype, device] = GetParam();
  const Case& c = cases()[index];
  // The only skip: the Cuda/ instances (ctest label "cuda") on a machine without a GPU.
  if (!device_available(device)) GTEST_SKIP() << device_name(device) << " not available";

  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(c.name)));
  std::vector<Tensor> dev_inputs;
  std::vector<Ref> refs;
  for (const Input& in : c.inputs) {
    int64_t n = shape_numel(in.shape);
    Tensor base;
    if (in.ids) {
      std::uniform_int_distribution<int64_t> dist(0, in.id_max - 1);
      std::vector<int64_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = dist(rng);
      base = Tensor::from_ids(ids, in.shape).to(in.id_type);
    } else {
      std::uniform_real_distribution<float> dist(in.lo, in.hi);
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& x : v) {
        do x = dist(rng);
        while (x == 0.0f);  // never zeros: they hide indexing bugs
      }
      base = Tensor::from_vector(v, in.shape).to(in.keep_f32 ? DType::kF32 : dtype);
    }
    Tensor cpu_view = in.view ? in.view(base) : base;
    std::vector<float> vals = cpu_view.to_f32_vector();
    refs.push_back(Ref{cpu_view.shape(), std::vector<double>(vals.begin(), vals.end())});
    Tensor on_dev = base.to(device);
    dev_inputs.push_back(in.view ? in.view(on_dev) : on_dev);
  }

  Tensor out = c.run(dev_inputs);
  Ref expected = c.ref(refs);
  ASSERT_EQ(out.device(), device);
  EXPECT_EQ(out.dtype(), c.out_f32 ? DType::kF32 : dtype);
  ASSERT_EQ(out.shape(), expected.shape) << shape_str(out.shape()) << " vs " << shape_str(expected.shape);
  // Outputs are dense: contiguous, or channels-last where the backend keeps that layout (ops.h).
  const bool channels_last_in = std::any_of(dev_inputs.begin(), dev_inputs.end(), [](const Tensor& t) {
    return t.defined() && t.is_channels_last() && !t.is_contiguous();
  });
  ASSERT_TRUE(out.is_contiguous() || (channels_last_in && out.is_channels_last()))
      << "output strides are neither contiguous nor a kept channels-last layout";
  std::vector<float> got = out.to_f32_vector();

  double scale = 1e-30, max_err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    scale = std::max(scale, std::fabs(expected.v[i]));
    double err = std::isfinite(got[i]) ? std::fabs(got[i] - expected.v[i]) : INFINITY;
    if (err > max_err || (i == 0 && err > 0)) {
      max_err = err;
      worst = i;
    }
  }
  double rel = max_err / scale;
  double bound = dtype == DType::kF32 ? c.tol.f32 : dtype == DType::kBF16 ? c.tol.bf16 : c.tol.f16;
  { char buf[32]; std::snprintf(buf, sizeof buf, "%.3g", rel); RecordProperty("rel_err", buf); }
  EXPECT_LE(rel, bound) << c.name << " [" << dtype_name(dtype) << ", " << device_name(device) << "] worst at " << worst
                        << ": got " << got[worst] << " expected " << expected.v[worst] << " (scale " << scale << ")";
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  auto [index, dtype, device] = info.param;
  return cases()[index].name + "_" + dtype_name(dtype) + "_" + device_name(device);
}

// Every case in every dtype it supports (f32-only ops: f32 alone), per device.
// CMakeLists.txt labels the Cuda/ instances "cuda".
std::vector<Param> params(Device device) {
  std::vector<Param> ps;
  for (size_t i = 0; i < cases().size(); ++i)
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16})
      if (!cases()[i].f32_only || dt == DType::kF32) ps.emplace_back(i, dt, device);
  return ps;
}

INSTANTIATE_TEST_SUITE_P(Cpu, OpParity, ::testing::ValuesIn(params(Device::kCPU)), param_name);
INSTANTIATE_TEST_SUITE_P(Cuda, OpParity, ::testing::ValuesIn(params(Device::kCUDA)), param_name);

// Every op declared in ops.h has at least one case above.
TEST(OpParityCoverage, EveryOpHasACase) {
  std::vector<std::string> ops = {"linear", "matmul", "conv", "group_norm", "layer_norm", "softmax", "attention",
                                  "gelu", "quick_gelu", "silu", "leaky_relu", "relu", "tanh", "geglu", "add", "sub", "mul", "axpby", "scale",
                                  "concat", "copy", "upsample", "embedding", "timestep_embedding"};
  for (const std::string& op : ops) {
    bool found = false;
    for (const Case& c : cases()) found = found || c.name.rfind(op, 0) == 0;
    EXPECT_TRUE(found) << op;
  }
}

}  // namespace
