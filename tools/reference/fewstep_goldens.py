#!/usr/bin/env python3
"""Goldens for few-step models: Turbo (trailing Euler ancestral, no CFG), an
LCM-distilled UNet (guidance as a w-embedding) and TCD.

Everything runs on the tiny fixture models (the real SD 1.x / 2.x / XL
architectures at tiny widths, build/test-data/fixtures/<family>/model), with
Hugging Face diffusers at commit DIFFUSERS_COMMIT imported from its source
(PYTHONPATH), in float32 on the CPU with one torch.Generator('cpu') per run,
as every other fixture was made.

(a) turbo: the sd2 and sdxl fixture models with the scheduler config that
    SD-Turbo / SDXL-Turbo publish (EulerAncestralDiscreteScheduler,
    timestep_spacing "trailing", epsilon); 1 and 4 steps at guidance 0.
(b) lcm: the sd1 fixture UNet with time_cond_proj_dim 256 (LCM_Dreamshaper_v7's
    value). Every weight is the fixture's except the new
    time_embedding.cond_proj.weight [32, 256], seeded randn * COND_PROJ_STD
    rounded to fp16 (stored, 16 KB). LCMScheduler with original_inference_steps
    50; 2 and 4 steps at guidance 8 through StableDiffusionPipeline's and
    LatentConsistencyModelPipeline's w-embedding (w = guidance - 1, no CFG).
    One UNet call with timestep_cond is recorded on its own, and the
    w-embedding itself.
(c) tcd: the sd1 fixture with TCDScheduler.from_config(its scheduler config),
    4 steps, eta (gamma) 0.3, guidance 0; every step's latents.

Only what the tests read is written: cases.json (parameters, timesteps),
tensors.safetensors (f32 latents; fp16 cond_proj), the scheduler configs as
JSON files, and 3 PNGs (diffusers' numpy_to_pil rounding).

Usage (torch + transformers + safetensors; diffusers from source):
  PYTHONPATH=<diffusers>/src python3 tools/reference/fewstep_goldens.py \\
      --fixtures build/test-data/fixtures --out tests/pipeline/data/fewstep
"""
import argparse
import json
import os
import shutil
import tempfile
from png_file import write_png  # noqa: E402  (tools/reference)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
PROMPT = "a red fox sitting in a snowy forest, detailed oil painting"
COND_PROJ_DIM = 256
COND_PROJ_SEED = 2323
COND_PROJ_STD = 0.05

