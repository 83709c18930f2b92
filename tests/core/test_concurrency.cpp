// Concurrency stress tests of the CPU ops (issue 17: a race that gave threads
// other threads' numbers where oneDNN picks its AVX-512 kernels).
//
// Each test computes one result per seed alone, then runs kThreads threads
// that recompute their own seed's result kReps times at once, and asserts
// every concurrent result is bit-identical to the lone one. Ops are
// deterministic for a fixed shape, so any difference is cross-talk between
// callers. Every op family runs in f32 and bf16. The tests are named
// *Concurrent* and kept well under a second each: scripts and reviewers run
// them 100 times in a row (--gtest_repeat=100) to prove a fix.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <functional>
#include <thread>

#include "core/ops.h"
#include "test_util.h"

using namespace diffuse;

namespace {

constexpr int kThreads = 6;
constexpr int kReps = 8;

Tensor make(int seed, Shape shape, DType dtype) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i) + 1.3f * static_cast<float>(seed));
  Tensor t = Tensor::from_vector(v, shape);
  return dtype == DType::kF32 ? t : t.to(dtype);
}

// Runs `work(seed)` alone for every seed, then kThreads threads at once (seed =
// thread index) kReps times each; returns how many concurrent results differed.
int mismatches(const std::function<Tensor(int)>& work) {
  std::vector<std::vector<float>> expected;
  for (int s = 0; s < kThreads; ++s) expected.push_back(work(s).to_f32_vector());
  for (int s = 1; s < kThreads; ++s) EXPECT_NE(expected[s], expected[0]) << "seeds must give different results";
  std::atomic<int> bad{0};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int s = 0; s < kThreads; ++s)
    threads.emplace_back([&, s] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // start together
      for (int rep = 0; rep < kReps; ++rep)
        if (work(s).to_f32_vector() != expected[s]) bad.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  return bad.load();
}

class Concurrent : public ::testing::TestWithParam<DType> {};

std::string dtype_param_name(const ::testing::TestParamInfo<DType>& info) { return dtype_name(info.param); }

}  // namespace

TEST_P(Concurrent, Linear) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              return linear(make(s, {2, 96, 320}, dt), make(s + 7, {320, 320}, dt), make(s + 9, {320}, DType::kF32),
                            Activation::kGelu);
            }));
}

TEST_P(Concurrent, BatchedMatmul) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) { return matmul(make(s, {8, 64, 40}, dt), make(s + 3, {8, 40, 77}, dt)); }));
}

TEST_P(Concurrent, Conv2d) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              Tensor x = make(s, {1, 32, 24, 24}, dt);
              return conv2d(x, make(s + 1, {64, 32, 3, 3}, dt), make(s + 2, {64}, DType::kF32), 1, 1);
            }));
}

TEST_P(Concurrent, Conv2dStridedWithResidual) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              Tensor x = make(s, {2, 16, 20, 20}, dt);
              return conv2d(x, make(s + 1, {16, 16, 3, 3}, dt), {}, 2, 1, make(s + 4, {2, 16, 10, 10}, dt));
            }));
}

TEST_P(Concurrent, Attention) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              return attention(make(s, {2, 256, 64}, dt), make(s + 1, {2, 77, 64}, dt), make(s + 2, {2, 77, 64}, dt),
                               8, 0.125f);
            }));
}

TEST_P(Concurrent, GroupNorm) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              return group_norm(make(s, {2, 64, 16, 16}, dt), 32, make(s + 1, {64}, DType::kF32),
                                make(s + 2, {64}, DType::kF32), 1e-5f, true);
            }));
}

TEST_P(Concurrent, LayerNorm) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              return layer_norm(make(s, {2, 256, 320}, dt), make(s + 1, {320}, DType::kF32),
                                make(s + 2, {320}, DType::kF32), 1e-5f);
            }));
}

TEST_P(Concurrent, Softmax) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) { return softmax(make(s, {4, 128, 77}, dt)); }));
}

TEST_P(Concurrent, Elementwise) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              Tensor a = make(s, {2, 64, 32, 32}, dt), b = make(s + 1, {2, 64, 32, 32}, dt);
              Tensor y = add(silu(a), mul(b, scale(a, 0.5f)));
              return axpby(y, 0.7f, upsample_nearest2x(make(s + 5, {2, 64, 16, 16}, dt)), -0.2f);
            }));
}

TEST_P(Concurrent, Activations) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              return concat({geglu(make(s, {2, 64, 640}, dt)), gelu(make(s + 3, {2, 64, 320}, dt)),
                             quick_gelu(make(s + 4, {2, 64, 32}, dt))},
                            -1);
            }));
}

// ESRGAN's dense-block step: conv, leaky ReLU, concat.
TEST_P(Concurrent, LeakyRelu) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              Tensor x = make(s, {1, 16, 24, 24}, dt);
              return concat({x, leaky_relu(make(s + 1, {1, 8, 24, 24}, dt), 0.2f)}, 1);
            }));
}

// A UNet-like chain of every family at once: callers interleave different ops.
TEST_P(Concurrent, MixedChain) {
  const DType dt = GetParam();
  EXPECT_EQ(0, mismatches([&](int s) {
              Tensor x = make(s, {1, 32, 16, 16}, dt);
              Tensor h = conv2d(x, make(s + 1, {32, 32, 3, 3}, dt), {}, 1, 1);
              h = group_norm(h, 8, {}, {}, 1e-5f, true);
              Tensor seq = make(s + 2, {1, 256, 32}, dt);
              Tensor q = linear(seq, make(s + 3, {32, 32}, dt));
              Tensor a = attention(q, q, q, 4, 0.35f);
              a = layer_norm(a, {}, {}, 1e-5f);
              return add(a, softmax(seq));
            }));
}

INSTANTIATE_TEST_SUITE_P(Ops, Concurrent, ::testing::Values(DType::kF32, DType::kBF16), dtype_param_name);
