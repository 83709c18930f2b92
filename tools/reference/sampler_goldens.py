#!/usr/bin/env python3
"""diffusers goldens for the samplers and schedules of issue #23.

Records, with Hugging Face diffusers' own scheduler classes (diffusers at
DIFFUSERS_COMMIT, imported from its source through PYTHONPATH):

 * tables: timesteps, sigmas and init_noise_sigma of each case below for
   several step counts, built from the tiny fixture models' scheduler configs
   as shipped (sd1: epsilon, sd2: v_prediction, sdxl);
 * trajectories: 10-step runs of the schedulers that diffusers has with
   torch-only noise (KDPM2 = dpm2, KDPM2Ancestral = dpm2_a,
   DPMSolverMultistep sde-dpmsolver++ = dpmpp_2m_sde), on sd1 (epsilon) and
   sd2 (v_prediction). The "model" is closed form, so that the C++ test can
   evaluate the same model on its own samples: data x0 ~ N(mu, SD^2) per
   element, whose exact denoiser at noise level sigma is
   mu + SD^2 / (SD^2 + sigma^2) * (x - mu); the model sees only its input
   (the scaled sample) and the timestep, takes sigma = np.interp(t, arange,
   training sigmas) and returns the epsilon or v of that denoiser, in float64,
   cast to float32. Noise comes from one torch.Generator('cpu') per run.
 * the Align Your Steps tables diffusers ships (AysSchedules).

Writes one JSON file, <out>/sampler_goldens.json (small: 16-element samples);
--trim <that file> --out tests/sampling/data/sampler_goldens.json keeps the
part tests/sampling/test_sampler_goldens.cpp reads.

Usage (the GPU machine's Python: torch 2.x + diffusers' dependencies):
  PYTHONPATH=/tmp/dsrc/src python3 tools/reference/sampler_goldens.py \\
      --fixtures build/test-data/fixtures --out $OUT/samplers
"""
import argparse
import inspect
import json
import math
import os
import traceback

import numpy as np
import torch

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
SHAPE = (1, 4, 2, 2)
SD = 0.5                      # data standard deviation of the closed-form model
SAMPLE_SEED = 2301            # torch.Generator('cpu') seed of the initial sample
NOISE_SEED = 2302             # generator passed to step()
TABLE_STEPS = [2, 4, 10, 25]
TRAJECTORY_STEPS = 10

# name -> (class, from_config overrides)
CASES = {
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "dpm2_exponential": ("KDPM2DiscreteScheduler", {"use_exponential_sigmas": True}),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm2_a_karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "euler_exponential": ("EulerDiscreteScheduler", {"use_exponential_sigmas": True}),
    "euler_beta": ("EulerDiscreteScheduler", {"use_beta_sigmas": True}),
}
TRAJECTORIES = ["dpm2", "dpm2_karras", "dpm2_a", "dpmpp_2m_sde", "dpmpp_2m_sde_karras"]


def floats(t):
    return [float(v) for v in torch.as_tensor(t).detach().double().flatten().tolist()]


def mu_pattern():
    n = int(np.prod(SHAPE))
    return 0.5 * np.sin(np.arange(n, dtype=np.float64) * 0.7 + 0.3).reshape(SHAPE)


class ClosedFormModel:
    """epsilon / v of the exact denoiser of N(mu, SD^2) data (float64 math, float32 out)."""

    def __init__(self, alphas_cumprod, prediction):
        ac = np.asarray(alphas_cumprod, dtype=np.float32)
        self.table = np.sqrt((1 - ac) / ac).astype(np.float64)  # float32 values, as the C++ table
        self.prediction = prediction
        self.mu = mu_pattern()

    def sigma_of(self, t):
        return float(np.interp(float(t), np.arange(len(self.table), dtype=np.float64), self.table))

    def __call__(self, x_in, t):
        s = self.sigma_of(t)
        x = x_in.double().numpy() * math.sqrt(s * s + 1.0)  # the sample at unit scale: x0 + s * eps
        c = SD * SD / (SD * SD + s * s)
        x0 = self.mu + c * (x - self.mu)
        eps = (x - x0) / s
        if self.prediction == "epsilon":
            out = eps
        else:
            a = 1.0 / math.sqrt(s * s + 1.0)
            out = a * eps - s * a * x0
        return torch.from_numpy(out).float()


def make(diffusers, config, case):
    cls_name, overrides = CASES[case]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(config, **overrides)


def table(diffusers, config, case):
    out = {}
    for n in TABLE_STEPS:
        s = make(diffusers, config, case)
        s.set_timesteps(n)
        out[str(n)] = {
            "timesteps": floats(s.timesteps),
            "sigmas": floats(s.sigmas) if hasattr(s, "sigmas") else None,
            "init_noise_sigma": float(s.init_noise_sigma),
        }
    return out


