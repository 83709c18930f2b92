"""Fits the demo model's live-preview factors (latent -> RGB) from its own VAE.

The cheap live preview (Pipeline::preview_rgb) maps the latents to colours
with a fixed map. The published factors fit SD 1.x's and SDXL's VAEs; the demo
model's VAE has a latent space of its own, so it gets its own factors, fitted
here once by least squares of the decoded RGB (averaged over each 8x8 block,
in [-1, 1]) on features of the latents, over the latents of procedural scenes
(shapes.py, a seed unseen in training) encoded by the model's own VAE. The
latents are the scaled ones the sampler denoises (z * scaling_factor).

A linear map of the 4 channels is not enough for this VAE (its colours are
off by 40-60/255); the default `--kind neighbourhood` uses the 3x3
neighbourhood of each latent pixel and the pairwise products of its channels
(47 rows of RGB; ModelInfo::preview_factors documents the layout).

    /usr/bin/python3 tools/demo_model/fit_preview.py models/demo [--write]

prints the fit (mean absolute error in 0-255 units, on the fitted scenes and
on another set) and the factors; --write stores them in the folder's
model_index.json as _diffuse_defaults.preview_factors (src/pipeline/model_loader.cpp
reads them). A few minutes on a 2-core CPU (Debian's python3-torch and numpy);
--cache FILE keeps the encoded latents for a second run.
"""

import argparse
import json
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd_torch  # noqa: E402
import shapes  # noqa: E402

if not hasattr(F, "scaled_dot_product_attention"):  # torch < 2.0 (Debian's 1.13)
    def _sdpa(q, k, v):
        w = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
        return w.softmax(dim=-1) @ v
    F.scaled_dot_product_attention = _sdpa


def read_safetensors(path):
    """name -> float32 torch tensor (the F16 / F32 dtypes this model uses)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    dtypes = {"F16": np.float16, "F32": np.float32}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        a = np.frombuffer(blob[begin:end], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
        out[name] = torch.from_numpy(a.astype(np.float32))
    return out


def scenes_rgb(n, seed, size):
    sampler = shapes.SceneSampler(seed)
    return shapes.render(sampler.batch(n), size, "cpu", seed=seed)  # [-1, 1]


@torch.no_grad()
def latents_and_targets(vae, images, scale, batch=64):
    zs, targets, spreads = [], [], []
    for i in range(0, images.shape[0], batch):
        mean, _ = vae.encode(images[i:i + batch])
        z = mean * scale
        decoded = vae.decode(z / scale).clamp(-1, 1)
        zs.append(z)
        pooled = F.avg_pool2d(decoded, 8)  # the colour each latent pixel stands for
        targets.append(pooled)
        # How far the block is from one flat colour (edges of shapes: high).
        spreads.append((F.avg_pool2d(decoded ** 2, 8) - pooled ** 2).clamp(min=0).sum(1, keepdim=True).sqrt())
    z = torch.cat(zs).permute(0, 2, 3, 1).reshape(-1, 4).double()
    t = torch.cat(targets).permute(0, 2, 3, 1).reshape(-1, 3).double()
    spread = torch.cat(spreads).reshape(-1).double()
    return z, t, spread


def design(z, kind, side):
    """The features of each latent pixel, in the order of the factors' rows:
    linear: z (4), 1; quadratic: z, z_a z_b for a <= b (10), 1; neighbourhood:
    the 3x3 neighbourhood of z (channel-major, then row, then column; edges
    repeat the border), z_a z_b of the centre, 1. `z` is [pixels, 4], `side`
    latent pixels a side (images of side x side)."""
    cols = []
    if kind == "neighbourhood":
        n = z.shape[0] // (side * side)
        x = F.pad(z.reshape(n, side, side, 4).permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate")
        cols.append(F.unfold(x, 3).permute(0, 2, 1).reshape(-1, 36))
    else:
        cols.append(z)
    if kind != "linear":
        cols += [z[:, i:i + 1] * z[:, j:j + 1] for i in range(4) for j in range(i, 4)]
    return torch.cat(cols + [torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)


def mae_255(factors, z, t, kind, side, mask=None):
    pred = (design(z, kind, side) @ factors).clamp(-1, 1)
    err = (pred - t).abs()
    if mask is not None:
        err = err[mask]
    return (err.mean() * 127.5).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the demo model folder (models/demo)")
    ap.add_argument("--scenes", type=int, default=256, help="scenes to fit on (256 made the shipped factors)")
    ap.add_argument("--seed", type=int, default=777001)
    ap.add_argument("--kind", choices=("linear", "quadratic", "neighbourhood"), default="neighbourhood",
                    help="linear: 5 rows (4 weights, bias); quadratic: 15 (with the 10 products of channel pairs); "
                         "neighbourhood: 47 (the 3x3 neighbourhood's 36 values, the 10 products, bias), "
                         "which the demo VAE needs for colours within 40/255")
    ap.add_argument("--max-spread", type=float, default=1e9,
                    help="fit only on the latent pixels whose 8x8 decoded block is this flat (RGB std, [-1, 1] units); "
                         "default: all")
    ap.add_argument("--cache", help="an .pt file keeping the encoded latents between runs")
    ap.add_argument("--write", action="store_true", help="store the factors in model_index.json")
    args = ap.parse_args()
    torch.manual_seed(0)

    with open(os.path.join(args.model, "vae", "config.json")) as f:
        config = json.load(f)
    vae = sd_torch.AutoencoderKL(config)
    vae.load_state_dict(read_safetensors(os.path.join(args.model, "vae", "diffusion_pytorch_model.safetensors")))
    vae.eval()
    size = config["sample_size"]
    scale = config["scaling_factor"]

    if args.cache and os.path.exists(args.cache):
        z, t, s, z2, t2, s2 = torch.load(args.cache)
    else:
        z, t, s = latents_and_targets(vae, scenes_rgb(args.scenes, args.seed, size), scale)
        z2, t2, s2 = latents_and_targets(vae, scenes_rgb(args.scenes // 4, args.seed + 1, size), scale)
        if args.cache:
            torch.save((z, t, s, z2, t2, s2), args.cache)
    # Flat blocks only (inside a shape or the background; not its edges, whose
    # colour a latent pixel's neighbours decide): the preview's job is the colours.
    flat, flat2 = s < args.max_spread, s2 < args.max_spread
    side = size // 8
    factors = torch.linalg.lstsq(design(z, args.kind, side)[flat], t[flat]).solution  # [5, 15 or 47, 3]
    print(f"{args.kind}, fit on {int(flat.sum())} of {z.shape[0]} latent pixels (--max-spread): mean abs error "
          f"{mae_255(factors, z, t, args.kind, side, flat):.1f}/255; held-out scenes: flat "
          f"{mae_255(factors, z2, t2, args.kind, side, flat2):.1f}/255, "
          f"all {mae_255(factors, z2, t2, args.kind, side):.1f}/255")
    rows = [[round(float(v), 4) for v in row] for row in factors]
    print(json.dumps(rows))
    if args.write:
        path = os.path.join(args.model, "model_index.json")
        with open(path) as f:
            index = json.load(f)
        index.setdefault("_diffuse_defaults", {})["preview_factors"] = rows
        text = json.dumps(index, indent=2)
        # One row of 3 numbers per line.
        text = re.sub(r"\[\s*(-?[\d.]+),\s*(-?[\d.]+),\s*(-?[\d.]+)\s*\]", r"[\1, \2, \3]", text)
        with open(path, "w") as f:
            f.write(text + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
