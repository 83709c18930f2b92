// The seeded Brownian tree (see the header for the construction).
#include "sampling/brownian.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "sampling/rng.h"

namespace diffuse {

namespace {

constexpr uint32_t kTagMidpoint = 0, kTagBridge = 1, kTagRoot = 2;

uint64_t bits_of(double t) {
  uint64_t b = 0;
  std::memcpy(&b, &t, sizeof b);
  return b;
}

}  // namespace

BrownianTree::BrownianTree(uint64_t seed, int64_t numel, double t0, double t1)
    : seed_(seed), numel_(numel), t0_(t0), t1_(t1) {
  DIFFUSE_CHECK_ARG(numel >= 1, "[BrownianTree] needs at least one element, got " + std::to_string(numel));
  DIFFUSE_CHECK_ARG(
      std::isfinite(t0) && std::isfinite(t1) && t0 < t1,
      "[BrownianTree] needs a finite interval t0 < t1, got [" + std::to_string(t0) + ", " + std::to_string(t1) + "]");
}

void BrownianTree::normals(uint64_t seed, uint64_t node, uint32_t tag, int64_t n, double* out) {
  normals_range(seed, node, tag, 0, n, out);
}

void BrownianTree::normals_range(uint64_t seed, uint64_t node, uint32_t tag, int64_t first, int64_t n, double* out) {
  const uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  const double kScale = 1.0 / 4294967296.0;  // 2^-32
  const double kTwoPi = 6.283185307179586;
  for (int64_t e = first - first % 4; e < first + n; e += 4) {
    const int64_t block = e / 4;
    const Philox4 r = philox4x32_10(
        Philox4{{static_cast<uint32_t>(block), static_cast<uint32_t>(node), static_cast<uint32_t>(node >> 32), tag}},
        key0, key1);
    double z[4];
    for (int p = 0; p < 2; ++p) {
      const double u0 = (static_cast<double>(r.v[2 * p]) + 0.5) * kScale;
      const double u1 = (static_cast<double>(r.v[2 * p + 1]) + 0.5) * kScale;
      const double radius = std::sqrt(-2.0 * std::log(u0));
      z[2 * p] = radius * std::cos(kTwoPi * u1);
      z[2 * p + 1] = radius * std::sin(kTwoPi * u1);
    }
    for (int64_t i = 0; i < 4; ++i) {
      if (e + i >= first && e + i < first + n) out[e + i - first] = z[i];
    }
  }
}

void BrownianTree::at_range(double t, int64_t first, int64_t n, double* out) const {
  const size_t m = static_cast<size_t>(n);
  std::vector<double> wa(m, 0.0), wb(m), z(m);
  if (t == t0_) {
    std::copy(wa.begin(), wa.end(), out);
    return;
  }
  normals_range(seed_, 1, kTagRoot, first, n, wb.data());
  const double root = std::sqrt(t1_ - t0_);
  for (double& v : wb) v *= root;
  if (t == t1_) {
    std::copy(wb.begin(), wb.end(), out);
    return;
  }
  double a = t0_, b = t1_;
  uint64_t node = 1;
  for (int depth = 0; b - a > kLeafWidth && depth < kMaxDepth; ++depth) {
    const double mid = (a + b) / 2;
    normals_range(seed_, node, kTagMidpoint, first, n, z.data());
    const double sd = std::sqrt((b - a) / 4);
    const bool left = t < mid;
    // The bridge midpoint replaces the end on t's side.
    std::vector<double>& replaced = left ? wb : wa;
    for (size_t i = 0; i < m; ++i) replaced[i] = (wa[i] + wb[i]) / 2 + sd * z[i];
    if (t == mid) {
      std::copy(replaced.begin(), replaced.end(), out);
      return;
    }
    if (left) {
      b = mid;
      node = 2 * node;
    } else {
      a = mid;
      node = 2 * node + 1;
    }
  }
  // The bridge between a and b, drawn at t.
  normals_range(seed_, bits_of(t), kTagBridge, first, n, z.data());
  const double w = (t - a) / (b - a), sd = std::sqrt((t - a) * (b - t) / (b - a));
  for (size_t i = 0; i < m; ++i) out[i] = wa[i] + w * (wb[i] - wa[i]) + sd * z[i];
}

std::vector<double> BrownianTree::at(double t) const {
  t = std::min(std::max(t, t0_), t1_);
  for (const auto& [ct, values] : cache_) {
    if (ct == t) return values;
  }
  std::vector<double> out(static_cast<size_t>(numel_));
  // Elements are independent: chunks of them descend the tree in parallel.
  parallel_for(numel_, 4096, [&](int64_t begin, int64_t end) { at_range(t, begin, end - begin, out.data() + begin); });
  cache_.emplace_back(t, out);
  if (cache_.size() > 3) cache_.erase(cache_.begin());
  return out;
}

Tensor BrownianTree::increment(double lo, double hi, const Shape& shape) const {
  DIFFUSE_CHECK_ARG(shape_numel(shape) == numel_, "[BrownianTree] shape " + shape_str(shape) + " has " +
                                                      std::to_string(shape_numel(shape)) + " elements, the tree " +
                                                      std::to_string(numel_));
  DIFFUSE_CHECK_ARG(
      lo < hi, "[BrownianTree] increment needs lo < hi, got [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  const std::vector<double> w_lo = at(lo), w_hi = at(hi);
  const double norm = 1.0 / std::sqrt(hi - lo);
  Tensor out = Tensor::empty(shape, DType::kF32);
  float* p = out.data<float>();
  for (size_t i = 0; i < w_lo.size(); ++i) p[i] = static_cast<float>((w_hi[i] - w_lo[i]) * norm);
  return out;
}

}  // namespace diffuse
