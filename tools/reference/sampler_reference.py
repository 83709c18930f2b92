#!/usr/bin/env python3
"""fp64 references for the samplers and sigma schedules of issue #23.

Writes tests/sampling/data/sampler_reference.json, read by
tests/sampling/test_k_samplers.cpp:

 * schedules: the sigma list (without the final 0) of every A1111 / ComfyUI
   schedule for several step counts, computed in float64 from the formulas of
   A1111's modules/sd_schedulers.py, k-diffusion's get_sigmas_* and
   DiscreteSchedule (t_to_sigma / sigma_to_t) and ComfyUI's comfy/samplers.py
   (kl_optimal), on the SD training sigmas (scaled_linear 0.00085 .. 0.012,
   1000 steps, built in float32 as diffusers builds them); beta uses
   scipy.stats.beta.ppf.
 * samplers: final samples of 10-step runs of float64 ports of k-diffusion's
   sample_* functions (k_diffusion/sampling.py, eta = 1, s_noise = 1), for the
   samplers Diffuse ports from k-diffusion (and the older ones that follow the
   same algorithm), on an analytic model: data x0 ~ N(mu, SD^2) per element,
   whose exact denoiser is D(x, sigma) = mu + SD^2 / (SD^2 + sigma^2) (x - mu).
   The step sigmas are those Diffuse uses (default: diffusers' linspace
   timesteps with linearly interpolated sigmas; karras / exponential: the
   formulas), rounded to float32 as Diffuse stores them. The initial sample is
   torch.randn(SHAPE, Generator('cpu').manual_seed(SAMPLE_SEED)) * sigma_0.
   Noise, as Diffuse draws it (docs/samplers.md): one torch.randn(SHAPE) per
   noisy evaluation from Generator('cpu').manual_seed(NOISE_SEED), the
   evaluations that draw being each sampler's (dpm2_a: every evaluation, only
   the second stages using theirs; dpmpp_2s_a: the second stages;
   dpmpp_2m_sde: every step; dpmpp_3m_sde and euler_a: as listed below); for
   dpmpp_sde the Brownian tree of src/sampling/brownian.h, re-implemented here
   (Philox4x32-10 + Box-Muller in float64), seeded with NOISE_SEED.
 * brownian: a few values of that tree, to pin the construction.

Usage: /usr/bin/python3 tools/reference/sampler_reference.py [--out tests/sampling/data/sampler_reference.json]
(Debian's python3-torch 1.13, numpy, scipy).
"""
import argparse
import json
import math
import os

import numpy as np
import scipy.stats
import torch

SHAPE = (1, 4, 4, 4)
SD = 0.5
SAMPLE_SEED = 2311
NOISE_SEED = 2312
STEPS = 10
SCHEDULE_STEPS = [1, 2, 4, 7, 10, 11, 30]
LEAF_WIDTH = 1e-4
MAX_DEPTH = 40


# ---------------------------------------------------------------- model tables

def torch2_linspace_f32(start, end, steps):
    """torch 2.x's CPU linspace in float32 (the first half counted from start, the second from end).
    Debian's torch 1.13 rounds differently; diffusers' goldens were made with torch 2.x."""
    start, end = np.float32(start), np.float32(end)
    step = np.float32((end - start) / np.float32(steps - 1))
    half = steps // 2
    return np.array([start + step * np.float32(i) if i < half else end - step * np.float32(steps - i - 1)
                     for i in range(steps)], dtype=np.float32)


def training_sigmas():
    """diffusers: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000, float32) ** 2; cumprod; sqrt((1 - a) / a)."""
    betas = torch.from_numpy(torch2_linspace_f32(0.00085 ** 0.5, 0.012 ** 0.5, 1000)) ** 2
    ac = torch.cumprod((1.0 - betas).double(), 0).float()  # torch's CPU cumprod accumulates in double
    return (((1 - ac) / ac) ** 0.5).double().numpy()


