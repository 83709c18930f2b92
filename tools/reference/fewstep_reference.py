#!/usr/bin/env python3
"""A pure-torch reference of the few-step pieces, for when diffusers is out of reach.

tools/reference/fewstep_goldens.py makes the real goldens with diffusers (it
needs the GPU machine's Python). This script needs only torch (Debian's
python3-torch 1.13 works) and re-states, after diffusers at commit 58eb52c:
  - LatentConsistencyModelPipeline.get_guidance_scale_embedding, in float32 as
    diffusers runs it (and in float64);
  - TCDScheduler.set_timesteps / step and LCMScheduler.set_timesteps / step
    (boundary-condition scalings), in float64, on a toy "model"
    m(x, t) = 0.5 x + 0.1 + 0.0001 t + 0.01 i (i = the element's flat index),
    with the per-step noise drawn from torch.Generator('cpu').manual_seed(seed)
    as randn(shape) calls in step order (what the pipelines' generators give
    the schedulers), for each prediction type.
It writes one small JSON file (tests/sampling/data/fewstep_reference.json).

Usage: /usr/bin/python3 tools/reference/fewstep_reference.py --out tests/sampling/data/fewstep_reference.json
"""
import argparse
import json
import math

import torch

SHAPE = (1, 4, 2, 2)
SEED = 2323


def alphas_cumprod(dtype):
    # scaled_linear: linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2, in float32 as diffusers builds it.
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas.to(dtype), dim=0)


def guidance_embedding(w, dim, dtype):
    w = torch.tensor([w], dtype=torch.float32) * 1000.0
    half = dim // 2
    emb = torch.log(torch.tensor(10000.0, dtype=dtype)) / (half - 1)
    emb = torch.exp(torch.arange(half, dtype=dtype) * -emb)
    emb = w.to(dtype)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def consistency_timesteps(n, original_steps=50, train=1000):
    k = train // original_steps
    origin = [i * k - 1 for i in range(1, original_steps + 1)][::-1]
    idx = [math.floor(i * len(origin) / n) for i in range(n)]  # floor(linspace(0, len, n, endpoint=False))
    return [origin[i] for i in idx]


def toy_model(x, t):
    flat = torch.arange(x.numel(), dtype=x.dtype).reshape(x.shape)
    return 0.5 * x + 0.1 + 0.0001 * t + 0.01 * flat


def x0_eps(pred, m, x, a):
    b = 1 - a
    if pred == "epsilon":
        return (x - b.sqrt() * m) / a.sqrt(), m
    if pred == "v_prediction":
        return a.sqrt() * x - b.sqrt() * m, a.sqrt() * m + b.sqrt() * x
    x0 = m
    return x0, (x - a.sqrt() * x0) / b.sqrt()


def run_tcd(pred, eta, steps):
    ac = alphas_cumprod(torch.float64)
    g = torch.Generator("cpu").manual_seed(SEED)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float32).double()
    ts = consistency_timesteps(steps)
    out = []
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else 0
        s = int(torch.floor((1 - eta) * torch.tensor(prev)).long())  # diffusers: float32 (long tensor * float)
        x0, eps = x0_eps(pred, toy_model(x, t), x, ac[t])
        xs = ac[s].sqrt() * x0 + (1 - ac[s]).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            z = torch.randn(SHAPE, generator=g, dtype=torch.float32).double()
            r = ac[prev] / ac[s]
            x = r.sqrt() * xs + (1 - r).sqrt() * z
        else:
            x = xs
        out.append(x.flatten().tolist())
    return {"prediction": pred, "eta": eta, "steps": steps, "timesteps": ts, "step_samples": out}


def run_lcm(pred, steps):
    ac = alphas_cumprod(torch.float64)
    g = torch.Generator("cpu").manual_seed(SEED)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float32).double()
    ts = consistency_timesteps(steps)
    out = []
    for i, t in enumerate(ts):
        last = i + 1 == len(ts)
        prev = t if last else ts[i + 1]
        st = t * 10.0  # timestep_scaling
        c_skip = 0.25 / (st ** 2 + 0.25)
        c_out = st / (st ** 2 + 0.25) ** 0.5
        x0, _ = x0_eps(pred, toy_model(x, t), x, ac[t])
        denoised = c_out * x0 + c_skip * x
        if last:
            x = denoised
        else:
            z = torch.randn(SHAPE, generator=g, dtype=torch.float32).double()
            x = ac[prev].sqrt() * denoised + (1 - ac[prev]).sqrt() * z
        out.append(x.flatten().tolist())
    return {"prediction": pred, "steps": steps, "timesteps": ts, "step_samples": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ref = {
        "torch": torch.__version__, "shape": list(SHAPE), "seed": SEED,
        "model": "m(x, t) = 0.5 x + 0.1 + 0.0001 t + 0.01 i",
        "initial": "torch.randn(shape, generator=manual_seed(seed)); each noisy step draws the next randn(shape)",
        "w_embedding": {"guidance_scale": 8.0, "w": 7.0, "dim": 256,
                        "float32": guidance_embedding(7.0, 256, torch.float32)[0].tolist(),
                        "float64": guidance_embedding(7.0, 256, torch.float64)[0].tolist()},
        "tcd": [run_tcd(p, eta, 4) for p in ("epsilon", "v_prediction", "sample") for eta in (0.3, 0.0, 1.0)],
        "lcm": [run_lcm(p, n) for p in ("epsilon", "v_prediction", "sample") for n in (2, 4)],
    }
    def short(v):  # 9 significant digits: float32 exact, float64 to 1e-9 relative (half the bytes)
        if isinstance(v, float):
            return float(f"{v:.9g}")
        if isinstance(v, list):
            return [short(e) for e in v]
        if isinstance(v, dict):
            return {k: short(e) for k, e in v.items()}
        return v
    with open(args.out, "w") as f:
        json.dump(short(ref), f, separators=(",", ":"))


if __name__ == "__main__":
    main()
