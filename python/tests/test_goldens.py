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


@pytest.fixture(scope="module")
def sd1_lora(fixtures_dir):
    root = os.path.join(os.environ.get("DIFFUSE_FIXTURES_V2") or os.path.join(fixtures_dir, "v2"), "sd1")
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    runs = {r["name"]: r for r in cases["lora"]["runs"] if "lora_file" in r}
    assert runs, f"{root}/cases.json has no LoRA run"
    return root, runs


@pytest.mark.parametrize("run_name", ["kohya_w1.0", "kohya_w0.6", "peft_w1.0"])
def test_lora_run_matches_diffusers(fixtures_dir, sd1_lora, run_name):
    """A LoRA through the loras= argument (A1111's name:weight) gives diffusers/PEFT's
    result with the C++ LoRA goldens' tolerances (tests/adapters/test_lora_goldens.cpp):
    the same seed on a CPU generator, final latents within 1e-3 relative, images
    within a mean of 1/255 and a max of 8/255."""
    root, runs = sd1_lora
    run = runs[run_name]
    names = [run["final_latents"]] + ([run["image"]] if "image" in run else [])
    t = read_safetensors(os.path.join(root, "tensors.safetensors"), names)
    assert run["final_latents"] in t
    pipe = diffuse.Pipeline.from_pretrained(os.path.join(fixtures_dir, "sd1", "model"), device="cpu")
    lora = os.path.join(root, run["lora_file"]) + ":" + str(run["adapter_weight"])
    out = pipe(run["prompt"], negative_prompt=run["negative_prompt"], guidance_scale=run["guidance_scale"],
               num_inference_steps=run["num_inference_steps"], width=run["width"], height=run["height"],
               sampler=run["scheduler"], generator=run["generator"]["seed"], loras=[lora], output_type="np")
    assert out.timings["unet_evals"] == run["n_unet_evals"]
    expected = t[run["final_latents"]]
    rel = np.abs(out.latents - expected).max() / np.abs(expected).max()
    assert rel < 1e-3, f"final latents: max relative error {rel:.3g}"
    if "image" in run and run["image"] in t:
        diff = np.abs(out.images[0] - t[run["image"]].reshape(out.images[0].shape))
        assert diff.mean() * 255 <= 1.0 and diff.max() * 255 <= 8.0, \
            f"image: mean {diff.mean() * 255:.3g}/255, max {diff.max() * 255:.3g}/255"
    # Without the LoRA the same call lands elsewhere: the adapter was applied.
    plain = pipe(run["prompt"], negative_prompt=run["negative_prompt"], guidance_scale=run["guidance_scale"],
                 num_inference_steps=run["num_inference_steps"], width=run["width"], height=run["height"],
                 sampler=run["scheduler"], generator=run["generator"]["seed"], output_type="np")
    assert np.abs(plain.latents - expected).max() / np.abs(expected).max() > 1e-2
