"""How far PyTorch's own fp16/bf16 pipeline lands from its fp32 one on the golden fixtures.

Issue #10 asks Diffuse's fp16/bf16 images to stay within 3/255 of its fp32
images on the tiny random-weight fixture pipelines. This script measures the
same quantity for the reference stack, so the bound can be read against what
diffusers itself does: an SD 1.x or SD 2.x fixture model (`../shared/fixtures/sd1`,
`sd2`) runs the 10-step Euler pipeline run of `cases.json` (CFG 7.5, the
fixture's initial latents, epsilon or v-prediction as its scheduler says) with

* the text encoder: transformers' CLIPTextModel and CLIPTokenizer from the
  fixture folder (as diffusers' StableDiffusionPipeline calls them);
* the UNet and VAE: tools/demo_model/sd_torch.py, the diffusers-structured
  modules checked against the fixtures before the demo model was trained;
* EulerDiscreteScheduler's step with the fixture's sigmas, keeping latents in
  the model dtype between steps as the diffusers pipeline does.

in fp32, fp16 and bf16 on the GPU (TF32 off), and prints the fp32 run's error
against the fixture image (to show the harness is right) and the largest
per-pixel difference of the fp16/bf16 images against the fp32 image, in 1/255
units. A single UNet call (fixture case 0) is compared the same way.

Usage: python3 tools/precision/torch_reduced_precision_gap.py ../shared/fixtures/sd1 [--json OUT]
       (or .../sd2; SDXL's two text encoders and add-embedding are not modelled here)
Needs torch, transformers and safetensors (the device machine has them).
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo_model"))
import sd_torch  # noqa: E402


def load_models(folder, device):
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    def weights(sub):
        return {k: v.float() for k, v in load_file(os.path.join(folder, "model", sub,
                                                                "diffusion_pytorch_model.safetensors")).items()}

    unet = sd_torch.UNet2DConditionModel(json.load(open(os.path.join(folder, "model/unet/config.json"))))
    unet.load_state_dict(weights("unet"), strict=True)
    vae = sd_torch.AutoencoderKL(json.load(open(os.path.join(folder, "model/vae/config.json"))))
    vae.load_state_dict(weights("vae"), strict=True)
    te = CLIPTextModel.from_pretrained(os.path.join(folder, "model/text_encoder"), torch_dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(os.path.join(folder, "model/tokenizer"))
    return unet.to(device).eval(), vae.to(device).eval(), te.to(device).eval(), tok


@torch.no_grad()
def run_pipeline(models, case, tensors, dtype, device):
    unet, vae, te, tok = [m.to(dtype) if isinstance(m, torch.nn.Module) else m for m in models]
    run = next(r for r in case["pipeline_runs"] if r["name"] == "euler")
    sched = case["schedulers"]["euler"]["by_steps"][str(run["num_inference_steps"])]

    def encode(text):
        ids = tok(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return te(ids.to(device))[0]

    ctx = torch.cat([encode(run["negative_prompt"]), encode(run["prompt"])])  # [uncond, cond]
    latents = (tensors[run["initial_latents"]].to(device) * sched["init_noise_sigma"]).to(dtype)
    sigmas, g = sched["sigmas"], run["guidance_scale"]
    v_pred = case["schedulers"]["euler"]["effective_config"].get("prediction_type") == "v_prediction"
    for i, t in enumerate(sched["timesteps"]):
        sigma = sigmas[i]
        x_in = torch.cat([latents] * 2) / ((sigma ** 2 + 1) ** 0.5)
        out = unet(x_in, torch.tensor([t], device=device), ctx)
        uncond, cond = out.chunk(2)
        out = (uncond + g * (cond - uncond)).float()
        # Euler step in f32 (diffusers upcasts the sample), the result back in the model dtype.
        x = latents.float()
        x0 = (out * (-sigma / (sigma ** 2 + 1) ** 0.5) + x / (sigma ** 2 + 1)) if v_pred else x - sigma * out
        latents = (x + (x - x0) / sigma * (sigmas[i + 1] - sigma)).to(dtype)
    scale = json.load(open(os.path.join(args.fixtures, "model/vae/config.json")))["scaling_factor"]
    image = vae.decode(latents / scale)
    return (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu(), latents.float().cpu()


@torch.no_grad()
def unet_call(models, case, tensors, dtype, device):
    unet = models[0].to(dtype)
    t = case["unet"][0]["timestep"]
    out = unet(tensors["unet/case0/sample"].to(device).to(dtype), torch.tensor([t], device=device),
               tensors["unet/case0/encoder_hidden_states"].to(device).to(dtype))
    return out.float().cpu()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("fixtures", help="the sd1 fixture folder (../shared/fixtures/sd1)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    from safetensors.torch import load_file

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    case = json.load(open(os.path.join(args.fixtures, "cases.json")))
    tensors = load_file(os.path.join(args.fixtures, "tensors.safetensors"))
    run = next(r for r in case["pipeline_runs"] if r["name"] == "euler")
    golden = tensors[run["image"]]
    result = {"family": os.path.basename(os.path.normpath(args.fixtures)),
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    images, unet_out = {}, {}
    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        models = load_models(args.fixtures, device)  # fresh fp32 weights each time, then cast
        images[name], _ = run_pipeline(models, case, tensors, dt, device)
        unet_out[name] = unet_call(models, case, tensors, dt, device)
    ref_unet = tensors["unet/case0/output"]
    result["fp32_vs_fixture_image_max_abs_255"] = float((images["fp32"] - golden).abs().max()) * 255
    result["fp32_vs_fixture_unet_rel"] = float((unet_out["fp32"] - ref_unet).norm() / ref_unet.norm())
    for name in ("fp16", "bf16"):
        d = (images[name] - images["fp32"]).abs()
        result[f"{name}_vs_fp32_image_max_abs_255"] = float(d.max()) * 255
        result[f"{name}_vs_fp32_image_mean_abs_255"] = float(d.mean()) * 255
        result[f"{name}_vs_fp32_unet_rel"] = float((unet_out[name] - unet_out["fp32"]).norm()
                                                   / unet_out["fp32"].norm())
    for k, v in result.items():
        print(f"{k:40s} {v}")
    if args.json:
        json.dump(result, open(args.json, "w"), indent=1)
