#!/usr/bin/env python3
"""fp64 reference for the Heun sampler (src/sampling/heun.cpp).

Follows the algorithm of diffusers' HeunDiscreteScheduler as of diffusers commit
58eb52c0803ea9af3abec60841c2a093bdf1f951 (src/diffusers/schedulers/scheduling_heun_discrete.py,
the commit the other golden fixtures were made with), written from scratch in
plain Python floats: no torch, numpy or diffusers needed.

Precision: the arithmetic is float64. Where diffusers stores a table in
float32 (torch's betas, alphas_cumprod and sigma table, numpy's float32
log-sigmas and timesteps, the final sigmas) the value is rounded to float32 at
that point, so the tables are what diffusers holds. The per-step math (the
trajectories) stays in float64 from float32 inputs: the C++ float32 steps are
compared with it under the same tolerance as the diffusers trajectories.

Writes tests/sampling/data/heun_reference.json:
  tables:        timesteps / sigmas / init_noise_sigma for several configs and step counts
  trajectories:  sample0, the model output of every evaluation, and the scaled
                 model inputs and samples after every step
It also prints the four full-loop numbers of diffusers' own
tests/schedulers/test_scheduler_heun.py (its dummy model) as computed by this
reference; tests/sampling/test_heun.cpp checks the C++ port against diffusers'
published values of those.

Usage: python3 tools/reference/heun_reference.py [output.json]
"""
import json
import math
import os
import struct
import sys

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"


