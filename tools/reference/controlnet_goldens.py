#!/usr/bin/env python3
"""ControlNet goldens (SD1, SD2, SDXL) that fit in the repository's test-data budget.

A ControlNet is built from each tiny fixture UNet with diffusers' own
ControlNetModel.from_unet (the encoder copy: conv_in, time and add embeddings,
down blocks and mid block take the base UNet's weights). What from_unet leaves
at zero or at its own random init -- the conditioning embedding
(controlnet_cond_embedding.*, small channels COND_CHANNELS) and the zero convs
(controlnet_down_blocks.*, controlnet_mid_block.*) -- is set to seeded random
values (torch.Generator('cpu'), one seed per family, std ZERO_CONV_STD for the
zero convs and 1/sqrt(fan_in) for the embedding) and rounded to fp16. Only those
tensors are stored (<fam>_control.safetensors, fp16) with the config.json
from_unet wrote; tests/pipeline/test_controlnet_goldens.cpp rebuilds the rest from
the base UNet (tests/data fixtures), as the inpaint9 goldens do with conv_in.

Runs are made by Hugging Face diffusers' own StableDiffusionControlNetPipeline /
StableDiffusionXLControlNetPipeline (diffusers at commit DIFFUSERS_COMMIT,
imported from its source via PYTHONPATH), float32 on the CPU, one
torch.Generator('cpu') per run, 10 steps, CFG 7.5:
  single  one ControlNet, control image A, conditioning scale 0.9
  multi   MultiControlNet of the same ControlNet twice: images A and B, scales
          [0.7, 0.5], control_guidance_start [0.0, 0.3], end [0.6, 1.0]
  guess   (sd1 only) one ControlNet, guess_mode=True, scale 1.0
Each run records its final latents (the last callback_on_step_end latents) and,
for "single", the decoded image (output_type="np", 8-bit PNG with numpy_to_pil's
rounding). The control images are drawn here (deterministic shapes) and written
as PNGs; the pipeline gets them as PIL images of the output size (no resize).

"residuals" records one ControlNetModel.forward (batch 1, the 64x64 top-left
crop of control image A, latents 8x8, conditioning_scale 0.75) with its inputs:
every down residual and the mid residual, stored fp16.

Usage (torch + transformers + safetensors + PIL; diffusers from source):
  PYTHONPATH=<diffusers>/src python3 tools/reference/controlnet_goldens.py \\
      --fixtures build/test-data/fixtures --out tests/pipeline/data/controlnet
"""
import argparse
import hashlib
import json
import os
from png_file import write_png  # noqa: E402  (tools/reference)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
PROMPT = "a red fox sitting in a snowy forest, detailed oil painting"
NEGATIVE = "blurry, low quality"
WIDTH, HEIGHT = 128, 64
COND_CHANNELS = (4, 8, 8, 16)  # conditioning_embedding_out_channels (real models: 16, 32, 96, 256)
ZERO_CONV_STD = 0.05
WEIGHT_SEED = {"sd1": 7001, "sd2": 7002, "sdxl": 7003}
RUN_SEED = {"single": 7100, "multi": 7101, "guess": 7102, "residuals": 7103}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def control_images():
    """Two deterministic 8-bit RGB images, WIDTH x HEIGHT: A is white edges on black
    (a canny-like map), B colour bands with a bright disc."""
    a = bytearray(WIDTH * HEIGHT * 3)
    b = bytearray(WIDTH * HEIGHT * 3)
    for y in range(HEIGHT):
        for x in range(WIDTH):
            i = (y * WIDTH + x) * 3
            edge = (x in (10, 11, 60) and 8 <= y <= 50) or (y in (8, 50) and 10 <= x <= 60)
            r2 = (x - 92) ** 2 + (y - 30) ** 2
            edge = edge or 380 <= r2 <= 460 or abs((x - 20) - 2 * (y - 55)) <= 1 and y >= 52
            v = 255 if edge else 0
            a[i:i + 3] = bytes((v, v, v))
            disc = (x - 40) ** 2 + (y - 36) ** 2 <= 300
            b[i:i + 3] = bytes((255 if disc else 40, 4 * y, 200 if x < 64 else 30))
    return a, b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", required=True, help="the materialised fixture tree (sd1/sd2/sdxl/model)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    import diffusers
    from diffusers import (ControlNetModel, EulerDiscreteScheduler, StableDiffusionControlNetPipeline,
                           StableDiffusionXLControlNetPipeline, UNet2DConditionModel)

    torch.set_num_threads(8)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)

    img_a, img_b = control_images()
    write_png(os.path.join(args.out, "control_a.png"), WIDTH, HEIGHT, img_a)
    write_png(os.path.join(args.out, "control_b.png"), WIDTH, HEIGHT, img_b)
    pil_a = Image.fromarray(np.frombuffer(bytes(img_a), dtype=np.uint8).reshape(HEIGHT, WIDTH, 3))
    pil_b = Image.fromarray(np.frombuffer(bytes(img_b), dtype=np.uint8).reshape(HEIGHT, WIDTH, 3))
    tensor_a = torch.from_numpy(np.frombuffer(bytes(img_a), dtype=np.uint8).reshape(HEIGHT, WIDTH, 3).copy())
    tensor_a = tensor_a.permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W] in [0, 1]

    cases = {"diffusers_commit": DIFFUSERS_COMMIT, "diffusers_version": diffusers.__version__,
             "torch": torch.__version__, "prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance_scale": 7.5,
             "num_inference_steps": 10, "scheduler": "euler", "width": WIDTH, "height": HEIGHT,
             "control_images": ["control_a.png", "control_b.png"],
             "conditioning_embedding_out_channels": list(COND_CHANNELS), "families": {}}
    tensors = {}
    for fam in ("sd1", "sd2", "sdxl"):
        base = os.path.join(args.fixtures, fam, "model")
        unet = UNet2DConditionModel.from_pretrained(os.path.join(base, "unet"), torch_dtype=torch.float32)
        cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_CHANNELS)
        g = torch.Generator("cpu").manual_seed(WEIGHT_SEED[fam])
        stored = {}
        with torch.no_grad():
            for name, p in cn.named_parameters():
                if name.startswith("controlnet_cond_embedding."):
                    if name.endswith(".weight"):
                        fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                        v = torch.randn(p.shape, generator=g) / fan_in ** 0.5
                    else:
                        v = torch.randn(p.shape, generator=g) * 0.05
                elif name.startswith("controlnet_down_blocks.") or name.startswith("controlnet_mid_block."):
                    v = torch.randn(p.shape, generator=g) * ZERO_CONV_STD
                else:
                    continue
                v = v.half()
                p.copy_(v.float())
                stored[name] = v.contiguous()
        cn.eval()
        save_file(stored, os.path.join(args.out, f"{fam}_control.safetensors"))
        with open(os.path.join(args.out, f"{fam}_config.json"), "w") as f:
            json.dump(dict(cn.config), f, indent=1, default=list)

        fam_cases = {"base_unet_sha256": sha256(os.path.join(base, "unet/diffusion_pytorch_model.safetensors")),
                     "control_weights": f"{fam}_control.safetensors", "config": f"{fam}_config.json",
                     "weight_rule": f"from_unet(base UNet) + controlnet_cond_embedding / controlnet_down_blocks / "
                                    f"controlnet_mid_block = randn(generator seed {WEIGHT_SEED[fam]}) scaled, fp16",
                     "runs": []}

        # One ControlNetModel.forward with its inputs.
        g = torch.Generator("cpu").manual_seed(RUN_SEED["residuals"])
        sample = torch.randn((1, 4, 8, 8), generator=g).half().float()
        ctx_dim = unet.config.cross_attention_dim
        context = torch.randn((1, 77, ctx_dim), generator=g).half().float()
        added = None
        prefix = f"{fam}/residuals/"
        if fam == "sdxl":
            pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            text_embeds = torch.randn((1, pooled_dim), generator=g).half().float()
            time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
            added = {"text_embeds": text_embeds, "time_ids": time_ids}
            tensors[prefix + "text_embeds"] = text_embeds.half()
            tensors[prefix + "time_ids"] = time_ids
        cond = tensor_a[:, :, :64, :64].contiguous()
        timestep = torch.tensor([421.0])
        with torch.no_grad():
            down, mid = cn(sample, timestep, encoder_hidden_states=context, controlnet_cond=cond,
                           conditioning_scale=0.75, added_cond_kwargs=added, return_dict=False)
        tensors[prefix + "sample"] = sample.half()
        tensors[prefix + "context"] = context.half()
        for i, d in enumerate(down):
            tensors[prefix + f"down.{i}"] = d.half().contiguous()
        tensors[prefix + "mid"] = mid.half().contiguous()
        fam_cases["residuals"] = {"timestep": 421.0, "conditioning_scale": 0.75, "latent_size": [8, 8],
                                  "control": "control_a.png[:64, :64] / 255", "num_down": len(down),
                                  "prefix": prefix, "stored_fp16": True}
        print(fam, "residuals", [tuple(d.shape) for d in down], tuple(mid.shape),
              "mid std", float(mid.std()), flush=True)

        if fam == "sdxl":
            mk = lambda c: StableDiffusionXLControlNetPipeline.from_pretrained(  # noqa: E731
                base, controlnet=c, torch_dtype=torch.float32, add_watermarker=False)
        else:
            mk = lambda c: StableDiffusionControlNetPipeline.from_pretrained(  # noqa: E731
                base, controlnet=c, torch_dtype=torch.float32, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False)
        runs = [("single", cn, pil_a, 0.9, 0.0, 1.0, False),
                ("multi", [cn, cn], [pil_a, pil_b], [0.7, 0.5], [0.0, 0.3], [0.6, 1.0], False)]
        if fam == "sd1":
            runs.append(("guess", cn, pil_a, 1.0, 0.0, 1.0, True))
        for name, net, image, scale, start, end, guess in runs:
            pipe = mk(net)
            pipe.set_progress_bar_config(disable=True)
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            last = {}

            def keep(p, i, t, kw_):
                last["latents"] = kw_["latents"].detach().clone()
                return kw_
            out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, height=HEIGHT, width=WIDTH,
                       guidance_scale=7.5, num_inference_steps=10, controlnet_conditioning_scale=scale,
                       control_guidance_start=start, control_guidance_end=end, guess_mode=guess,
                       generator=torch.Generator("cpu").manual_seed(RUN_SEED[name]), output_type="np",
                       callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["latents"])
            key = f"{fam}/{name}/final_latents"
            tensors[key] = last["latents"].float().contiguous()
            run = {"name": name, "seed": RUN_SEED[name], "scale": scale, "start": start, "end": end,
                   "guess_mode": guess, "images": ["control_a.png"] if name != "multi" else
                   ["control_a.png", "control_b.png"], "final_latents": key}
            if name == "single":
                image_np = out.images[0]
                rgb = (image_np * 255).round().clip(0, 255).astype("uint8").reshape(-1).tolist()
                png = f"{fam}_{name}.png"
                write_png(os.path.join(args.out, png), image_np.shape[1], image_np.shape[0], rgb)
                run["image_png"] = png
            fam_cases["runs"].append(run)
            print(fam, name, "final latents std", float(last["latents"].std()), flush=True)
        # The same seed without the ControlNet, to show the control changes the result.
        if fam == "sdxl":
            from diffusers import StableDiffusionXLPipeline as Plain
            plain = Plain.from_pretrained(base, torch_dtype=torch.float32, add_watermarker=False)
        else:
            from diffusers import StableDiffusionPipeline as Plain
            plain = Plain.from_pretrained(base, torch_dtype=torch.float32, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
        plain.set_progress_bar_config(disable=True)
        plain.scheduler = EulerDiscreteScheduler.from_config(plain.scheduler.config)
        lat = plain(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, guidance_scale=7.5,
                    num_inference_steps=10, generator=torch.Generator("cpu").manual_seed(RUN_SEED["single"]),
                    output_type="latent").images
        diff = float((lat - tensors[f"{fam}/single/final_latents"]).abs().max())
        fam_cases["single_vs_no_control_max_abs_diff"] = diff
        print(fam, "single vs no control: max |diff| of final latents", diff, flush=True)
        cases["families"][fam] = fam_cases
    save_file(tensors, os.path.join(args.out, "tensors.safetensors"))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
