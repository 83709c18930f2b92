// The A1111 / ComfyUI sigma schedules (see the header and docs/samplers.md).
#include "sampling/sigma_schedules.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "sampling/schedule_tables.h"

namespace diffuse::sched {

namespace {

// Regularized incomplete beta I_x(a, b) for x in (0, 1): the continued fraction
// x^a (1 - x)^b / (a B(a, b)) / (1 + d1 / (1 + d2 / (1 + ...))) with
// d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
// d_{2m}   =  m (b - m) x / ((a + 2m - 1)(a + 2m)),
// evaluated by the modified Lentz method; it converges fast for
// x < (a + 1) / (a + b + 2), and I_x(a, b) = 1 - I_{1-x}(b, a) gives the rest.
double incomplete_beta(double x, double a, double b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - incomplete_beta(1 - x, b, a);
  const double log_front =
      a * std::log(x) + b * std::log1p(-x) - std::log(a) - (std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b));
  const double tiny = 1e-300;
  double f = 1, c = 1, d = 0;
  for (int j = 1; j < 10000; ++j) {
    const int m = j / 2;
    const double dj = j % 2 == 1 ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                                 : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 + dj * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1 + dj / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double delta = c * d;
    f *= delta;
    if (std::fabs(delta - 1) < 1e-16) break;
  }
  return std::exp(log_front) / f;
}

std::vector<double> linspace(double start, double stop, int num) { return np_linspace(start, stop, num); }

}  // namespace

double beta_ppf(double p, double a, double b) {
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  double lo = 0, hi = 1;
  for (int i = 0; i < 200 && hi - lo > 1e-17; ++i) {
    const double mid = (lo + hi) / 2;
    if (incomplete_beta(mid, a, b) < p)
      lo = mid;
    else
      hi = mid;
  }
  return (lo + hi) / 2;
}

double t_to_sigma(double t, const std::vector<float>& table) {
  const double t_max = static_cast<double>(table.size() - 1);
  t = std::min(std::max(t, 0.0), t_max);
  const size_t low = static_cast<size_t>(std::floor(t)), high = static_cast<size_t>(std::ceil(t));
  const double w = t - std::floor(t);
  // k-diffusion's log_sigmas is a float32 tensor: the logs are rounded to float.
  const double log_sigma =
      (1 - w) * static_cast<double>(std::log(table[low])) + w * static_cast<double>(std::log(table[high]));
  return std::exp(log_sigma);
}

const std::vector<double>& ays_table(bool sdxl) {
  // https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html (as A1111 and diffusers list them).
  static const std::vector<double> kSd15 = {14.615, 6.475, 3.861, 2.697, 1.886, 1.396,
                                            0.963,  0.652, 0.399, 0.152, 0.029};
  static const std::vector<double> kSdxl = {14.615, 6.315, 3.771, 2.181, 1.342, 0.862,
                                            0.555,  0.380, 0.234, 0.113, 0.029};
  return sdxl ? kSdxl : kSd15;
}

