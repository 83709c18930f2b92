#!/usr/bin/python3
"""Goldens for the TAESD decoder (src/models/taesd.cpp, tests/models/test_taesd.cpp).

The decoder is written here in plain torch from the published architecture
(madebyollin/taesd taesd.py `Decoder`; diffusers DecoderTiny is the same
network), with the width as a parameter: the published decoder has 64
channels (~1.2M parameters, 2.4 MB in fp16), far too big for the repository,
so the goldens use WIDTH = 8. The C++ reads the width from the file's shapes.

Weights: torch's default Conv2d initialisation under manual_seed(SEED),
rounded to fp16 (what is stored); the reference output is computed in f32
from those rounded weights, so the C++ f32 decode must match it to f32
rounding.

Writes tests/models/data/taesd/:
  taesd_decoder.pth                             original layout ("1.weight", "3.conv.0.weight", ...),
                                                torch.save zip, fp16
  diffusers/diffusion_pytorch_model.safetensors diffusers AutoencoderTiny layout
                                                ("decoder.layers.0.weight", ...), fp16
  cases.safetensors                             "latent" [2,4,4,5] f32 (UNet latents, some beyond
                                                the +-3 Clamp) and "output" [2,3,32,40] f32

Usage: /usr/bin/python3 tools/reference/taesd_goldens.py   (Debian's python3-torch; no safetensors package needed)
"""
import os

import torch
import torch.nn as nn

from safetensors_file import write_safetensors

WIDTH = 8
SEED = 20261207
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "models", "data", "taesd")


def conv3(n_in, n_out, bias=True):
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class TanhClamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv on x, plus x (identity skip: equal widths), then ReLU."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(conv3(c, c), nn.ReLU(), conv3(c, c), nn.ReLU(), conv3(c, c))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def decoder(width, latent_channels=4):
    layers = [TanhClamp(), conv3(latent_channels, width), nn.ReLU()]
    for stage in range(3):
        layers += [Block(width) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), conv3(width, width, bias=False)]
    layers += [Block(width), conv3(width, 3)]
    return nn.Sequential(*layers)



def main():
    torch.manual_seed(SEED)
    dec = decoder(WIDTH).eval()
    # What is stored is fp16; the reference runs on exactly those values in f32.
    with torch.no_grad():
        # Torch's init leaves the output near 0 (std ~0.04); a larger last conv
        # and a 0.5 bias give an image over most of [0, 1], so that previews
        # made from this file (tests/server/test_taesd_preview.cpp) show it.
        dec[-1].weight.mul_(8.0)
        dec[-1].bias.add_(0.5)
        for p in dec.parameters():
            p.copy_(p.half().float())
    state = {k: v.half() for k, v in dec.state_dict().items()}
    os.makedirs(os.path.join(OUT, "diffusers"), exist_ok=True)
    torch.save(state, os.path.join(OUT, "taesd_decoder.pth"))
    # diffusers' DecoderTiny Sequential has no Clamp entry: index - 1, under decoder.layers.
    diffusers = {}
    for k, v in state.items():
        idx, rest = k.split(".", 1)
        diffusers["decoder.layers.%d.%s" % (int(idx) - 1, rest)] = v
    write_safetensors(os.path.join(OUT, "diffusers", "diffusion_pytorch_model.safetensors"),
                      {k: diffusers[k] for k in sorted(diffusers)})

    g = torch.Generator().manual_seed(SEED + 1)
    latent = torch.randn(2, 4, 4, 5, generator=g) * 2.0  # some values beyond +-3 exercise the Clamp
    with torch.no_grad():
        out = dec(latent)
    write_safetensors(os.path.join(OUT, "cases.safetensors"), {"latent": latent, "output": out.float()})  # sorted already
    n = sum(p.numel() for p in dec.parameters())
    print("width %d: %d parameters; output range [%.4f, %.4f], std %.4f" %
          (WIDTH, n, out.min().item(), out.max().item(), out.std().item()))


if __name__ == "__main__":
    main()
