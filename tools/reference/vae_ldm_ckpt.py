#!/usr/bin/python3
"""A tiny VAE in the LDM layout as a torch .ckpt, for tests/models/test_vae_file.cpp.

The key names are those of the LDM autoencoder (ldm/modules/diffusionmodules/
model.py Encoder/Decoder, as vae-ft-mse-840000-ema-pruned.ckpt has them), written
here from its structure with ch_mult giving block_out_channels [4, 8],
num_res_blocks 1, z_channels 4, and 1x1 convs for the mid attention's q/k/v/proj_out.
It is saved as torch.save({"state_dict": ..., "global_step": 7}) (a Lightning
checkpoint) with one non-VAE key ("loss.logvar") that the reader must ignore.
Values: torch.randn under manual_seed(0), stored as fp16 (about 50 KB, mostly zip entries).

Writes tests/models/data/vae_ldm/vae_tiny.ckpt.
Usage: /usr/bin/python3 tools/reference/vae_ldm_ckpt.py   (Debian's python3-torch)
"""
import os

import torch

CH = [4, 8]
LAYERS = 1
LATENT = 4


def resnet(sd, p, cin, cout):
    sd[p + "norm1.weight"] = (cin,)
    sd[p + "norm1.bias"] = (cin,)
    sd[p + "conv1.weight"] = (cout, cin, 3, 3)
    sd[p + "conv1.bias"] = (cout,)
    sd[p + "norm2.weight"] = (cout,)
    sd[p + "norm2.bias"] = (cout,)
    sd[p + "conv2.weight"] = (cout, cout, 3, 3)
    sd[p + "conv2.bias"] = (cout,)
    if cin != cout:
        sd[p + "nin_shortcut.weight"] = (cout, cin, 1, 1)
        sd[p + "nin_shortcut.bias"] = (cout,)


def mid(sd, p, c):
    resnet(sd, p + "block_1.", c, c)
    for n in ["q", "k", "v", "proj_out"]:
        sd[p + "attn_1." + n + ".weight"] = (c, c, 1, 1)
        sd[p + "attn_1." + n + ".bias"] = (c,)
    sd[p + "attn_1.norm.weight"] = (c,)
    sd[p + "attn_1.norm.bias"] = (c,)
    resnet(sd, p + "block_2.", c, c)


def shapes():
    sd = {}
    n = len(CH)
    top = CH[-1]
    sd["encoder.conv_in.weight"] = (CH[0], 3, 3, 3)
    sd["encoder.conv_in.bias"] = (CH[0],)
    prev = CH[0]
    for i in range(n):
        for j in range(LAYERS):
            resnet(sd, f"encoder.down.{i}.block.{j}.", prev if j == 0 else CH[i], CH[i])
        if i != n - 1:
            sd[f"encoder.down.{i}.downsample.conv.weight"] = (CH[i], CH[i], 3, 3)
            sd[f"encoder.down.{i}.downsample.conv.bias"] = (CH[i],)
        prev = CH[i]
    mid(sd, "encoder.mid.", top)
    sd["encoder.norm_out.weight"] = (top,)
    sd["encoder.norm_out.bias"] = (top,)
    sd["encoder.conv_out.weight"] = (2 * LATENT, top, 3, 3)
    sd["encoder.conv_out.bias"] = (2 * LATENT,)
    sd["quant_conv.weight"] = (2 * LATENT, 2 * LATENT, 1, 1)
    sd["quant_conv.bias"] = (2 * LATENT,)
    sd["post_quant_conv.weight"] = (LATENT, LATENT, 1, 1)
    sd["post_quant_conv.bias"] = (LATENT,)
    sd["decoder.conv_in.weight"] = (top, LATENT, 3, 3)
    sd["decoder.conv_in.bias"] = (top,)
    mid(sd, "decoder.mid.", top)
    # LDM's decoder.up[i] works at level i (up[n-1] runs first); upsample on i != 0.
    prev = top
    for i in reversed(range(n)):
        for j in range(LAYERS + 1):
            resnet(sd, f"decoder.up.{i}.block.{j}.", prev if j == 0 else CH[i], CH[i])
        if i != 0:
            sd[f"decoder.up.{i}.upsample.conv.weight"] = (CH[i], CH[i], 3, 3)
            sd[f"decoder.up.{i}.upsample.conv.bias"] = (CH[i],)
        prev = CH[i]
    sd["decoder.norm_out.weight"] = (CH[0],)
    sd["decoder.norm_out.bias"] = (CH[0],)
    sd["decoder.conv_out.weight"] = (3, CH[0], 3, 3)
    sd["decoder.conv_out.bias"] = (3,)
    return sd


def main():
    torch.manual_seed(0)
    sd = {k: torch.randn(s).to(torch.float16) for k, s in sorted(shapes().items())}
    sd["loss.logvar"] = torch.zeros(()).to(torch.float16)
    out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "models", "data", "vae_ldm", "vae_tiny.ckpt")
    torch.save({"state_dict": sd, "global_step": 7}, out)
    print(out, os.path.getsize(out), "bytes,", len(sd), "tensors")


if __name__ == "__main__":
    main()
