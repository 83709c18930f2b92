#!/usr/bin/python3
"""Goldens for the latent upscale modes of the hires fix (src/image/latent_resize.h).

AUTOMATIC1111's hires fix resizes the first pass's latents with
torch.nn.functional.interpolate(samples, size=(h, w), mode=..., antialias=...)
for each of its shared.latent_upscale_modes. This script runs that call on a
small seeded f32 tensor for every mode and several output sizes (2x, 1.5x,
a downscale, the same size, mixed per-axis factors) and stores input and
outputs in one safetensors file (f32, a few tens of KB) read by
tests/image/test_latent_resize.cpp.

Usage (Debian's python3-torch, torch 1.13, CPU):
  /usr/bin/python3 tools/reference/latent_upscale_goldens.py tests/image/data/latent_upscale.safetensors
"""
import json
import sys

import torch

from safetensors_file import write_safetensors

MODES = [  # A1111's name, torch mode, antialias (modules/shared.py latent_upscale_modes)
    ("Latent", "bilinear", False),
    ("Latent (antialiased)", "bilinear", True),
    ("Latent (bicubic)", "bicubic", False),
    ("Latent (bicubic antialiased)", "bicubic", True),
    ("Latent (nearest)", "nearest", False),
    ("Latent (nearest-exact)", "nearest-exact", False),
]
SIZES = [(16, 12), (12, 9), (5, 4), (8, 6), (13, 7), (3, 10)]  # (h, w) from an 8 x 6 input



def main():
    out = sys.argv[1]
    g = torch.Generator().manual_seed(2112)
    x = torch.randn((1, 2, 8, 6), generator=g, dtype=torch.float32)
    tensors = {"input": x}
    for mi, (name, mode, aa) in enumerate(MODES):
        for h, w in SIZES:
            kwargs = {} if mode.startswith("nearest") else {"align_corners": False}
            y = torch.nn.functional.interpolate(x, size=(h, w), mode=mode, antialias=aa, **kwargs)
            tensors[f"mode{mi}_{h}x{w}"] = y
    meta = {"torch": torch.__version__, "modes": json.dumps([m[0] for m in MODES]),
            "sizes": json.dumps(SIZES)}
    write_safetensors(out, tensors, meta)


if __name__ == "__main__":
    main()
