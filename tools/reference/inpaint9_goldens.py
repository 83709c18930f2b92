#!/usr/bin/env python3
"""Goldens for 9-channel inpainting models that fit in the repository.

The shared v2 fixture set has 9-channel inpainting goldens, but each of its
inpainting UNets has weights of its own (7.6 MB for the three), more than the
repository's test-data budget leaves. These goldens use models that cost
almost nothing to carry: the tiny v1 base model of each family (already in
tests/data) with its UNet's conv_in widened from 4 to 9 input channels, the
first 4 channels kept and the 5 new ones (latent mask + masked-image latents)
seeded random values of the base conv_in's scale, rounded to fp16. Only that
conv_in (a few KB) is stored; tests/pipeline/test_edit_goldens.cpp rebuilds the
model from the base UNet.

The runs are made by Hugging Face diffusers' own StableDiffusionInpaintPipeline
/ StableDiffusionXLInpaintPipeline, diffusers at commit DIFFUSERS_COMMIT (the
commit of every other fixture), imported from its source (PYTHONPATH), in
float32 on the CPU with one torch.Generator('cpu') per run, exactly as the
shared v2 goldens were made. Each run records its final latents (the last
callback_on_step_end latents) and the decoded image as diffusers returns it
(output_type="np"), written as an 8-bit PNG with numpy_to_pil's rounding.

Usage (on a machine with torch + transformers; PIL and numpy as diffusers needs):
  PYTHONPATH=<diffusers>/src python3 tools/reference/inpaint9_goldens.py \\
      --fixtures build/test-data/fixtures --out tests/pipeline/data/inpaint9
"""
import argparse
import hashlib
import json
import os
import sys
from png_file import write_png  # noqa: E402  (tools/reference)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
PROMPT = "a red fox sitting in a snowy forest, detailed oil painting"
NEGATIVE = "blurry, low quality"
RUNS = [  # name, scheduler, strength, seed: strength 1 (noise, masked draw) and < 1 (image, noise, masked draws)
    ("euler_s1.0", "euler", 1.0, 6100),
    ("ddim_s1.0", "ddim", 1.0, 6101),
    ("euler_s0.8", "euler", 0.8, 6102),
]
IMAGE_RUN = "euler_s0.8"  # the run whose image is kept as a PNG
CONV_SEED = {"sd1": 6001, "sd2": 6002, "sdxl": 6003}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_png_rgb(path):
    """8-bit RGB / L PNG -> (w, h, bytes) (stdlib; the fixture inputs)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from png_diff import read_png  # noqa: E402
    return read_png(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", required=True, help="the materialised v1 fixture tree (with v2/inputs)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from safetensors.torch import load_file, save_file
    import diffusers
    from diffusers import (DDIMScheduler, EulerDiscreteScheduler, StableDiffusionInpaintPipeline,
                           StableDiffusionXLInpaintPipeline, UNet2DConditionModel)

    torch.set_num_threads(8)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    w, h, init_rgb = read_png_rgb(os.path.join(args.fixtures, "v2/inputs/init_128.png"))
    mw, mh, mask_rgb = read_png_rgb(os.path.join(args.fixtures, "v2/inputs/mask_128.png"))
    init = torch.tensor(list(init_rgb), dtype=torch.float32).reshape(h, w, 3).permute(2, 0, 1)[None] / 255.0
    mask = torch.tensor(list(mask_rgb[0::3]), dtype=torch.float32).reshape(1, 1, mh, mw) / 255.0

    cases = {"diffusers_commit": DIFFUSERS_COMMIT, "diffusers_version": diffusers.__version__,
             "torch": torch.__version__, "prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance_scale": 7.5,
             "num_inference_steps": 10, "width": w, "height": h, "init_image": "v2/inputs/init_128.png",
             "mask_image": "v2/inputs/mask_128.png", "image_run": IMAGE_RUN, "families": {}}
    tensors = {}
    for fam in ("sd1", "sd2", "sdxl"):
        base = os.path.join(args.fixtures, fam, "model")
        unet4 = UNet2DConditionModel.from_pretrained(os.path.join(base, "unet"), torch_dtype=torch.float32)
        cfg = dict(unet4.config)
        cfg["in_channels"] = 9
        unet9 = UNet2DConditionModel.from_config(cfg)
        sd = unet4.state_dict()
        w4 = sd["conv_in.weight"]
        g = torch.Generator("cpu").manual_seed(CONV_SEED[fam])
        extra = torch.randn((w4.shape[0], 5) + tuple(w4.shape[2:]), generator=g) * w4.std()
        w9 = torch.cat([w4, extra], dim=1).half().float()
        sd["conv_in.weight"] = w9
        unet9.load_state_dict(sd)
        unet9.eval()
        save_file({"conv_in.weight": w9.half().contiguous()}, os.path.join(args.out, f"{fam}_conv_in.safetensors"))

        cls = StableDiffusionXLInpaintPipeline if fam == "sdxl" else StableDiffusionInpaintPipeline
        kw = {} if fam == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                       "requires_safety_checker": False}
        pipe = cls.from_pretrained(base, unet=unet9, torch_dtype=torch.float32, **kw)
        pipe.set_progress_bar_config(disable=True)
        shipped = dict(pipe.scheduler.config)
        fam_cases = {"base_unet_sha256": sha256(os.path.join(base, "unet/diffusion_pytorch_model.safetensors")),
                     "conv_in": f"{fam}_conv_in.safetensors",
                     "conv_in_rule": f"[:, :4] = base conv_in; [:, 4:] = randn(generator seed {CONV_SEED[fam]}) * "
                                     "base conv_in std; rounded to fp16", "runs": []}
        for name, sched, strength, seed in RUNS:
            cls_s = EulerDiscreteScheduler if sched == "euler" else DDIMScheduler
            pipe.scheduler = cls_s.from_config(shipped)
            last = {}

            def keep(p, i, t, kw_):
                last["latents"] = kw_["latents"].detach().clone()
                return kw_
            out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=init, mask_image=mask, height=h, width=w,
                       strength=strength, guidance_scale=7.5, num_inference_steps=10,
                       generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                       callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["latents"])
            image = out.images[0]  # [H, W, 3] float in [0, 1]
            tensors[f"{fam}/{name}/final_latents"] = last["latents"].float().contiguous()
            run = {"name": name, "scheduler": sched, "strength": strength, "seed": seed,
                   "final_latents": f"{fam}/{name}/final_latents"}
            if name == IMAGE_RUN:
                rgb = (image * 255).round().clip(0, 255).astype("uint8").reshape(-1).tolist()
                png = f"{fam}_{name}.png"
                write_png(os.path.join(args.out, png), image.shape[1], image.shape[0], rgb)
                run["image_png"] = png
            fam_cases["runs"].append(run)
            print(fam, name, "final latents std", float(last["latents"].std()), flush=True)
        cases["families"][fam] = fam_cases
    # Sizes that are multiples of 8 but not of 64: latents of odd size, where the
    # UNet's upsamplers interpolate to the skip's size (forward_upsample_size).
    from diffusers import StableDiffusionPipeline
    odd = []
    for fam, (ow, oh) in (("sd1", (72, 88)), ("sdxl", (120, 104))):
        base = os.path.join(args.fixtures, fam, "model")
        if fam == "sdxl":
            from diffusers import StableDiffusionXLPipeline
            pipe = StableDiffusionXLPipeline.from_pretrained(base, torch_dtype=torch.float32)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(base, torch_dtype=torch.float32, safety_checker=None,
                                                           feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=oh, width=ow, guidance_scale=7.5,
                   num_inference_steps=10, generator=torch.Generator("cpu").manual_seed(6200),
                   output_type="latent")
        key = f"odd_size/{fam}/final_latents"
        tensors[key] = out.images.float().contiguous()
        odd.append({"family": fam, "width": ow, "height": oh, "scheduler": "euler", "seed": 6200,
                    "pipeline": type(pipe).__name__, "final_latents": key})
        print("odd size", fam, ow, oh, tuple(out.images.shape), flush=True)
    cases["odd_size_txt2img"] = odd
    save_file(tensors, os.path.join(args.out, "tensors.safetensors"))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
