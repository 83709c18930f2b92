// Tensor handles, views, dtype conversions, the thread pool and op validation.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <thread>

#include "core/ops.h"
#include "core/thread_pool.h"
#include "test_util.h"

using namespace diffuse;

namespace {

std::vector<float> iota(int64_t n, float start = 0.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

template <class F>
std::string error_message(F&& f, ErrorCode* code = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kI64), 8u);
  EXPECT_STREQ(dtype_name(DType::kF16), "f16");
  EXPECT_EQ(dtype_from_name("float16"), DType::kF16);
  EXPECT_EQ(dtype_from_name("BF16"), DType::kBF16);
  EXPECT_EQ(dtype_from_name("fp32"), DType::kF32);
  EXPECT_THROW(dtype_from_name("f8"), Error);
}

TEST(DType, HalfScalarConversions) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even -> 0
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_FLOAT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_FLOAT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(f16_to_f32(0xfc00)));
  // Every half round-trips through f32.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << h;
  }
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // tie to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // tie to even (up)
}

TEST(DType, BulkConvertMatchesScalar) {
  std::vector<float> src(1000);
  for (size_t i = 0; i < src.size(); ++i) src[i] = std::sin(0.37f * i) * std::pow(10.0f, static_cast<float>(i % 13) - 8);
  src[5] = 70000.0f;
  src[6] = -INFINITY;
  std::vector<uint16_t> h(src.size()), b(src.size());
  convert(src.data(), DType::kF32, h.data(), DType::kF16, src.size());
  convert(src.data(), DType::kF32, b.data(), DType::kBF16, src.size());
  std::vector<float> back(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(h[i], f32_to_f16(src[i])) << i << " " << src[i];
    ASSERT_EQ(b[i], f32_to_bf16(src[i])) << i;
  }
  convert(h.data(), DType::kF16, back.data(), DType::kF32, h.size());
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(back[i], f16_to_f32(h[i]));
  std::vector<int64_t> ids(3);
  float fv[3] = {1.9f, -2.5f, 7.0f};
  convert(fv, DType::kF32, ids.data(), DType::kI64, 3);
  EXPECT_EQ(ids, (std::vector<int64_t>{1, -2, 7}));
}

