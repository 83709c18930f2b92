#!/usr/bin/env python3
"""Writes kohya_tiny.pt: a kohya-format LoRA saved the way torch.save writes a
state dict (a zip archive with data.pkl and one storage file per tensor), for
tests/adapters/test_lora.cpp (LoRA files read through the restricted
unpickler). Python standard library only: torch's globals are stand-ins that
pickle under torch's names. The values are exact in float32:
  down[r, i] = ((r * 7 + i) % 11 - 5) / 64,  up[o, r] = ((o * 3 + r) % 13 - 6) / 32
for two modules of the tiny SD1 fixture model:
  lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q  (64x64, rank 2, alpha 1.0)
  lora_te_text_model_encoder_layers_1_self_attn_v_proj                (16x16, rank 2, no alpha)
  python3 tests/adapters/data/make_pt_lora.py tests/adapters/data/kohya_tiny.pt
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, torch_utils


class FloatStorage:  # pickled by name only, as torch.FloatStorage
    pass


def _rebuild_tensor_v2(*args):  # pickled by name only
    raise RuntimeError("never called")


FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
torch.FloatStorage, torch_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, s = [], 1
        for d in reversed(self.shape):
            stride.insert(0, s)
            s *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def main(out):
    storages, state = [], collections.OrderedDict()

    def tensor(values, shape):
        s = Storage(str(len(storages)), values)
        storages.append(s)
        return Tensor(s, shape)

    def module(name, out_dim, in_dim, rank, alpha):
        down = [((r * 7 + i) % 11 - 5) / 64 for r in range(rank) for i in range(in_dim)]
        up = [((o * 3 + r) % 13 - 6) / 32 for o in range(out_dim) for r in range(rank)]
        state[name + ".lora_down.weight"] = tensor(down, [rank, in_dim])
        state[name + ".lora_up.weight"] = tensor(up, [out_dim, rank])
        if alpha is not None:
            state[name + ".alpha"] = tensor([alpha], [])

    module("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q", 64, 64, 2, 1.0)
    module("lora_te_text_model_encoder_layers_1_self_attn_v_proj", 16, 16, 2, None)
    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump(state)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("archive/data.pkl", pkl.getvalue())] + [
                (f"archive/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values)) for s in storages] + [
                ("archive/version", b"3\n")]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, data)


if __name__ == "__main__":
    main(sys.argv[1])
