"""Train Diffuse's demo model: a tiny SD 1.x (VAE, CLIP text encoder, UNet) on shape scenes.

    python3 train.py --out models/demo                 # full recipe (~9 min on one H100)
    python3 train.py --smoke --out /tmp/demo-smoke     # a few steps of every stage
    python3 train.py --check-fixtures FIXTURES/sd1 ... # first compare sd_torch with diffusers' goldens

Stages: (1) optional check of sd_torch.py against the golden fixtures, (2) the
procedural dataset (shapes.py) and its BPE vocabulary (bpe.py), (3) the
autoencoder, (4) the text encoder and UNet together on the frozen autoencoder's
latents, (5) export of a diffusers-layout folder in fp16, (6) a prompt-adherence
check in PyTorch on the 30 held-out captions (Diffuse's own check is
`diffuse demo-eval`). Every random choice is seeded; each training stage runs a
fixed number of steps, with a wall-clock cap as a safety net (the log says if
the cap cut a stage short).
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import scorer  # noqa: E402
import sd_torch  # noqa: E402
import shapes  # noqa: E402

IMAGE_SIZE = 128
VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.35.0", "act_fn": "silu",
    "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "force_upcast": False, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "norm_num_groups": 32, "sample_size": IMAGE_SIZE, "scaling_factor": 1.0,
    "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}
UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.35.0", "act_fn": "silu",
    "attention_head_dim": 4, "block_out_channels": [64, 128, 128, 128], "center_input_sample": False,
    "cross_attention_dim": 128,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 1,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
    "sample_size": IMAGE_SIZE // 8, "use_linear_projection": False, "upcast_attention": False,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TEXT_CONFIG = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
               "max_position_embeddings": bpe.MAX_LENGTH, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
               "projection_dim": 128}
# Euler with linspace timesteps, as the model was checked with (sample() below). The
# leading-spaced PNDM/DDIM of SD 1.x start at t=951 with pure noise, which this
# tiny model, trained on flat-colour images, turns into texture.
SCHEDULER_CONFIG = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.35.0", "beta_end": 0.012,
                    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "interpolation_type": "linear",
                    "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1,
                    "timestep_spacing": "linspace", "trained_betas": None, "use_karras_sigmas": False}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def alphas_cumprod(device):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).to(device)


# ---------------------------------------------------------------- fixture check
def check_fixtures(folder, device):
    """sd_torch vs diffusers: the sd1 golden UNet and VAE outputs (fp32)."""
    from safetensors.torch import load_file
    t = load_file(os.path.join(folder, "tensors.safetensors"))
    unet_cfg = json.load(open(os.path.join(folder, "model/unet/config.json")))
    vae_cfg = json.load(open(os.path.join(folder, "model/vae/config.json")))
    unet = sd_torch.UNet2DConditionModel(unet_cfg)
    sd = {k: v.float() for k, v in load_file(os.path.join(folder, "model/unet/diffusion_pytorch_model.safetensors")).items()}
    unet.load_state_dict(sd, strict=True)
    vae = sd_torch.AutoencoderKL(vae_cfg)
    sd = {k: v.float() for k, v in load_file(os.path.join(folder, "model/vae/diffusion_pytorch_model.safetensors")).items()}
    vae.load_state_dict(sd, strict=True)
    unet, vae = unet.to(device).eval(), vae.to(device).eval()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        out = unet(t["unet/case0/sample"].to(device), torch.tensor([999], device=device),
                   t["unet/case0/encoder_hidden_states"].to(device)).cpu()
        dec = vae.decode(t["vae/decode/latent"].to(device)).cpu()
        mean, logvar = vae.encode(t["vae/encode/image"].to(device))
    errs = {
        "unet": (out - t["unet/case0/output"]).abs().max().item() / t["unet/case0/output"].abs().max().item(),
        "vae_decode": (dec - t["vae/decode/output"]).abs().max().item() / t["vae/decode/output"].abs().max().item(),
        "vae_mean": (mean.cpu() - t["vae/encode/mean"]).abs().max().item() / t["vae/encode/mean"].abs().max().item(),
        "vae_logvar": (logvar.cpu() - t["vae/encode/logvar"]).abs().max().item()
        / t["vae/encode/logvar"].abs().max().item(),
    }
    log(f"fixture check (max rel err): {errs}")
    if max(errs.values()) > 1e-4:
        raise SystemExit("sd_torch does not match diffusers' fixture outputs; refusing to train")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def load_weights(path):
    from safetensors.torch import load_file
    return {k: v.float() for k, v in load_file(path).items()}


# ---------------------------------------------------------------- data
def make_dataset(n, seed, device):
    sampler = shapes.SceneSampler(seed)
    scenes = sampler.batch(n)
    images = torch.empty(n, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=device)
    chunk = 2048
    for i in range(0, n, chunk):
        img = shapes.render(scenes[i:i + chunk], IMAGE_SIZE, device, seed=seed * 1000003 + i)
        images[i:i + chunk] = ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return scenes, images


def to_float(images_u8):
    return images_u8.float() / 127.5 - 1


# ---------------------------------------------------------------- training stages
def train_vae(vae, images, steps, cap_s, batch, lr, device):
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, fused=device == "cuda")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    g = torch.Generator(device=device).manual_seed(1)
    start = time.time()
    vae.train()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,), device=device, generator=g)
        x = to_float(images[idx]).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            mean, logvar = vae.encode(x)
            z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, device=device, generator=g)
            rec = vae.decode(z)
        rec = rec.float()
        kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).mean()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-5 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} loss {loss.item():.5f} kl {kl.item():.3f}")
        if time.time() - start > cap_s:
            log(f"vae: wall-clock cap {cap_s}s reached at step {step + 1}/{steps}")
            return step + 1
    return steps


@torch.no_grad()
def encode_all(vae, images, device):
    vae.eval()
    means, stds = [], []
    for i in range(0, images.shape[0], 1024):
        mean, logvar = vae.encode(to_float(images[i:i + 1024]))
        means.append(mean.half())
        stds.append(torch.exp(0.5 * logvar).half())
    return torch.cat(means), torch.cat(stds)


class Ema:
    def __init__(self, modules, decay):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def swap(self):
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def train_unet(unet, text_encoder, means, stds, ids, empty_ids, scale, steps, cap_s, batch, lr, device):
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=device == "cuda")
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.03)
    ema = Ema([unet, text_encoder], 0.999)
    acp = alphas_cumprod(device).float()
    g = torch.Generator(device=device).manual_seed(2)
    start = time.time()
    unet.train()
    text_encoder.train()
    done = steps
    for step in range(steps):
        idx = torch.randint(0, means.shape[0], (batch,), device=device, generator=g)
        z0 = (means[idx].float() + stds[idx].float() * torch.randn(means[idx].shape, device=device, generator=g)) * scale
        tok = ids[idx].clone()
        drop = torch.rand(batch, device=device, generator=g) < 0.1  # for classifier-free guidance
        tok[drop] = empty_ids
        t = torch.randint(0, 1000, (batch,), device=device, generator=g)
        noise = torch.randn(z0.shape, device=device, generator=g)
        a = acp[t][:, None, None, None]
        zt = (a.sqrt() * z0 + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            ctx = text_encoder(input_ids=tok).last_hidden_state
            pred = unet(zt, t, ctx)
        snr = a / (1 - a)
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weighting (Hang et al. 2023), eps target
        loss = (weight * (pred.float() - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(step)
        if step % 500 == 0 or step == steps - 1:
            log(f"unet step {step}/{steps} loss {loss.item():.5f}")
        if time.time() - start > cap_s:
            log(f"unet: wall-clock cap {cap_s}s reached at step {step + 1}/{steps}")
            done = step + 1
            break
    ema.swap()  # export the EMA weights
    return done


# ---------------------------------------------------------------- sampling (for the PyTorch-side check)
@torch.no_grad()
def sample(unet, text_encoder, vae, tokenizer, prompts, scale, steps, guidance, seed, device):
    """Euler (k-diffusion / EulerDiscreteScheduler, linspace timesteps) with CFG."""
    unet.eval()
    text_encoder.eval()
    acp = alphas_cumprod("cpu")
    sigmas_all = ((1 - acp) / acp).sqrt()
    ts = torch.linspace(999, 0, steps, dtype=torch.float64)
    sig = torch.from_numpy(__import__("numpy").interp(ts.numpy(), range(1000), sigmas_all.numpy()))
    sig = torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
    n = len(prompts)
    tok = torch.tensor([tokenizer.encode(p) for p in prompts] + [tokenizer.encode("")] * n, device=device)
    ctx = text_encoder(input_ids=tok).last_hidden_state
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, 4, IMAGE_SIZE // 8, IMAGE_SIZE // 8, generator=g).to(device) * sig[0].item()
    for i in range(steps):
        s = sig[i].item()
        inp = torch.cat([x, x]) / math.sqrt(s * s + 1)
        eps = unet(inp, torch.full((2 * n,), ts[i].item(), device=device), ctx)
        cond, uncond = eps[:n], eps[n:]
        eps = uncond + guidance * (cond - uncond)
        x = x + (sig[i + 1].item() - s) * eps
    img = vae.decode(x / scale)
    return ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


# ---------------------------------------------------------------- export
def save_folder(out, unet, vae, text_encoder, merges, vae_config, text_config_json):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)

    def save(module_sd, sub, name, prefix=""):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        sd = {prefix + k if not k.startswith(prefix) else k: v.detach().to(torch.float16).contiguous().cpu()
              for k, v in module_sd.items()}
        save_file(sd, os.path.join(out, sub, name), metadata={"format": "pt"})

    save(unet.state_dict(), "unet", "diffusion_pytorch_model.safetensors")
    save(vae.state_dict(), "vae", "diffusion_pytorch_model.safetensors")
    te_sd = {k: v for k, v in text_encoder.state_dict().items() if "position_ids" not in k}
    save(te_sd, "text_encoder", "model.safetensors", prefix="text_model.")
    for sub, cfg in (("unet", UNET_CONFIG), ("vae", vae_config), ("text_encoder", text_config_json),
                     ("scheduler", SCHEDULER_CONFIG)):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        name = "scheduler_config.json" if sub == "scheduler" else "config.json"
        with open(os.path.join(out, sub, name), "w") as f:
            json.dump(cfg, f, indent=2)
    bpe.write_tokenizer(os.path.join(out, "tokenizer"), merges)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.35.0",
             "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
             "safety_checker": [None, None], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             # Diffuse reads these (diffusers ignores "_" keys): the demo's defaults and licence.
             "_diffuse_defaults": {"steps": 20, "license": "Diffuse project: own weights, trained from scratch on "
                                                            "procedural images (tools/demo_model)"}}
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(out, "eval_captions.json"), "w") as f:
        json.dump({"palette": {k: list(v) for k, v in shapes.PALETTE.items()}, "image_size": IMAGE_SIZE,
                   "cases": shapes.eval_cases()}, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-fixtures", default=None, help="sd1 fixture folder (tensors.safetensors, model/)")
    ap.add_argument("--smoke", action="store_true", help="tiny run of every stage")
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--dataset", type=int, default=120000)
    ap.add_argument("--vae-steps", type=int, default=4000)
    ap.add_argument("--vae-cap", type=float, default=150)
    ap.add_argument("--unet-steps", type=int, default=12000)
    ap.add_argument("--unet-cap", type=float, default=330)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--grid", default=None, help="write a 4x4 PNG grid of held-out samples here")
    ap.add_argument("--lr", type=float, default=5e-4, help="UNet + text encoder peak learning rate")
    ap.add_argument("--resume", default=None, help="continue the UNet/text encoder of an exported folder")
    args = ap.parse_args()
    if args.smoke:
        args.dataset, args.vae_steps, args.unet_steps = 512, 3, 3
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t0 = time.time()
    if args.check_fixtures:
        check_fixtures(args.check_fixtures, device)

    scenes, images = make_dataset(args.dataset, args.seed, device)
    captions = [s[2] for s in scenes]
    counts = bpe.corpus_word_counts(captions)
    counts.update({w: 1 for w in shapes.vocabulary_words() + [","] if w not in counts})
    merges = bpe.learn_merges(counts)
    tokenizer = bpe.Tokenizer(merges)
    ids = torch.tensor([tokenizer.encode(c) for c in captions], device=device)
    empty_ids = torch.tensor(tokenizer.encode(""), device=device)
    log(f"dataset: {args.dataset} images, {len(tokenizer.vocab)} tokens, {time.time() - t0:.1f}s")
    # The scorer on the renderer's own pictures of the held-out scenes (should be ~100%).
    truth = [(c["background"], [(c["colour"], c["shape"], c["position"], c["size"])], c["caption"])
             for c in shapes.eval_cases()]
    truth_imgs = ((shapes.render(truth, IMAGE_SIZE, device, seed=7) + 1) * 127.5).round().clamp(0, 255)
    truth_imgs = truth_imgs.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    log(f"scorer on rendered held-out scenes: {scorer.score_all(truth_imgs, shapes.eval_cases())}")
    if args.grid:
        scorer.save_grid(truth_imgs[:16], args.grid.replace(".png", "_truth.png"))

    vae = sd_torch.AutoencoderKL(VAE_CONFIG).to(device).to(memory_format=torch.channels_last)
    if args.resume:
        # Continue from an exported folder: same tokenizer (the dataset is seeded), its VAE kept as is.
        saved_vocab = json.load(open(os.path.join(args.resume, "tokenizer/vocab.json")))
        if saved_vocab != tokenizer.vocab:
            raise SystemExit("--resume: that folder's vocabulary differs from this dataset's")
        vae.load_state_dict(load_weights(os.path.join(args.resume, "vae/diffusion_pytorch_model.safetensors")))
        vae_config = json.load(open(os.path.join(args.resume, "vae/config.json")))
        previous = json.load(open(os.path.join(args.resume, "training_log.json")))
        vae_steps = previous["vae_steps"]
        means, stds = encode_all(vae, images, device)
        scale = vae_config["scaling_factor"]
    else:
        previous = None
        vae_steps = train_vae(vae, images, args.vae_steps, args.vae_cap, 64, 1e-3, device)
        means, stds = encode_all(vae, images, device)
        scale = 1.0 / (means.float() + stds.float() * torch.randn(means.shape, device=device)).std().item()
        vae_config = dict(VAE_CONFIG, scaling_factor=round(scale, 5))
    with torch.no_grad():
        x = to_float(images[:256])
        rec = vae.decode(vae.encode(x)[0])
        log(f"vae: {vae_steps} steps, recon mae {(rec - x).abs().mean().item() / 2 * 255:.2f}/255, "
            f"scaling_factor {scale:.5f}")

    from transformers import CLIPTextConfig, CLIPTextModel
    vocab = tokenizer.vocab
    text_cfg = CLIPTextConfig(vocab_size=len(vocab), bos_token_id=vocab[bpe.BOS], eos_token_id=vocab[bpe.EOS],
                              pad_token_id=vocab[bpe.EOS], **TEXT_CONFIG)
    text_encoder = CLIPTextModel(text_cfg).to(device)
    text_config_json = dict(TEXT_CONFIG, architectures=["CLIPTextModel"], model_type="clip_text_model",
                            vocab_size=len(vocab), bos_token_id=vocab[bpe.BOS], eos_token_id=vocab[bpe.EOS],
                            pad_token_id=vocab[bpe.EOS], attention_dropout=0.0, dropout=0.0,
                            initializer_factor=1.0, initializer_range=0.02, torch_dtype="float16")
    unet = sd_torch.UNet2DConditionModel(UNET_CONFIG).to(device)
    if args.resume:
        unet.load_state_dict(load_weights(os.path.join(args.resume, "unet/diffusion_pytorch_model.safetensors")))
        te = load_weights(os.path.join(args.resume, "text_encoder/model.safetensors"))
        if not any(k.startswith("text_model.") for k in text_encoder.state_dict()):
            te = {k.removeprefix("text_model."): v for k, v in te.items()}
        missing, unexpected = text_encoder.load_state_dict(te, strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise SystemExit(f"--resume: text encoder keys differ: {missing} {unexpected}")
    unet = unet.to(memory_format=torch.channels_last)
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in
                (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    log(f"parameters: {n_params}")
    unet_steps = train_unet(unet, text_encoder, means, stds, ids, empty_ids, scale, args.unet_steps,
                            args.unet_cap, args.batch, args.lr, device)
    if previous:
        unet_steps += previous["unet_steps"]
    log(f"unet: {unet_steps} steps in all; this run {time.time() - t0:.0f}s")

    save_folder(args.out, unet, vae, text_encoder, merges, vae_config, text_config_json)
    run = {"command": " ".join(sys.argv), "seed": args.seed, "dataset": args.dataset, "unet_batch": args.batch,
           "lr": args.lr, "unet_steps": unet_steps - (previous["unet_steps"] if previous else 0),
           "seconds": round(time.time() - t0)}
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump({"runs": (previous.get("runs", []) if previous else []) + [run], "vae_steps": vae_steps,
                   "unet_steps": unet_steps, "parameters": n_params,
                   "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                   "torch": torch.__version__}, f, indent=2)

    cases = shapes.eval_cases()[:2 if args.smoke else None]
    for guidance in (3.0, 5.0, 7.5):
        imgs = sample(unet, text_encoder, vae, tokenizer, [c["caption"] for c in cases], scale, 20, guidance,
                      1234, device)
        result = scorer.score_all(imgs.numpy(), cases)
        log(f"adherence at guidance {guidance}, 20 steps (PyTorch): {result}")
        if args.grid and guidance == 7.5:
            scorer.save_grid(imgs[:16].numpy(), args.grid)
    log(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