def trajectory(diffusers, config, case, prediction):
    s = make(diffusers, config, case)
    s.set_timesteps(TRAJECTORY_STEPS)
    model = ClosedFormModel(s.alphas_cumprod, prediction)
    x = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(SAMPLE_SEED), dtype=torch.float32)
    sample0 = x.clone()
    x = x * s.init_noise_sigma
    g = torch.Generator("cpu").manual_seed(NOISE_SEED)
    steps = []
    for t in s.timesteps:
        x_in = s.scale_model_input(x, t)
        out = model(x_in, t)
        kwargs = {"generator": g} if "generator" in inspect.signature(s.step).parameters else {}
        x = s.step(out, t, x, **kwargs).prev_sample
        steps.append({"t": float(t), "x_in": floats(x_in), "model_output": floats(out), "prev": floats(x)})
    return {"steps": TRAJECTORY_STEPS, "shape": list(SHAPE), "sample_seed": SAMPLE_SEED, "noise_seed": NOISE_SEED,
            "sample0": floats(sample0), "init_noise_sigma": float(s.init_noise_sigma),
            "timesteps": floats(s.timesteps), "sigmas": floats(s.sigmas), "evals": steps}


def r9(v):
    return float(f"{v:.9g}")


def trim(raw_path, out_path):
    """The committed subset (tests/sampling/data/sampler_goldens.json): tables for 4 and 10 steps,
    trajectories without the inputs / model outputs, values to float32 precision."""
    with open(raw_path) as f:
        raw = json.load(f)
    out = {k: raw[k] for k in ("diffusers_commit", "diffusers_version", "torch", "sd", "mu", "errors")}
    out["families"] = {}
    for family, fam in raw["families"].items():
        tables = {name: {n: {"timesteps": [r9(v) for v in e["timesteps"]], "sigmas": [r9(v) for v in e["sigmas"]],
                             "init_noise_sigma": r9(e["init_noise_sigma"])}
                         for n, e in by_steps.items() if n in ("4", "10")}
                  for name, by_steps in fam["tables"].items()}
        trajectories = {}
        for name, e in fam["trajectories"].items():
            t = {k: e[k] for k in ("steps", "shape", "sample_seed", "noise_seed", "init_noise_sigma")}
            t["sample0"] = [r9(v) for v in e["sample0"]]
            t["evals"] = [{"t": r9(ev["t"]), "prev": [r9(v) for v in ev["prev"]]} for ev in e["evals"]]
            trajectories[name] = t
        out["families"][family] = {"scheduler_config": fam["scheduler_config"], "tables": tables,
                                   "trajectories": trajectories}
    with open(out_path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path} ({os.path.getsize(out_path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default="build/test-data/fixtures")
    ap.add_argument("--out", required=True)
    ap.add_argument("--trim", metavar="RAW_JSON",
                    help="write the committed subset of a finished run's sampler_goldens.json to --out (a file)")
    args = ap.parse_args()
    if args.trim:
        trim(args.trim, args.out)
        return
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    import diffusers

    result = {"diffusers_commit": DIFFUSERS_COMMIT, "diffusers_version": diffusers.__version__,
              "torch": torch.__version__, "sd": SD, "mu": "0.5 * sin(0.7 * i + 0.3), i = flat index",
              "families": {}, "errors": []}
    for family in ["sd1", "sd2", "sdxl"]:
        path = os.path.join(args.fixtures, family, "model", "scheduler", "scheduler_config.json")
        with open(path) as f:
            config = json.load(f)
        fam = {"scheduler_config": config, "tables": {}, "trajectories": {}}
        prediction = config.get("prediction_type") or "epsilon"
        for case in CASES:
            try:
                fam["tables"][case] = table(diffusers, config, case)
            except Exception as e:  # keep the rest (a class may lack an option at this commit)
                result["errors"].append(f"{family} table {case}: {e!r}")
                traceback.print_exc()
        if family in ("sd1", "sd2"):
            for case in TRAJECTORIES:
                try:
                    fam["trajectories"][case] = trajectory(diffusers, config, case, prediction)
                except Exception as e:
                    result["errors"].append(f"{family} trajectory {case}: {e!r}")
                    traceback.print_exc()
        result["families"][family] = fam
    try:
        from diffusers.schedulers import AysSchedules
        result["ays"] = {k: [float(v) for v in vals] for k, vals in AysSchedules.items()}
    except Exception as e:
        result["errors"].append(f"AysSchedules: {e!r}")
    with open(os.path.join(args.out, "sampler_goldens.json"), "w") as f:
        json.dump(result, f, indent=None, separators=(",", ":"))
    print("errors:", result["errors"])


if __name__ == "__main__":
    main()
