"""A fixture pipeline through Python matches the diffusers goldens with the
C++ tests' tolerances (tests/pipeline/test_pipeline_fixtures.cpp): the SD 1.x
fixture model, 10 steps at 128x128 from the fixed initial latents; final
latents within 1e-3 relative to their largest magnitude, images within 1/255."""
import json
import os

import numpy as np
import pytest

import diffuse
from conftest import read_safetensors


@pytest.fixture(scope="module")
def sd1(fixtures_dir):
    root = os.path.join(fixtures_dir, "sd1")
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    return root, {r["name"]: r for r in cases["pipeline_runs"]}


@pytest.mark.parametrize("run_name", ["euler", "dpmpp_2m_karras", "euler_a", "ddim"])
def test_fixture_run_matches_diffusers(sd1, run_name):
    root, runs = sd1
    run = runs[run_name]
    names = [run["initial_latents"], run["final_latents"]] + ([run["image"]] if "image" in run else [])
    t = read_safetensors(os.path.join(root, "tensors.safetensors"), names)
    assert run["initial_latents"] in t and run["final_latents"] in t
    pipe = diffuse.Pipeline.from_pretrained(os.path.join(root, "model"), device="cpu")
    sampler, schedule = run["scheduler"], "default"
    if sampler.endswith("_karras"):
        sampler, schedule = sampler[: -len("_karras")], "karras"
    seed = run["generator"]["seed"] if run["generator"] else 0
    out = pipe(run["prompt"], negative_prompt=run["negative_prompt"], guidance_scale=run["guidance_scale"],
               num_inference_steps=run["num_inference_steps"], width=run["width"], height=run["height"],
               sampler=sampler, schedule=schedule, generator=seed, latents=t[run["initial_latents"]],
               output_type="np")
    assert out.timings["unet_evals"] == run["n_unet_evals"]
    expected = t[run["final_latents"]]
    rel = np.abs(out.latents - expected).max() / np.abs(expected).max()
    assert rel < 1e-3, f"final latents: max relative error {rel:.3g}"
    if "image" in run and run["image"] in t:  # the f32 images of three runs are kept (tests/data/README.md)
        err = np.abs(out.images - t[run["image"]]).max()
        assert err < 1.0 / 255, f"image: max abs error {err:.3g}"
