#!/usr/bin/python3
"""Goldens for src/models/rrdbnet.cpp (tests/models/test_rrdbnet.cpp).

Run with Debian's python3-torch (torch 1.13, numpy; no other packages):
    /usr/bin/python3 tools/reference/rrdbnet_goldens.py tests/models/data/rrdbnet

The network is written here in plain torch from the published architecture
(ESRGAN, Wang et al. 2018, as BasicSR's basicsr/archs/rrdbnet_arch.py builds
it): a residual-in-residual dense block net, leaky ReLU 0.2, residual scale
0.2, nearest 2x upsampling, pixel_unshuffle in front for the x2 / x1 models.
Weights are random (torch's default Conv2d init, seeded) and the x4 ones are
rounded to float16 values, so a file storing them as F16 holds exactly the
same network. The models are tiny (nf 4, gc 2; nb 2 for x4, 1 for x2) so the
files stay small (~140 KB in all); the key layouts are the real ones.

Writes:
  x4_new.safetensors        BasicSR keys (conv_first, body.N.rdbK.convJ, ...), bare, F16
  x4_params_ema.pth         the same weights as a Real-ESRGAN release stores them:
                            torch.save({'params_ema': state_dict})
  x4_old.pth                the same weights in the old ESRGAN layout (model.0,
                            model.1.sub.N.RDBK.convJ.0, model.1.sub.NB, model.3,
                            model.6, model.8, model.10), a bare state dict, float16
  x2_unshuffle.safetensors  an x2 model (pixel_unshuffle 2, conv_first in 12),
                            other weights, BasicSR keys under "params"
  goldens.safetensors       inputs (NCHW, [0, 1]) and the torch outputs, f32:
                            x4_in [1,3,8,10], x4_out [1,3,32,40],
                            x2_in [1,3,8,10], x2_out [1,3,16,20]
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_file import write_safetensors

NF, NB, GC = 4, 2, 2


class DenseBlock(nn.Module):
    """Five 3x3 convs, each fed the block input and every earlier output."""

    def __init__(self, nf, gc):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(nf + i * gc, gc, 3, 1, 1) for i in range(4)] + [nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)])

    def forward(self, x):
        feats = [x]
        for conv in self.convs[:4]:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return self.convs[4](torch.cat(feats, 1)) * 0.2 + x


class ResidualInResidual(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.blocks = nn.ModuleList([DenseBlock(nf, gc) for _ in range(3)])

    def forward(self, x):
        y = x
        for b in self.blocks:
            y = b(y)
        return y * 0.2 + x


class Net(nn.Module):
    def __init__(self, unshuffle, nf=NF, nb=NB, gc=GC):
        super().__init__()
        self.unshuffle = unshuffle
        self.first = nn.Conv2d(3 * unshuffle * unshuffle, nf, 3, 1, 1)
        self.trunk = nn.ModuleList([ResidualInResidual(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.last = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x):
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.first(x)
        body = feat
        for b in self.trunk:
            body = b(body)
        feat = feat + self.trunk_conv(body)
        feat = F.leaky_relu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(feat), 0.2))

    def convs(self):
        """(basicsr name, old ESRGAN name, conv) for every conv, in order."""
        out = [("conv_first", "model.0", self.first)]
        for n, rrdb in enumerate(self.trunk):
            for k, rdb in enumerate(rrdb.blocks):
                for j, conv in enumerate(rdb.convs):
                    out.append((f"body.{n}.rdb{k + 1}.conv{j + 1}", f"model.1.sub.{n}.RDB{k + 1}.conv{j + 1}.0", conv))
        nb = len(self.trunk)
        out += [("conv_body", f"model.1.sub.{nb}", self.trunk_conv), ("conv_up1", "model.3", self.up1),
                ("conv_up2", "model.6", self.up2), ("conv_hr", "model.8", self.hr), ("conv_last", "model.10", self.last)]
        return out

    def state(self, old_layout):
        sd = OrderedDict()
        for new, old, conv in self.convs():
            name = old if old_layout else new
            sd[name + ".weight"] = conv.weight.detach().clone()
            sd[name + ".bias"] = conv.bias.detach().clone()
        return sd



def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/models/data/rrdbnet"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(20261207)
    x4 = Net(unshuffle=1).eval()
    x2 = Net(unshuffle=2, nb=1).eval()
    with torch.no_grad():
        for p in x4.parameters():
            p.copy_(p.half().float())
    x4_in = torch.rand(1, 3, 8, 10)
    x2_in = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        x4_out = x4(x4_in)
        x2_out = x2(x2_in)

    write_safetensors(os.path.join(out_dir, "x4_new.safetensors"),
                      OrderedDict((k, v.half()) for k, v in x4.state(False).items()))
    torch.save({"params_ema": x4.state(False)}, os.path.join(out_dir, "x4_params_ema.pth"))
    torch.save(OrderedDict((k, v.half()) for k, v in x4.state(True).items()), os.path.join(out_dir, "x4_old.pth"))
    write_safetensors(os.path.join(out_dir, "x2_unshuffle.safetensors"),
                      OrderedDict(("params." + k, v) for k, v in x2.state(False).items()))
    write_safetensors(os.path.join(out_dir, "goldens.safetensors"),  # metadata: nb of the x4 model
                      OrderedDict(x4_in=x4_in, x4_out=x4_out, x2_in=x2_in, x2_out=x2_out),
                      {"torch": torch.__version__, "nf": str(NF), "nb": str(NB), "gc": str(GC)})
    print("x4 out range", float(x4_out.min()), float(x4_out.max()), "std", float(x4_out.std()))
    print("x2 out range", float(x2_out.min()), float(x2_out.max()), "std", float(x2_out.std()))


if __name__ == "__main__":
    main()