def f32(x):
    """Rounds a Python float to the nearest float32 (what storing it in a float32 tensor does)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


# ---------------------------------------------------------------- training schedule


def torch_linspace_f32(start, end, steps):
    """torch.linspace(start, end, steps, dtype=float32) on the CPU: a float32 step; the first
    half counted up from start, the second half down from end."""
    if steps == 1:
        return [f32(start)]
    start, end = f32(start), f32(end)
    step = f32(f32(end - start) / (steps - 1))
    half = steps // 2
    out = []
    for i in range(steps):
        if i < half:
            out.append(f32(start + f32(step * i)))
        else:
            out.append(f32(end - f32(step * (steps - i - 1))))
    return out


def betas_for(config):
    n = config.get("num_train_timesteps", 1000)
    start = config.get("beta_start", 0.00085)  # HeunDiscreteScheduler's defaults
    end = config.get("beta_end", 0.012)
    schedule = config.get("beta_schedule", "linear")
    if schedule == "linear":
        return torch_linspace_f32(start, end, n)
    if schedule == "scaled_linear":
        return [f32(b * b) for b in torch_linspace_f32(start ** 0.5, end ** 0.5, n)]
    raise ValueError("beta_schedule %s is not in this reference" % schedule)


def alphas_cumprod_for(betas):
    # alphas = 1 - betas (float32); torch's CPU cumprod accumulates in double, stores float32.
    out, acc = [], 1.0
    for b in betas:
        acc *= f32(1.0 - b)
        out.append(f32(acc))
    return out


def sigma_table(alphas_cumprod):
    # ((1 - ac) / ac) ** 0.5, each op in float32.
    return [f32(math.sqrt(f32(f32(1.0 - a) / a))) for a in alphas_cumprod]


# ---------------------------------------------------------------- set_timesteps


def np_linspace(start, stop, num):
    if num == 1:
        return [float(start)]
    step = (stop - start) / (num - 1)
    out = [i * step + start for i in range(num)]
    out[-1] = float(stop)
    return out


def np_arange(start, stop, step):
    n = math.ceil((stop - start) / step)
    delta = (start + step) - start
    return [start + i * delta for i in range(max(n, 0))]


def np_round(x):
    return float(round(x))  # Python's round() is half-to-even, like numpy's


def np_interp_index(x, fp):
    if x <= 0:
        return fp[0]
    if x >= len(fp) - 1:
        return fp[-1]
    j = int(math.floor(x))
    slope = (fp[j + 1] - fp[j]) / 1.0
    return slope * (x - j) + fp[j]


def sigma_to_t(sigma, log_sigmas):
    log_sigma = math.log(max(sigma, 1e-10))
    # low = the last index whose log-sigma is <= log_sigma (cumsum(dists >= 0).argmax()), at most len - 2
    low = 0
    for i, ls in enumerate(log_sigmas):
        if log_sigma - ls >= 0:
            low = i
    low = min(low, len(log_sigmas) - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = min(max((lo - log_sigma) / (lo - hi), 0.0), 1.0)
    return (1 - w) * low + w * (low + 1)


def karras(sigma_min, sigma_max, n, rho=7.0):
    ramp = np_linspace(0.0, 1.0, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + r * (lo - hi)) ** rho for r in ramp]


class Heun:
    """HeunDiscreteScheduler with gamma = 0: set_timesteps, scale_model_input and step."""

    def __init__(self, config):
        self.config = config
        self.prediction = config.get("prediction_type", "epsilon")
        self.spacing = config.get("timestep_spacing", "linspace")
        self.n_train = config.get("num_train_timesteps", 1000)
        self.alphas_cumprod = alphas_cumprod_for(betas_for(config))

    def set_timesteps(self, n):
        N, offset = self.n_train, self.config.get("steps_offset", 0)
        if self.spacing == "linspace":
            ts = [f32(t) for t in reversed(np_linspace(0, N - 1, n))]
        elif self.spacing == "leading":
            ratio = N // n
            ts = [f32(f32(np_round(i * ratio)) + offset) for i in reversed(range(n))]
        elif self.spacing == "trailing":
            ts = [f32(f32(np_round(t)) - 1) for t in np_arange(N, 0, -N / n)]
        else:
            raise ValueError(self.spacing)
        table = sigma_table(self.alphas_cumprod)
        log_sigmas = [f32(math.log(s)) for s in table]  # np.log of a float32 array is float32
        sig = [np_interp_index(t, table) for t in ts]
        if self.config.get("use_karras_sigmas", False):
            sig = karras(sig[-1], sig[0], n)
            ts = [sigma_to_t(s, log_sigmas) for s in sig]
        sig = [f32(s) for s in sig] + [0.0]
        # Every evaluation listed: sigmas s0, s1, s1, ..., 0; timesteps t0, t1, t1, ...
        self.sigmas = sig[:1] + [s for s in sig[1:-1] for _ in (0, 1)] + sig[-1:]
        self.timesteps = [f32(ts[0])] + [f32(t) for t in ts[1:] for _ in (0, 1)]
        m = max(self.sigmas)
        self.init_noise_sigma = m if self.spacing in ("linspace", "trailing") else f32(math.sqrt(f32(f32(m * m) + 1)))
        self.prev_derivative = self.dt = self.first_sample = None

    def scale_model_input(self, sample, k):
        s = self.sigmas[k]
        d = math.sqrt(s * s + 1)
        return [x / d for x in sample]

    def x0(self, model_output, sample, sigma):
        if self.prediction == "epsilon":
            return [x - sigma * m for x, m in zip(sample, model_output)]
        if self.prediction == "v_prediction":
            c_out, c_skip = -sigma / math.sqrt(sigma * sigma + 1), 1 / (sigma * sigma + 1)
            return [m * c_out + x * c_skip for x, m in zip(sample, model_output)]
        if self.prediction == "sample":
            return list(model_output)
        raise ValueError(self.prediction)

    def step(self, model_output, k, sample):
        first = self.dt is None  # diffusers' state_in_first_order
        sigma, sigma_next = (self.sigmas[k], self.sigmas[k + 1]) if first else (self.sigmas[k - 1], self.sigmas[k])
        sigma_hat = sigma
        x0 = self.x0(model_output, sample, sigma_hat if first else sigma_next)
        if first:
            d = [(x - p) / sigma_hat for x, p in zip(sample, x0)]
            self.prev_derivative, self.dt, self.first_sample = d, sigma_next - sigma_hat, sample
            return [x + di * self.dt for x, di in zip(sample, d)]
        d = [(x - p) / sigma_next for x, p in zip(sample, x0)]
        d = [(a + b) / 2 for a, b in zip(self.prev_derivative, d)]
        out = [x + di * self.dt for x, di in zip(self.first_sample, d)]
        self.prev_derivative = self.dt = self.first_sample = None
        return out


# ---------------------------------------------------------------- goldens

SD_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "steps_offset": 1}
TABLE_CONFIGS = {
    "sd_linspace": dict(SD_CONFIG),
    "sd_leading": dict(SD_CONFIG, timestep_spacing="leading"),
    "sd_trailing": dict(SD_CONFIG, timestep_spacing="trailing"),
    "sd_karras": dict(SD_CONFIG, use_karras_sigmas=True),
    "class_defaults": {},
    "diffusers_test": {"num_train_timesteps": 1100, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"},
}
TABLE_STEPS = [1, 2, 4, 10, 25]

TRAJECTORIES = {
    "epsilon_linspace_10": (dict(SD_CONFIG), 10),
    "epsilon_karras_8": (dict(SD_CONFIG, use_karras_sigmas=True), 8),
    "v_prediction_trailing_6": (dict(SD_CONFIG, prediction_type="v_prediction", timestep_spacing="trailing"), 6),
    "sample_leading_5": (dict(SD_CONFIG, prediction_type="sample", timestep_spacing="leading"), 5),
}
SHAPE = [1, 4, 2, 2]


def g(x):
    """A float32 value as the shortest decimal that reads back to it."""
    return float("%.9g" % x)


def model_outputs(name_index, evals, n):
    # Deterministic, unit-scale "model outputs" (float32), different per evaluation.
    return [[f32(0.9 * math.sin(0.7 * i + 1.3 * k + 0.4 * name_index) + 0.2 * math.cos(2.3 * i * (k + 1)))
             for i in range(n)] for k in range(evals)]


def trajectory(index, config, steps):
    s = Heun(config)
    s.set_timesteps(steps)
    n = 1
    for d in SHAPE:
        n *= d
    sample0 = [f32(s.init_noise_sigma * math.sin(1.7 * i + 0.3 + index)) for i in range(n)]
    outs = model_outputs(index, len(s.timesteps), n)
    x = sample0
    scaled, prev = [], []
    for k in range(len(s.timesteps)):
        scaled.append(s.scale_model_input(x, k))
        x = s.step(outs[k], k, x)
        prev.append(x)
    return {"config": config, "steps": steps, "shape": SHAPE, "timesteps": s.timesteps,
            "sample0": [g(v) for v in sample0], "model_outputs": [[g(v) for v in o] for o in outs],
            "scaled_inputs": [[float("%.10g" % v) for v in r] for r in scaled],
            "prev_samples": [[float("%.10g" % v) for v in r] for r in prev]}


def diffusers_test_loops():
    """The full loops of diffusers' tests/schedulers/test_scheduler_heun.py with its dummy model
    (model(sample, t) = sample * t / (t + 1); sample = arange(768) / 768 laid out as (4, 3, 8, 8)
    from a (3, 8, 8, 4) reshape). Returns sum(|x|), mean(|x|) per loop."""
    n_elems = 4 * 3 * 8 * 8

    def deter(flip):
        # sample[b, c, h, w] = v[((c * 8 + h) * 8 + w) * 4 + b] / 768, in NCHW order
        vals = [0.0] * n_elems
        for b in range(4):
            for c in range(3):
                for h in range(8):
                    for w in range(8):
                        src = ((c * 8 + h) * 8 + w) * 4 + b
                        v = (n_elems - 1 - src) if flip else src
                        vals[((b * 3 + c) * 8 + h) * 8 + w] = f32(v / n_elems)
        return vals

    base = TABLE_CONFIGS["diffusers_test"]
    results = {}
    for name, extra, start in (("epsilon", {}, 0), ("v_prediction", {"prediction_type": "v_prediction"}, 0),
                               ("karras", {"use_karras_sigmas": True}, 0), ("with_noise", {}, 8)):
        s = Heun(dict(base, **extra))
        s.set_timesteps(10)
        x = [v * s.init_noise_sigma for v in deter(False)]
        first = 0
        if start:
            # add_noise at timesteps[start * order]: sigma of that index (the second match of the timestep)
            first = start * 2
            x = [a + z * s.sigmas[first] for a, z in zip(x, deter(True))]
        for k in range(first, len(s.timesteps)):
            t = s.timesteps[k]
            x = s.scale_model_input(x, k)  # the test feeds the scaled sample to step() as well
            out = [v * t / (t + 1) for v in x]
            x = s.step(out, k, x)
        total = sum(abs(v) for v in x)
        results[name] = (total, total / n_elems)
    return results


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "sampling", "data", "heun_reference.json")
    tables = {}
    for name, config in TABLE_CONFIGS.items():
        by_steps = {}
        for n in TABLE_STEPS:
            s = Heun(config)
            s.set_timesteps(n)
            by_steps[str(n)] = {"timesteps": [g(t) for t in s.timesteps], "sigmas": [g(v) for v in s.sigmas],
                                "init_noise_sigma": g(s.init_noise_sigma)}
        tables[name] = {"config": config, "by_steps": by_steps}
    trajectories = {name: trajectory(i, cfg, n) for i, (name, (cfg, n)) in enumerate(TRAJECTORIES.items())}
    doc = {"made_by": "tools/reference/heun_reference.py",
           "algorithm": "diffusers HeunDiscreteScheduler at commit " + DIFFUSERS_COMMIT,
           "precision": "float64, float32 where diffusers stores float32 tables",
           "tables": tables, "trajectories": trajectories}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", out_path, os.path.getsize(out_path), "bytes")
    published = {"epsilon": (0.1233, 0.0002), "v_prediction": (4.6934e-07, 6.1112e-10),
                 "karras": (0.00015, 1.9869554535034695e-07), "with_noise": (75074.8906, 97.7538)}
    for name, (total, mean) in diffusers_test_loops().items():
        want = published[name]
        print("diffusers test loop %-12s sum %.6g (diffusers: %.6g)  mean %.6g (diffusers: %.6g)"
              % (name, total, want[0], mean, want[1]))


if __name__ == "__main__":
    main()