def sigma_to_t(sigma, log_sigmas):
    """k-diffusion DiscreteSchedule.sigma_to_t (diffusers' _sigma_to_t)."""
    log_sigma = math.log(max(sigma, 1e-10))
    ge = (log_sigma - log_sigmas) >= 0
    low = int(np.cumsum(ge).argmax()) if ge.any() else 0
    low = min(low, len(log_sigmas) - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = min(max((lo - log_sigma) / (lo - hi), 0.0), 1.0)
    return (1 - w) * low + w * (low + 1)


def t_to_sigma(t, log_sigmas):
    """k-diffusion DiscreteSchedule.t_to_sigma."""
    t = min(max(t, 0.0), len(log_sigmas) - 1.0)
    low, high = math.floor(t), math.ceil(t)
    w = t - low
    return math.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high])


AYS = {
    "sd1": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def schedule(name, n, table, family="sd1"):
    """The n step sigmas (no final 0) of a schedule, float64."""
    log_sigmas = np.log(table.astype(np.float32)).astype(np.float64)  # the float32 log table
    N = len(table)
    smin, smax = float(table[0]), float(table[-1])
    if name == "uniform":  # get_sigmas(n): t = linspace(t_max, 0, n)
        return [t_to_sigma(t, log_sigmas) for t in np.linspace(N - 1, 0, n)]
    if name == "karras":
        ramp = np.linspace(0, 1, n)
        return list((smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7)
    if name == "exponential":
        return list(np.exp(np.linspace(math.log(smax), math.log(smin), n)))
    if name == "polyexponential":
        ramp = np.linspace(1, 0, n) ** 1.0
        return list(np.exp(ramp * (math.log(smax) - math.log(smin)) + math.log(smin)))
    if name in ("sgm_uniform", "normal"):
        start, end = sigma_to_t(smax, log_sigmas), sigma_to_t(smin, log_sigmas)
        ts = np.linspace(start, end, n + 1)[:-1] if name == "sgm_uniform" else np.linspace(start, end, n)
        return [t_to_sigma(t, log_sigmas) for t in ts]
    if name == "kl_optimal":  # ComfyUI: w = i / (n - 1)
        idx = np.arange(n, dtype=np.float64) / (n - 1) if n > 1 else np.zeros(1)
        return list(np.tan(idx * math.atan(smin) + (1 - idx) * math.atan(smax)))
    if name == "align_your_steps":  # A1111 get_align_your_steps_sigmas
        sig = AYS[family]
        if n == len(sig):
            return list(sig)
        xs = np.linspace(0, 1, len(sig))
        ys = np.log(sig[::-1])
        return list(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1])
    if name == "simple":
        ss = N / n
        return [float(table[-(1 + int(x * ss))]) for x in range(n)]
    if name == "ddim":
        ss = max(N // n, 1)
        return [float(table[x]) for x in range(1, N, ss)][::-1]
    if name == "beta":
        ts = 1 - np.linspace(0, 1, n)
        return [smin + scipy.stats.beta.ppf(x, 0.6, 0.6) * (smax - smin) for x in ts]
    raise ValueError(name)


def default_sigmas(n, table):
    """EulerDiscreteScheduler, linspace spacing: t = linspace(0, 999, n)[::-1] (float32), sigma = interp(t)."""
    ts = np.linspace(0, len(table) - 1, n, dtype=np.float64)[::-1].astype(np.float32).astype(np.float64)
    return list(np.interp(ts, np.arange(len(table)), table.astype(np.float32).astype(np.float64)))


def dpm_solver_default_sigmas(n, table):
    """DPMSolverMultistepScheduler, linspace spacing: t = round(linspace(0, 999, n + 1))[::-1][:-1], sigma = interp(t)."""
    ts = np.linspace(0, len(table) - 1, n + 1).round()[::-1][:-1].copy()
    return list(np.interp(ts, np.arange(len(table)), table.astype(np.float32).astype(np.float64)))


def step_sigmas(name, n, table, sampler=""):
    if name == "default":
        # The default schedule is the diffusers class's own: DPMSolverMultistep for the DPM++ 2M family.
        s = dpm_solver_default_sigmas(n, table) if sampler.startswith("dpmpp_2m") else default_sigmas(n, table)
    else:
        s = schedule(name, n, table)
    s = [float(np.float32(v)) for v in s]  # Diffuse stores float32 sigmas
    return s + [0.0]


# ---------------------------------------------------------------- Brownian tree (src/sampling/brownian.h)

M32 = np.uint64(0xFFFFFFFF)


def philox(c0, c1, c2, c3, key0, key1):
    c = [np.asarray(v, dtype=np.uint64) & M32 for v in (c0, c1, c2, c3)]
    c = [np.broadcast_to(v, np.broadcast(*c).shape).copy() for v in c]
    k0, k1 = np.uint64(key0), np.uint64(key1)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & M32
        hi1, lo1 = p1 >> np.uint64(32), p1 & M32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + np.uint64(0x9E3779B9)) & M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & M32
    return c


def tree_normals(seed, node, tag, n):
    blocks = (n + 3) // 4
    r = philox(np.arange(blocks, dtype=np.uint64), node & 0xFFFFFFFF, node >> 32, tag,
               seed & 0xFFFFFFFF, seed >> 32)
    u = [(v.astype(np.float64) + 0.5) * 2.0 ** -32 for v in r]
    out = np.empty((blocks, 4))
    for p in range(2):
        radius = np.sqrt(-2.0 * np.log(u[2 * p]))
        out[:, 2 * p] = radius * np.cos(6.283185307179586 * u[2 * p + 1])
        out[:, 2 * p + 1] = radius * np.sin(6.283185307179586 * u[2 * p + 1])
    return out.reshape(-1)[:n]


class Tree:
    def __init__(self, seed, n, t0, t1):
        self.seed, self.n, self.t0, self.t1 = seed, n, t0, t1

    def at(self, t):
        t = min(max(t, self.t0), self.t1)
        wa = np.zeros(self.n)
        if t == self.t0:
            return wa
        wb = math.sqrt(self.t1 - self.t0) * tree_normals(self.seed, 1, 2, self.n)
        if t == self.t1:
            return wb
        a, b, node, depth = self.t0, self.t1, 1, 0
        while b - a > LEAF_WIDTH and depth < MAX_DEPTH:
            m = (a + b) / 2
            wm = (wa + wb) / 2 + math.sqrt((b - a) / 4) * tree_normals(self.seed, node, 0, self.n)
            if t == m:
                return wm
            if t < m:
                b, wb, node = m, wm, 2 * node
            else:
                a, wa, node = m, wm, 2 * node + 1
            depth += 1
        bits = int(np.array([t], dtype=np.float64).view(np.uint64)[0])
        z = tree_normals(self.seed, bits, 1, self.n)
        return wa + (t - a) / (b - a) * (wb - wa) + math.sqrt((t - a) * (b - t) / (b - a)) * z

    def increment(self, lo, hi):
        return (self.at(hi) - self.at(lo)) / math.sqrt(hi - lo)


# ---------------------------------------------------------------- k-diffusion samplers, float64

def ancestral(s_from, s_to):
    up = min(s_to, math.sqrt(s_to ** 2 * (s_from ** 2 - s_to ** 2) / s_from ** 2))
    return math.sqrt(s_to ** 2 - up ** 2), up


class Noise:
    """One torch.randn(SHAPE) per draw from Generator('cpu').manual_seed(NOISE_SEED)."""

    def __init__(self):
        self.g = torch.Generator("cpu").manual_seed(NOISE_SEED)

    def draw(self):
        return torch.randn(SHAPE, generator=self.g, dtype=torch.float32).double().numpy()


def to_d(x, sigma, den):
    return (x - den) / sigma


def run(sampler, sigmas, model, x):
    n = len(sigmas) - 1
    noise = Noise()
    if sampler == "euler":
        for i in range(n):
            x = x + to_d(x, sigmas[i], model(x, sigmas[i])) * (sigmas[i + 1] - sigmas[i])
        return x
    if sampler == "euler_a":  # diffusers draws at every step
        for i in range(n):
            den = model(x, sigmas[i])
            down, up = ancestral(sigmas[i], sigmas[i + 1])
            x = x + to_d(x, sigmas[i], den) * (down - sigmas[i])
            x = x + noise.draw() * up
        return x
    if sampler == "heun":
        for i in range(n):
            d = to_d(x, sigmas[i], model(x, sigmas[i]))
            dt = sigmas[i + 1] - sigmas[i]
            if sigmas[i + 1] == 0:
                x = x + d * dt
            else:
                x_2 = x + d * dt
                d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
                x = x + (d + d_2) / 2 * dt
        return x
    if sampler == "dpm2":
        for i in range(n):
            d = to_d(x, sigmas[i], model(x, sigmas[i]))
            if sigmas[i + 1] == 0:
                x = x + d * (sigmas[i + 1] - sigmas[i])
            else:
                mid = math.exp((math.log(sigmas[i]) + math.log(sigmas[i + 1])) / 2)
                x_2 = x + d * (mid - sigmas[i])
                d_2 = to_d(x_2, mid, model(x_2, mid))
                x = x + d_2 * (sigmas[i + 1] - sigmas[i])
        return x
    if sampler == "dpm2_a":
        for i in range(n):
            den = model(x, sigmas[i])
            down, up = ancestral(sigmas[i], sigmas[i + 1])
            d = to_d(x, sigmas[i], den)
            noise.draw()  # the first stage's draw (unused, as diffusers)
            if down == 0:
                x = x + d * (down - sigmas[i])
            else:
                mid = math.exp((math.log(sigmas[i]) + math.log(down)) / 2)
                x_2 = x + d * (mid - sigmas[i])
                d_2 = to_d(x_2, mid, model(x_2, mid))
                x = x + d_2 * (down - sigmas[i])
                x = x + noise.draw() * up
        return x
    if sampler == "dpmpp_2s_a":
        for i in range(n):
            den = model(x, sigmas[i])
            down, up = ancestral(sigmas[i], sigmas[i + 1])
            if down == 0:
                x = x + to_d(x, sigmas[i], den) * (down - sigmas[i])
            else:
                t, t_next = -math.log(sigmas[i]), -math.log(down)
                h = t_next - t
                s = t + 0.5 * h
                x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h * 0.5) * den
                den_2 = model(x_2, math.exp(-s))
                x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * den_2
            if sigmas[i + 1] > 0:
                x = x + noise.draw() * up
        return x
    if sampler == "dpmpp_sde":
        positive = [v for v in sigmas if v > 0]
        tree = Tree(NOISE_SEED, int(np.prod(SHAPE)), min(positive), max(sigmas))
        r = 0.5
        for i in range(n):
            den = model(x, sigmas[i])
            if sigmas[i + 1] == 0:
                x = x + to_d(x, sigmas[i], den) * (sigmas[i + 1] - sigmas[i])
            else:
                t, t_next = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
                h = t_next - t
                s = t + h * r
                fac = 1 / (2 * r)
                sd, su = ancestral(math.exp(-t), math.exp(-s))
                s_ = -math.log(sd)
                x_2 = (math.exp(-s_) / math.exp(-t)) * x - math.expm1(t - s_) * den
                # k-diffusion queries the tree at sigma_fn(t_fn(sigma)), sigma up to rounding; the
                # construction keys its leaf draws by the exact time, so query at the sigmas themselves.
                x_2 = x_2 + tree.increment(math.exp(-s), sigmas[i]).reshape(SHAPE) * su
                den_2 = model(x_2, math.exp(-s))
                sd, su = ancestral(math.exp(-t), math.exp(-t_next))
                t_next_ = -math.log(sd)
                den_d = (1 - fac) * den + fac * den_2
                x = (math.exp(-t_next_) / math.exp(-t)) * x - math.expm1(t - t_next_) * den_d
                x = x + tree.increment(sigmas[i + 1], sigmas[i]).reshape(SHAPE) * su
        return x
    if sampler == "dpmpp_2m":
        old = None
        for i in range(n):
            den = model(x, sigmas[i])
            t, t_next = -math.log(sigmas[i]), (-math.log(sigmas[i + 1]) if sigmas[i + 1] > 0 else math.inf)
            h = t_next - t
            if old is None or sigmas[i + 1] == 0:
                x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * den
            else:
                h_last = t - (-math.log(sigmas[i - 1]))
                rr = h_last / h
                x = (sigmas[i + 1] / sigmas[i]) * x - math.expm1(-h) * ((1 + 1 / (2 * rr)) * den - (1 / (2 * rr)) * old)
            old = den
        return x
    if sampler == "dpmpp_2m_sde":  # diffusers draws at every step, the last included
        old, h_last = None, None
        for i in range(n):
            den = model(x, sigmas[i])
            z = noise.draw()
            if sigmas[i + 1] == 0:
                x = den
            else:
                t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
                h = s - t
                eta_h = h
                x = sigmas[i + 1] / sigmas[i] * math.exp(-eta_h) * x + (-math.expm1(-h - eta_h)) * den
                if old is not None:
                    r = h_last / h
                    x = x + 0.5 * (-math.expm1(-h - eta_h)) * (1 / r) * (den - old)
                x = x + z * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * eta_h))
            old, h_last = den, h
        return x
    if sampler == "dpmpp_3m_sde":
        den_1 = den_2 = None
        h_1 = h_2 = None
        for i in range(n):
            den = model(x, sigmas[i])
            if sigmas[i + 1] == 0:
                x = den
            else:
                t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
                h = s - t
                h_eta = h * 2
                x = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * den
                if h_2 is not None:
                    r0, r1 = h_1 / h, h_2 / h
                    d1_0 = (den - den_1) / r0
                    d1_1 = (den_1 - den_2) / r1
                    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    phi_2 = math.expm1(-h_eta) / h_eta + 1
                    phi_3 = phi_2 / h_eta - 0.5
                    x = x + phi_2 * d1 - phi_3 * d2
                elif h_1 is not None:
                    r = h_1 / h
                    d = (den - den_1) / r
                    phi_2 = math.expm1(-h_eta) / h_eta + 1
                    x = x + phi_2 * d
                x = x + noise.draw() * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * h))
            den_1, den_2 = den, den_1
            h_1, h_2 = h, h_1
        return x
    raise ValueError(sampler)


