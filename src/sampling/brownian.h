// A seeded Brownian motion that can be queried at any time, in any order:
// the noise of DPM++ SDE (k-diffusion's BrownianTreeNoiseSampler, which uses
// torchsde.BrownianTree; torchsde is not available here, so this is our own
// construction, specified in docs/samplers.md "Brownian noise").
//
// One independent standard Brownian motion W_e per element e of a tensor,
// on the interval [t0, t1], W_e(t0) = 0:
//  - W(t1) = sqrt(t1 - t0) * z(root);
//  - an interval [a, b] of the dyadic tree (level L, index j) has its
//    midpoint m = (a + b) / 2 at W(m) = (W(a) + W(b)) / 2 + sqrt((b - a) / 4) * z(L, j)
//    (the Brownian bridge between a and b);
//  - W(t) for any t descends the tree until the interval holding t is at most
//    kLeafWidth wide (or the depth reaches kMaxDepth), then draws the bridge
//    at t itself: W(a) + (t - a) / (b - a) * (W(b) - W(a)) + sqrt((t - a)(b - t) / (b - a)) * z(t).
// Every z is a standard normal from a counter-based generator, Philox4x32-10
// keyed by the 64-bit seed, counter (element block, node id low, node id
// high, tag), so a node's values do not depend on the order of queries:
// W(t) is a pure function of (seed, t0, t1, t). Four normals per Philox
// block: Box-Muller on the four 32-bit words, u = (word + 0.5) / 2^32, in
// double (z0 = r cos(2 pi u1), z1 = r sin(2 pi u1), r = sqrt(-2 ln u0); the
// same for words 2 and 3).
//
// The bridge draw at a leaf makes each single W(t) exactly distributed; two
// query times inside one leaf (less than kLeafWidth apart) are not jointly
// consistent, which no sampler's sigma grid comes near.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace diffuse {

class BrownianTree {
 public:
  static constexpr double kLeafWidth = 1e-4;  // absolute, in the time unit (sigma)
  static constexpr int kMaxDepth = 40;

  // numel independent motions on [t0, t1] (t0 < t1, finite).
  BrownianTree(uint64_t seed, int64_t numel, double t0, double t1);

  // W(t) for t in [t0, t1] (clamped), one value per element. The last few
  // results are cached (a step queries its start again): not thread-safe.
  std::vector<double> at(double t) const;
  // The normalised increment (W(hi) - W(lo)) / sqrt(hi - lo), f32 CPU tensor of `shape`
  // (numel elements); what k-diffusion's noise sampler returns for (sigma, sigma_next).
  Tensor increment(double lo, double hi, const Shape& shape) const;

  uint64_t seed() const { return seed_; }
  int64_t numel() const { return numel_; }
  double t0() const { return t0_; }
  double t1() const { return t1_; }

  // The standard normals of one tree node (exposed for tests and the Python reference):
  // tag 0: midpoint of dyadic node `node` (heap numbering: root interval 1, children 2n, 2n + 1);
  // tag 1: the bridge draw at time t (node = the bits of t as a double); tag 2: W(t1).
  static void normals(uint64_t seed, uint64_t node, uint32_t tag, int64_t n, double* out);

 private:
  // Elements [first, first + n) of a node's normals, and of W(t).
  static void normals_range(uint64_t seed, uint64_t node, uint32_t tag, int64_t first, int64_t n, double* out);
  void at_range(double t, int64_t first, int64_t n, double* out) const;

  uint64_t seed_;
  int64_t numel_;
  double t0_, t1_;
  mutable std::vector<std::pair<double, std::vector<double>>> cache_;
};

}  // namespace diffuse