std::vector<double> schedule_sigmas(Schedule s, const std::vector<float>& table, int n,
                                    const std::string& model_family) {
  DIFFUSE_CHECK_ARG(n >= 1, "[schedule] the number of steps must be >= 1, got " + std::to_string(n));
  DIFFUSE_CHECK_ARG(table.size() >= 2, "[schedule] the training sigma table needs at least 2 values");
  const int N = static_cast<int>(table.size());
  const double sigma_min = table.front(), sigma_max = table.back();
  const std::vector<float> log_sigmas = log_table(table);
  std::vector<double> out;
  switch (s) {
    case Schedule::kDefault:
      throw_error(ErrorCode::kRuntime, "[schedule] the default schedule is built by each sampler");
    case Schedule::kUniform:  // k-diffusion DiscreteSchedule.get_sigmas: t = linspace(N - 1, 0, n)
      for (double t : linspace(N - 1, 0, n)) out.push_back(t_to_sigma(t, table));
      break;
    case Schedule::kKarras:  // get_sigmas_karras(n, sigma_min, sigma_max, rho = 7)
      out = karras_sigmas(sigma_min, sigma_max, n);
      break;
    case Schedule::kExponential:  // exp(linspace(log sigma_max, log sigma_min, n))
      for (double l : linspace(std::log(sigma_max), std::log(sigma_min), n)) out.push_back(std::exp(l));
      break;
    case Schedule::kPolyexponential: {  // exp(ramp^rho (log max - log min) + log min), ramp = linspace(1, 0, n), rho =
                                        // 1
      const double rho = 1.0;
      for (double r : linspace(1, 0, n))
        out.push_back(std::exp(std::pow(r, rho) * (std::log(sigma_max) - std::log(sigma_min)) + std::log(sigma_min)));
      break;
    }
    case Schedule::kSgmUniform:  // t = linspace(t(sigma_max), t(sigma_min), n + 1)[:-1]
    case Schedule::kNormal: {    // t = linspace(t(sigma_max), t(sigma_min), n)
      const double start = sigma_to_t(sigma_max, log_sigmas), end = sigma_to_t(sigma_min, log_sigmas);
      const std::vector<double> ts = s == Schedule::kSgmUniform ? linspace(start, end, n + 1) : linspace(start, end, n);
      for (int i = 0; i < n; ++i) out.push_back(t_to_sigma(ts[static_cast<size_t>(i)], table));
      break;
    }
    case Schedule::kKlOptimal: {  // ComfyUI: tan(w atan(sigma_min) + (1 - w) atan(sigma_max)), w = i / (n - 1)
      const double a_min = std::atan(sigma_min), a_max = std::atan(sigma_max);
      for (int i = 0; i < n; ++i) {
        const double w = n == 1 ? 0.0 : static_cast<double>(i) / (n - 1);
        out.push_back(std::tan(w * a_min + (1 - w) * a_max));
      }
      break;
    }
    case Schedule::kAlignYourSteps: {  // A1111: the table as is for 11 steps, else log-linear interpolation
      const std::vector<double>& t = ays_table(model_family == "sdxl");
      if (static_cast<size_t>(n) == t.size()) return t;
      // xs = linspace(0, 1, len); ys = log(reversed table); exp(interp(linspace(0, 1, n), xs, ys)), reversed.
      const std::vector<double> xs = linspace(0, 1, static_cast<int>(t.size()));
      std::vector<double> ys;
      for (auto it = t.rbegin(); it != t.rend(); ++it) ys.push_back(std::log(*it));
      for (double x : linspace(0, 1, n)) {
        size_t j = 0;
        while (j + 2 < xs.size() && x > xs[j + 1]) ++j;
        const double w = std::min(std::max((x - xs[j]) / (xs[j + 1] - xs[j]), 0.0), 1.0);
        out.push_back(std::exp(ys[j] + w * (ys[j + 1] - ys[j])));
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case Schedule::kSimple: {  // table[N - 1 - int(x * N / n)], x = 0 .. n - 1
      const double ss = static_cast<double>(N) / n;
      for (int x = 0; x < n; ++x) out.push_back(table[static_cast<size_t>(N - 1 - static_cast<int>(x * ss))]);
      break;
    }
    case Schedule::kDdim: {  // table[1], table[1 + ss], ... below N (ss = max(N // n, 1)), reversed
      const int ss = std::max(N / n, 1);
      for (int x = 1; x < N; x += ss) out.push_back(table[static_cast<size_t>(x)]);
      std::reverse(out.begin(), out.end());
      break;
    }
    case Schedule::kBeta: {                  // sigma_min + ppf(1 - linspace(0, 1, n); 0.6, 0.6) (sigma_max - sigma_min)
      const double alpha = 0.6, beta = 0.6;  // A1111's beta_dist_alpha / beta_dist_beta defaults
      for (double x : linspace(0, 1, n))
        out.push_back(sigma_min + beta_ppf(1 - x, alpha, beta) * (sigma_max - sigma_min));
      break;
    }
  }
  return out;
}

}  // namespace diffuse::sched
