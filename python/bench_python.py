#!/usr/bin/env python3
"""Speed through Python against the CLI: `diffuse bench` and a Python timing
loop generate the same thing (the bench's prompt, seed 42, euler, CFG on), in
interleaved rounds so that a machine's drift hits both alike (medians, and
the fastest round of each: the least disturbed on a shared machine).

Per round: one `diffuse bench --model M --json` process (its batched run:
whole_s = the engine's time for the call, and its median step), then one
timed Python call (wall time around pipe(...), and the median step measured
from callback_on_step_end). Prints the medians, their ratios and, as JSON with
--json, every round.

    PYTHONPATH=build/python python3 python/bench_python.py --diffuse build/diffuse
    PYTHONPATH=build/python python3 python/bench_python.py --diffuse build/diffuse --device cuda --steps 30 \\
        --model sd15 --images 4
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# This script sits beside the package's sources (python/diffuse, without the
# compiled _diffuse): leave its own folder off the path so that the built
# package on PYTHONPATH is the one imported.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
import diffuse  # noqa: E402

# What `diffuse bench` generates (src/cli/cmd_bench.cpp bench_params).
PROMPT = "a photograph of an astronaut riding a horse on mars, highly detailed"
NEGATIVE = "blurry, low quality"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diffuse", required=True, help="the diffuse binary")
    ap.add_argument("--model", default="demo", help="model (default: the demo model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=0, help="image side (default: the model's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output-type", default="uint8", choices=["uint8", "pil"],
                    help="what the Python call returns (pil adds the PIL copies)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    pipe = diffuse.Pipeline.from_pretrained(None if a.model == "demo" else a.model, device=a.device)
    size = a.size or pipe.info["defaults"]["width"]
    kwargs = dict(negative_prompt=NEGATIVE, num_inference_steps=a.steps, num_images_per_prompt=a.images,
                  width=size, height=size, generator=42, sampler="euler", output_type=a.output_type)
    pipe(PROMPT, **kwargs)  # warm-up, as the bench's runs before its batched one

    cli_cmd = [a.diffuse, "bench", "--model", a.model, "--device", a.device, "--steps", str(a.steps),
               "--images", str(a.images), "--size", str(size), "--sampler", "euler", "--json"]
    rounds = []
    for r in range(a.rounds):
        res = subprocess.run(cli_cmd, capture_output=True, text=True, check=True)
        batch = json.loads(res.stdout)["batch"]

        steps = []
        last = [0.0]

        def on_step(step, total, latents):
            now = time.perf_counter()
            steps.append((now - last[0]) * 1e3)
            last[0] = now

        t0 = last[0] = time.perf_counter()
        out = pipe(PROMPT, callback_on_step_end=on_step, **kwargs)
        wall = time.perf_counter() - t0
        rest = sorted(steps[1:])
        rounds.append({"cli_whole_s": batch["whole_s"], "cli_step_ms": batch["step_ms"], "py_wall_s": wall,
                       "py_engine_s": out.timings["total_s"], "py_step_ms": rest[len(rest) // 2]})
        print(f"round {r + 1}: cli {batch['whole_s']:.3f} s ({batch['step_ms']:.1f} ms/step), python "
              f"{wall:.3f} s ({rounds[-1]['py_step_ms']:.1f} ms/step)", file=sys.stderr)

    med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
    # The fastest round of each: on a shared machine the least disturbed one.
    best = {k: min(x[k] for x in rounds) for k in rounds[0]}
    summary = {"model": a.model, "device": pipe.device, "size": size, "steps": a.steps, "images": a.images,
               "rounds": len(rounds), "median": med,
               "python_over_cli_whole": med["py_wall_s"] / med["cli_whole_s"],
               "python_over_cli_step": med["py_step_ms"] / med["cli_step_ms"],
               "python_overhead_s": med["py_wall_s"] - med["py_engine_s"], "best": best,
               "best_python_over_cli_whole": best["py_wall_s"] / best["cli_whole_s"],
               "best_python_over_cli_step": best["py_step_ms"] / best["cli_step_ms"]}
    if a.json:
        summary["per_round"] = rounds
        print(json.dumps(summary, indent=2))
    else:
        print(f"{a.model} {size}x{size} on {pipe.device}, {a.steps} steps, {a.images} images, "
              f"{len(rounds)} rounds (medians):")
        print(f"  diffuse bench: {med['cli_whole_s']:.3f} s per call, {med['cli_step_ms']:.2f} ms per step")
        print(f"  Python:        {med['py_wall_s']:.3f} s per call, {med['py_step_ms']:.2f} ms per step "
              f"(engine {med['py_engine_s']:.3f} s; Python's own {summary['python_overhead_s'] * 1e3:.1f} ms)")
        print(f"  ratio Python / CLI: {summary['python_over_cli_whole']:.3f} per call, "
              f"{summary['python_over_cli_step']:.3f} per step")
        print(f"  fastest rounds: CLI {best['cli_whole_s']:.3f} s, Python {best['py_wall_s']:.3f} s: ratio "
              f"{summary['best_python_over_cli_whole']:.3f} per call, {summary['best_python_over_cli_step']:.3f} "
              "per step")


if __name__ == "__main__":
    main()