TEST(Tensor, FactoriesAndShape) {
  Tensor t = Tensor::zeros({2, 3}, DType::kF32);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_THROW(t.dim(2), Error);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.to_f32_vector(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  Tensor f = Tensor::full({4}, 2.5f, DType::kBF16);
  EXPECT_EQ(f.dtype(), DType::kBF16);
  EXPECT_EQ(f.to_f32_vector(), std::vector<float>(4, 2.5f));
  EXPECT_EQ(t.str(), "Tensor(f32, cpu, (2,3))");
  EXPECT_FALSE(Tensor().defined());
  EXPECT_THROW(Tensor::from_vector({1, 2, 3}, {2, 2}), Error);
  EXPECT_THROW(t.data<uint16_t>(), Error);
  EXPECT_FLOAT_EQ(Tensor::from_vector({4.5f}, {1}).item(), 4.5f);
  EXPECT_EQ(Tensor::from_ids({3, 1}, {2}).to_i64_vector(), (std::vector<int64_t>{3, 1}));
}

TEST(Tensor, FromBlobIsZeroCopyAndKeepsOwnerAlive) {
  auto buf = std::make_shared<std::vector<float>>(iota(6));
  std::weak_ptr<std::vector<float>> weak = buf;
  Tensor t = Tensor::from_blob(buf->data(), {2, 3}, DType::kF32, buf);
  EXPECT_EQ(t.raw_data(), buf->data());
  buf.reset();
  EXPECT_FALSE(weak.expired());
  EXPECT_FLOAT_EQ(t.select(0, 1).select(0, 2).item(), 5.0f);
  t = Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector(iota(24), {2, 3, 4});
  Tensor p = t.permute({2, 0, 1});  // (4,2,3)
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(p.storage(), t.storage());
  std::vector<float> pv = p.to_f32_vector();
  // p[k, i, j] = t[i, j, k] = 12 i + 4 j + k
  EXPECT_FLOAT_EQ(pv[(3 * 2 + 1) * 3 + 2], 12 + 8 + 3);
  Tensor s = t.slice(2, 1, 4, 2);  // k in {1, 3}
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.to_f32_vector()[3], 4 + 3);
  EXPECT_EQ(t.slice(1, -2, 100).shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(t.select(1, -1).to_f32_vector()[0], 8.0f);
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 2, 3, 4}));
  EXPECT_EQ(t.unsqueeze(-1).shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ(t.unsqueeze(1).squeeze(1).shape(), t.shape());
  EXPECT_EQ(t.flatten(1).shape(), (Shape{2, 12}));
  EXPECT_EQ(t.reshape({-1, 4}).shape(), (Shape{6, 4}));
  EXPECT_EQ(t.reshape({-1, 4}).storage(), t.storage());
  EXPECT_THROW(t.reshape({5, -1}), Error);
  // reshape of a permuted view copies and keeps logical order.
  Tensor r = p.reshape({8, 3});
  EXPECT_NE(r.storage(), t.storage());
  EXPECT_EQ(r.to_f32_vector(), pv);
  Tensor tt = t.transpose(0, 2).contiguous();
  EXPECT_TRUE(tt.is_contiguous());
  EXPECT_EQ(tt.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(tt.to_f32_vector()[1], 12.0f);
  Tensor c = t.clone();
  EXPECT_NE(c.storage(), t.storage());
  EXPECT_EQ(c.to_f32_vector(), t.to_f32_vector());
}

TEST(Tensor, DtypeConversionOfViews) {
  Tensor t = Tensor::from_vector(iota(12, -6.0f), {3, 4});
  Tensor v = t.transpose(0, 1).to(DType::kF16);
  EXPECT_EQ(v.dtype(), DType::kF16);
  EXPECT_EQ(v.to_f32_vector(), t.transpose(0, 1).to_f32_vector());
  EXPECT_EQ(v.to(DType::kBF16).to(DType::kF32).to_f32_vector(), v.to_f32_vector());
  Tensor same = t.to(DType::kF32);
  EXPECT_EQ(same.storage(), t.storage());
  Tensor ids = t.to(DType::kI32);
  EXPECT_EQ(ids.to_i64_vector()[0], -6);
}

TEST(Tensor, CudaWithoutBuildThrowsUnsupported) {
  if (device_available(Device::kCUDA)) GTEST_SKIP() << "CUDA present";
  ErrorCode code{};
  std::string msg = error_message([] { backend_for(Device::kCUDA); }, &code);
  EXPECT_EQ(code, ErrorCode::kUnsupported);
#ifdef DIFFUSE_HAVE_CUDA
  // A CUDA build on a machine without a GPU (CI) says that no device is present.
  EXPECT_NE(msg.find("no CUDA device"), std::string::npos) << msg;
#else
  EXPECT_NE(msg.find("built without CUDA"), std::string::npos) << msg;
#endif
  EXPECT_THROW(Tensor::zeros({2}, DType::kF32).to(Device::kCUDA), Error);
}

TEST(ThreadPool, CoversRangeExactlyOnce) {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    EXPECT_EQ(num_threads(), threads);
    std::vector<std::atomic<int>> hits(1001);
    parallel_for(1001, 7, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
      // Nested calls run inline.
      parallel_for(3, 1, [&](int64_t, int64_t) {});
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
  set_num_threads(0);
  EXPECT_GE(num_threads(), 1);
  int64_t calls = 0;
  parallel_for(0, 1, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

TEST(Ops, ValidationMessagesNameOpAndShapes) {
  Tensor x = Tensor::zeros({2, 77, 768}, DType::kF32);
  Tensor w = Tensor::zeros({320, 1024}, DType::kF32);
  ErrorCode code{};
  std::string msg = error_message([&] { linear(x, w); }, &code);
  EXPECT_EQ(code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(msg, "[linear] last dim of x (2,77,768) must match w (320,1024)");
  Tensor img = Tensor::zeros({2, 8, 6, 6}, DType::kF32);
  msg = error_message([&] { conv2d(img, Tensor::zeros({320, 4, 3, 3}, DType::kF32)); });
  EXPECT_EQ(msg, "[conv2d] weight (320,4,3,3) expects input channels 4, got x (2,8,6,6)");
  EXPECT_NE(error_message([&] { group_norm(img, 3, {}, {}, 1e-5f); }).find("[group_norm]"), std::string::npos);
  EXPECT_NE(error_message([&] { add(Tensor::zeros({2, 3}, DType::kF32), Tensor::zeros({4}, DType::kF32)); })
                .find("[add] cannot broadcast a (2,3) with b (4)"),
            std::string::npos);
  EXPECT_THROW(matmul(Tensor::zeros({2, 3}, DType::kF32), Tensor::zeros({4, 5}, DType::kF32)), Error);
  EXPECT_THROW(attention(x, x, x, 5, 1.0f), Error);
  EXPECT_THROW(embedding(Tensor::from_ids({0, 9}, {2}), Tensor::zeros({9, 4}, DType::kF32)), Error);
  EXPECT_THROW(embedding(Tensor::from_vector({0}, {1}), Tensor::zeros({9, 4}, DType::kF32)), Error);
  EXPECT_THROW(concat({Tensor::zeros({2, 3}, DType::kF32), Tensor::zeros({3, 3}, DType::kF32)}, 1), Error);
  EXPECT_THROW(softmax(x, 3), Error);
  EXPECT_THROW(geglu(Tensor::zeros({3}, DType::kF32)), Error);
  EXPECT_THROW(gelu(Tensor::from_ids({1}, {1})), Error);
}

TEST(Ops, SmallKnownValues) {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = Tensor::from_vector({1, 0, -1, 2, 1, 0}, {2, 3});
  Tensor b = Tensor::from_vector({0.5f, -1}, {2});
  EXPECT_EQ(linear(a, w, b).to_f32_vector(), (std::vector<float>{-1.5f, 3, -1.5f, 12}));
  EXPECT_EQ(matmul(a, w.transpose(0, 1)).to_f32_vector(), (std::vector<float>{-2, 4, -2, 13}));
  EXPECT_EQ(add(a, b.reshape({2, 1})).to_f32_vector(), (std::vector<float>{1.5f, 2.5f, 3.5f, 3, 4, 5}));
  EXPECT_EQ(axpby(a, 2, w, -1).to_f32_vector(), (std::vector<float>{1, 4, 7, 6, 9, 12}));
  EXPECT_EQ(concat({a, w}, 0).shape(), (Shape{4, 3}));
  EXPECT_EQ(concat({a, w}, 1).to_f32_vector(), (std::vector<float>{1, 2, 3, 1, 0, -1, 4, 5, 6, 2, 1, 0}));
  Tensor up = upsample_nearest2x(Tensor::from_vector({1, 2, 3, 4}, {1, 1, 2, 2}));
  EXPECT_EQ(up.to_f32_vector(), (std::vector<float>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
  Tensor e = embedding(Tensor::from_ids({2, 0}, {1, 2}), Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2}));
  EXPECT_EQ(e.shape(), (Shape{1, 2, 2}));
  EXPECT_EQ(e.to_f32_vector(), (std::vector<float>{5, 6, 1, 2}));
  Tensor s = softmax(Tensor::from_vector({0, std::log(3.0f)}, {2}));
  EXPECT_NEAR(s.to_f32_vector()[0], 0.25f, 1e-6f);
  Tensor te = timestep_embedding(Tensor::from_vector({0, 1}, {2}), 4, false, 1.0f);
  // half = 2, freqs = exp(-ln(1e4) * i / (2 - 1)) = {1, 1e-4}; [sin, cos]
  std::vector<float> tv = te.to_f32_vector();
  EXPECT_FLOAT_EQ(tv[0], 0.0f);
  EXPECT_FLOAT_EQ(tv[2], 1.0f);
  EXPECT_NEAR(tv[4], std::sin(1.0f), 1e-7f);
  EXPECT_NEAR(tv[5], std::sin(1e-4f), 1e-9f);
  EXPECT_NEAR(tv[6], std::cos(1.0f), 1e-7f);
}

// The CPU conv caches reordered weights per weight storage: a new weight of the
// same shape (or the old storage freed and its address reused) must not hit it.
TEST(Ops, ConvWeightCacheFollowsStorage) {
  Tensor x = Tensor::from_vector(iota(2 * 3 * 5 * 5, -20.0f), {2, 3, 5, 5});
  std::vector<float> wv = iota(4 * 3 * 9, -50.0f);
  Tensor w1 = Tensor::from_vector(wv, {4, 3, 3, 3});
  std::vector<float> y1 = conv2d(x, w1, {}, 1, 1).to_f32_vector();
  for (int round = 0; round < 3; ++round) {
    Tensor w2 = scale(w1, 2.0f + round);
    std::vector<float> y2 = conv2d(x, w2, {}, 1, 1).to_f32_vector();
    for (size_t i = 0; i < y1.size(); ++i) ASSERT_FLOAT_EQ(y2[i], (2.0f + round) * y1[i]) << i;
  }
  EXPECT_EQ(conv2d(x, w1, {}, 1, 1).to_f32_vector(), y1);
  // A bf16 view of the same values goes through its own cache entry.
  Tensor xb = x.to(DType::kBF16);
  std::vector<float> yb = conv2d(xb, w1.to(DType::kBF16), {}, 1, 1).to_f32_vector();
  EXPECT_EQ(yb.size(), y1.size());
}

// Ops called from several threads at once (the server does this) give the same
// results as when called alone: the pool, oneDNN streams and caches are shared.
TEST(Ops, ConcurrentCallersGetTheirOwnResults) {
  auto make = [](int seed, Shape shape) {
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.1f * static_cast<float>(i) + seed);
    return Tensor::from_vector(v, shape);
  };
  auto work = [&](int seed) {
    Tensor x = make(seed, {2, 64, 48}), w = make(seed + 1, {40, 48});
    Tensor y = linear(x, w, {}, Activation::kGelu);
    Tensor a = attention(y, y, y, 5, 0.3f);
    Tensor img = make(seed + 2, {1, 6, 12, 12});
    Tensor c = conv2d(img, make(seed + 3, {6, 6, 3, 3}), {}, 1, 1, img);
    Tensor g = group_norm(c, 3, {}, {}, 1e-5f, true);
    std::vector<float> out = a.to_f32_vector();
    std::vector<float> gv = g.to_f32_vector();
    out.insert(out.end(), gv.begin(), gv.end());
    return out;
  };
  std::vector<std::vector<float>> expected;
  for (int s = 0; s < 4; ++s) expected.push_back(work(s));
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> threads;
  for (int s = 0; s < 4; ++s)
    threads.emplace_back([&, s] {
      for (int rep = 0; rep < 3; ++rep) got[s] = work(s);
    });
  for (auto& t : threads) t.join();
  for (int s = 0; s < 4; ++s) EXPECT_EQ(got[s], expected[s]) << s;
}