def mu_pattern():
    n = int(np.prod(SHAPE))
    return 0.5 * np.sin(np.arange(n, dtype=np.float64) * 0.7 + 0.3).reshape(SHAPE)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "sampling", "data",
                                                  "sampler_reference.json"))
    args = ap.parse_args()
    table = training_sigmas()
    mu = mu_pattern()

    def model(x, sigma):
        return mu + SD * SD / (SD * SD + sigma * sigma) * (x - mu)

    def r9(v):
        return float(f"{v:.10g}")

    out = {"shape": list(SHAPE), "sd": SD, "mu": "0.5 * sin(0.7 * i + 0.3), i = flat index",
           "sample_seed": SAMPLE_SEED, "noise_seed": NOISE_SEED, "steps": STEPS,
           "table_check": {str(i): float(table[i]) for i in (0, 1, 250, 500, 998, 999)},
           "schedules": {}, "samplers": {}, "brownian": {}}
    names = ["uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal", "align_your_steps",
             "simple", "normal", "ddim", "beta"]
    for name in names:
        out["schedules"][name] = {str(n): [float(v) for v in schedule(name, n, table)] for n in SCHEDULE_STEPS}
    out["schedules"]["align_your_steps_sdxl"] = {
        str(n): [float(v) for v in schedule("align_your_steps", n, table, "sdxl")] for n in SCHEDULE_STEPS}

    x0 = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(SAMPLE_SEED), dtype=torch.float32)
    x0 = x0.double().numpy()
    samplers = ["euler", "euler_a", "heun", "dpm2", "dpm2_a", "dpmpp_2s_a", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde",
                "dpmpp_3m_sde"]
    for sampler in samplers:
        for sched in ["default", "karras", "exponential", "align_your_steps", "beta"]:
            if sampler in ("euler", "heun", "dpmpp_2m", "euler_a") and sched in ("default", "karras"):
                continue  # those pairs have diffusers goldens already
            sig = step_sigmas(sched, STEPS, table, sampler)
            x = run(sampler, sig, model, x0 * sig[0])
            out["samplers"][f"{sampler}/{sched}"] = [r9(v) for v in x.reshape(-1)]

    tree = Tree(NOISE_SEED, 8, 0.0291675, 14.614642)
    for t in [0.0291675, 0.5, 1.0, 3.25, 14.614642, 7.000001]:
        out["brownian"][repr(t)] = [float(v) for v in tree.at(t)]
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