# As stabilityai/sdxl-turbo ships scheduler/scheduler_config.json (the keys that matter).
TURBO_SCHEDULER = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
# As SimianLuo/LCM_Dreamshaper_v7 ships it.
LCM_SCHEDULER = {
    "_class_name": "LCMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

TURBO_RUNS = [("sd2", 1, 2301, True), ("sd2", 4, 2302, False), ("sdxl", 1, 2303, False), ("sdxl", 4, 2304, True)]
LCM_RUNS = [(2, 2311, False), (4, 2312, True)]
LCM_GUIDANCE = 8.0
TCD_RUN = {"steps": 4, "eta": 0.3, "seed": 2321, "guidance_scale": 0.0}


def save_png(out_dir, name, image):
    rgb = (image * 255).round().clip(0, 255).astype("uint8").reshape(-1).tolist()
    write_png(os.path.join(out_dir, name), image.shape[1], image.shape[0], rgb)


def linked_model(src, dst, scheduler):
    """A model folder: every component of `src` linked, the scheduler config replaced."""
    os.makedirs(dst)
    for entry in os.listdir(src):
        if entry != "scheduler":
            os.symlink(os.path.abspath(os.path.join(src, entry)), os.path.join(dst, entry))
    os.makedirs(os.path.join(dst, "scheduler"))
    with open(os.path.join(dst, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", required=True, help="the materialised fixture tree (build/test-data/fixtures)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    import diffusers
    from diffusers import (LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, TCDScheduler, UNet2DConditionModel)

    torch.set_num_threads(8)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="fewstep_")
    tensors = {}
    cases = {"diffusers_commit": DIFFUSERS_COMMIT, "diffusers_version": diffusers.__version__,
             "torch": torch.__version__, "prompt": PROMPT, "turbo": [], "lcm": {}, "tcd": {}}
    sd_kw = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    def recorder(keep_all):
        store = {"steps": []}

        def cb(pipe, i, t, kw):
            store["latents"] = kw["latents"].detach().clone()
            if "denoised" in kw:
                store["denoised"] = kw["denoised"].detach().clone()
            if keep_all:
                store["steps"].append(kw["latents"].detach().clone())
            return kw
        return store, cb

    def turbo():
      for fam, sched in (("sd2", TURBO_SCHEDULER), ("sdxl", TURBO_SCHEDULER)):
          with open(os.path.join(args.out, f"{fam}_turbo_scheduler_config.json"), "w") as f:
              json.dump(sched, f, indent=1)
      pipes = {}
      for fam in ("sd2", "sdxl"):
          folder = os.path.join(work, f"{fam}_turbo")
          linked_model(os.path.join(args.fixtures, fam, "model"), folder, TURBO_SCHEDULER)
          cls = StableDiffusionXLPipeline if fam == "sdxl" else StableDiffusionPipeline
          pipe = cls.from_pretrained(folder, torch_dtype=torch.float32, **({} if fam == "sdxl" else sd_kw))
          pipe.set_progress_bar_config(disable=True)
          assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
          pipes[fam] = pipe
      for fam, steps, seed, png in TURBO_RUNS:
          pipe = pipes[fam]
          store, cb = recorder(False)
          out = pipe(prompt=PROMPT, guidance_scale=0.0, num_inference_steps=steps,
                     generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                     callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"])
          name = f"turbo/{fam}/{steps}"
          tensors[name + "/final_latents"] = store["latents"].float().contiguous()
          run = {"family": fam, "steps": steps, "seed": seed, "guidance_scale": 0.0,
                 "width": out.images.shape[2], "height": out.images.shape[1],
                 "timesteps": [float(t) for t in pipe.scheduler.timesteps],
                 "sigmas": [float(s) for s in pipe.scheduler.sigmas],
                 "final_latents": name + "/final_latents"}
          if png:
              run["image_png"] = f"turbo_{fam}_{steps}.png"
              save_png(args.out, run["image_png"], out.images[0])
          cases["turbo"].append(run)
          print("turbo", fam, steps, run["timesteps"], float(store["latents"].std()), flush=True)

    base = os.path.join(args.fixtures, "sd1", "model")

    def lcm_section():
      unet0 = UNet2DConditionModel.from_pretrained(os.path.join(base, "unet"), torch_dtype=torch.float32)
      cfg = dict(unet0.config)
      cfg["time_cond_proj_dim"] = COND_PROJ_DIM
      unet = UNet2DConditionModel.from_config(cfg)
      sd = unet0.state_dict()
      c0 = cfg["block_out_channels"][0]
      g = torch.Generator("cpu").manual_seed(COND_PROJ_SEED)
      cond_proj = (torch.randn((c0, COND_PROJ_DIM), generator=g) * COND_PROJ_STD).half()
      sd["time_embedding.cond_proj.weight"] = cond_proj.float()
      unet.load_state_dict(sd, strict=True)
      unet.eval()
      tensors["lcm/cond_proj.weight"] = cond_proj.contiguous()
      with open(os.path.join(args.out, "lcm_scheduler_config.json"), "w") as f:
          json.dump(LCM_SCHEDULER, f, indent=1)
      lcm = LatentConsistencyModelPipeline.from_pretrained(base, unet=unet, scheduler=LCMScheduler.from_config(LCM_SCHEDULER),
                                                           torch_dtype=torch.float32, **sd_kw)
      lcm.set_progress_bar_config(disable=True)
      sdp = StableDiffusionPipeline.from_pretrained(base, unet=unet, scheduler=LCMScheduler.from_config(LCM_SCHEDULER),
                                                    torch_dtype=torch.float32, **sd_kw)
      sdp.set_progress_bar_config(disable=True)
      w = torch.tensor([LCM_GUIDANCE - 1.0])
      w_emb = lcm.get_guidance_scale_embedding(w, embedding_dim=COND_PROJ_DIM)
      tensors["lcm/w_embedding"] = w_emb.float().contiguous()
      # One UNet call with timestep_cond, on seeded inputs.
      g = torch.Generator("cpu").manual_seed(2310)
      x = torch.randn((1, 4, 16, 16), generator=g)
      ctx = torch.randn((1, 77, cfg["cross_attention_dim"]), generator=g)
      with torch.no_grad():
          y = unet(x, torch.tensor([759.0]), encoder_hidden_states=ctx, timestep_cond=w_emb).sample
          y0 = unet(x, torch.tensor([759.0]), encoder_hidden_states=ctx).sample  # without the condition
      tensors["lcm/unet/x"] = x.contiguous()
      tensors["lcm/unet/context"] = ctx.contiguous()
      tensors["lcm/unet/out"] = y.float().contiguous()
      cases["lcm"] = {"unet_config": {"base": "sd1/model/unet", "time_cond_proj_dim": COND_PROJ_DIM},
                      "cond_proj": {"tensor": "lcm/cond_proj.weight", "rule": f"randn([{c0}, {COND_PROJ_DIM}], generator "
                                    f"seed {COND_PROJ_SEED}) * {COND_PROJ_STD}, rounded to fp16"},
                      "scheduler_config": "lcm_scheduler_config.json", "guidance_scale": LCM_GUIDANCE,
                      "w_embedding": "lcm/w_embedding",
                      "unet_call": {"timestep": 759.0, "x": "lcm/unet/x", "context": "lcm/unet/context",
                                    "out": "lcm/unet/out",
                                    "condition_changes_output_by": float((y - y0).abs().max())},
                      "runs": []}
      for steps, seed, png in LCM_RUNS:
          for pname, pipe in (("lcm_pipeline", lcm), ("sd_pipeline", sdp)):
              store, cb = recorder(True)
              kw = {"callback_on_step_end_tensor_inputs": ["latents", "denoised"]} if pname == "lcm_pipeline" else \
                   {"callback_on_step_end_tensor_inputs": ["latents"]}
              out = pipe(prompt=PROMPT, guidance_scale=LCM_GUIDANCE, num_inference_steps=steps,
                         generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                         callback_on_step_end=cb, **kw)
              name = f"lcm/{pname}/{steps}"
              final = store["denoised"] if pname == "lcm_pipeline" else store["latents"]
              tensors[name + "/final_latents"] = final.float().contiguous()
              run = {"pipeline": type(pipe).__name__, "steps": steps, "seed": seed,
                     "width": out.images.shape[2], "height": out.images.shape[1],
                     "timesteps": [int(t) for t in pipe.scheduler.timesteps],
                     "final_latents": name + "/final_latents"}
              if pname == "lcm_pipeline":
                  for i, s in enumerate(store["steps"]):
                      tensors[f"{name}/step{i}"] = s.float().contiguous()
                  run["step_latents"] = [f"{name}/step{i}" for i in range(len(store["steps"]))]
                  if png:
                      run["image_png"] = f"lcm_{steps}.png"
                      save_png(args.out, run["image_png"], out.images[0])
              cases["lcm"]["runs"].append(run)
              print("lcm", pname, steps, run["timesteps"], float(final.std()), flush=True)
      # Steps beyond original_inference_steps: diffusers' own refusal.
      try:
          LCMScheduler.from_config(LCM_SCHEDULER).set_timesteps(51)
          cases["lcm"]["too_many_steps_error"] = None
      except ValueError as e:
          cases["lcm"]["too_many_steps_error"] = str(e)

    def tcd_section():
      pipe = StableDiffusionPipeline.from_pretrained(base, torch_dtype=torch.float32, **sd_kw)
      pipe.set_progress_bar_config(disable=True)
      shipped = dict(pipe.scheduler.config)
      pipe.scheduler = TCDScheduler.from_config(shipped)
      store, cb = recorder(True)
      pipe(prompt=PROMPT, guidance_scale=TCD_RUN["guidance_scale"], num_inference_steps=TCD_RUN["steps"],
                 eta=TCD_RUN["eta"], generator=torch.Generator("cpu").manual_seed(TCD_RUN["seed"]),
                 output_type="latent", callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"])
      cases["tcd"] = dict(TCD_RUN, family="sd1", scheduler_class="TCDScheduler",
                          scheduler_config=dict(pipe.scheduler.config),
                          timesteps=[int(t) for t in pipe.scheduler.timesteps],
                          step_latents=[f"tcd/step{i}" for i in range(len(store["steps"]))],
                          width=128, height=128)
      for i, s in enumerate(store["steps"]):
          tensors[f"tcd/step{i}"] = s.float().contiguous()
      print("tcd", cases["tcd"]["timesteps"], float(store["latents"].std()), flush=True)

    import traceback
    cases["errors"] = {}
    for label, section in (("turbo", turbo), ("lcm", lcm_section), ("tcd", tcd_section)):
        try:
            section()
        except Exception:  # keep what the other sections made
            cases["errors"][label] = traceback.format_exc()
            print(cases["errors"][label], flush=True)
    save_file(tensors, os.path.join(args.out, "tensors.safetensors"))
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, default=str)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
