#!/usr/bin/env python3
"""Writes the small seed corpora in tests/fuzz/corpus/<target>/ (checked in).

Only the standard library: safetensors files and torch-style .ckpt zips are
assembled by hand (the .ckpt pickles use stand-in modules named like torch's,
so the stream holds the same GLOBAL opcodes torch.save writes:
collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.FloatStorage
as a persistent id). Run: python3 tests/fuzz/make_seeds.py
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


# --- safetensors -----------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, body = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + body


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
out("fuzz_safetensors", "f32_2x2", safetensors({"w": ("F32", [2, 2], f32(1, 2, 3, 4))}))
out("fuzz_safetensors", "mixed", safetensors({
    "a.weight": ("F16", [3], struct.pack("<3e", 1.0, -2.5, 65504.0)),
    "b.bias": ("BF16", [2], b"\x80\x3f\x00\xc0"),
    "c.ids": ("I64", [2, 1], struct.pack("<2q", 49406, 49407)),
    "d.mask": ("BOOL", [4], b"\x01\x00\x01\x01"),
    "e.scalar": ("F32", [], f32(7.5)),
    "f.empty": ("F32", [0, 4], b""),
    "g.f64": ("F64", [1], struct.pack("<d", 3.25)),
    "h.u8": ("U8", [2], b"\x00\xff"),
}, {"format": "pt", "modelspec.title": "seed"}))
out("fuzz_safetensors", "metadata_only", safetensors({}, {"format": "pt"}))


# --- torch .ckpt -----------------------------------------------------------
def fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    class HalfStorage:
        pass

    def _rebuild_tensor_v2(*args):
        pass

    FloatStorage.__module__ = HalfStorage.__module__ = "torch"
    FloatStorage.__qualname__, HalfStorage.__qualname__ = "FloatStorage", "HalfStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch.HalfStorage, torch._utils = FloatStorage, HalfStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    return torch, utils


class StorageRef:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def ckpt(obj, storages, archive="archive"):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(archive + "/data.pkl", buf.getvalue())
        for key, raw in storages.items():
            zf.writestr(archive + "/data/" + key, raw)
        zf.writestr(archive + "/version", "3\n")
    return z.getvalue()


torch, _ = fake_torch()
s0 = StorageRef(torch.FloatStorage, "0", 6)
s1 = StorageRef(torch.HalfStorage, "1", 4)
sd = collections.OrderedDict()
sd["model.diffusion_model.w"] = TensorRef(s0, 0, [2, 3], [3, 1])
sd["model.diffusion_model.wt"] = TensorRef(s0, 0, [3, 2], [1, 3])  # non-contiguous view
sd["first_stage_model.h"] = TensorRef(s1, 1, [3], [1])
raw = {"0": f32(*range(6)), "1": struct.pack("<4e", 0.5, 1.0, 1.5, 2.0)}
out("fuzz_torch_checkpoint", "state_dict", ckpt({"state_dict": sd, "global_step": 470000}, raw))
out("fuzz_torch_checkpoint", "flat", ckpt(sd, raw, archive="model"))
z = io.BytesIO()
with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:  # deflated entries (not torch's default)
    b = io.BytesIO()
    TorchPickler(b, protocol=2).dump(sd)
    zf.writestr("archive/data.pkl", b.getvalue())
    for k, v in raw.items():
        zf.writestr("archive/data/" + k, v)
out("fuzz_torch_checkpoint", "deflated", z.getvalue())


# --- PNG -------------------------------------------------------------------
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w, h, color_type=2, bit_depth=8, texts=(), itxt=(), ztxt=()):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = bytes((x * 37 + y * 11) & 0xFF for y in range(1) for x in range((w * channels * bit_depth + 7) // 8))
    raw = b"".join(b"\x00" + row for _ in range(h))
    s = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    for k, v in texts:
        s += chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1"))
    for k, v in itxt:
        s += chunk(b"iTXt", k.encode("latin-1") + b"\0\0\0\0\0" + v.encode())
    for k, v in ztxt:
        s += chunk(b"zTXt", k.encode("latin-1") + b"\0\0" + zlib.compress(v.encode("latin-1")))
    if color_type == 3:
        s += chunk(b"PLTE", bytes(range(48)))
    s += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return s


INFOTEXT = ("a photo of an astronaut riding a horse, (masterpiece:1.2)\n"
            "Negative prompt: blurry, lowres\n"
            "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, "
            'Lora hashes: "a: 1, b: 2", Version: diffuse 0.1.0')
out("fuzz_png", "rgb_parameters.png", png(4, 3, texts=[("parameters", INFOTEXT)]))
out("fuzz_png", "itxt_utf8.png", png(2, 2, color_type=6, itxt=[("parameters", "猫 — café\nSteps: 1")]))
out("fuzz_png", "gray16_ztxt.png", png(3, 2, color_type=0, bit_depth=16, ztxt=[("Comment", "zipped")]))
out("fuzz_png", "palette.png", png(5, 1, color_type=3, bit_depth=4))

# --- infotext --------------------------------------------------------------
out("fuzz_infotext", "full", INFOTEXT)
out("fuzz_infotext", "old_karras", "cat\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 640x448")
out("fuzz_infotext", "multiline", "line one\nline two\nNegative prompt: a\nb\nSteps: 5, Seed: -1, "
    "Variation seed: 7, Variation seed strength: 0.35, Denoising strength: 0.5, ENSD: 31337, RNG: NV")
out("fuzz_infotext", "prompt_only", "just a prompt")

# --- tokenizer / prompt weights (first byte of a tokenizer input picks the pad mode) ---
PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "A  CAFÉ\tnaïve   résumé!!! <|startoftext|>x<|endoftext|> don't we'll 123 4.5",
    "日本語のテキスト 🐱🚀 \u0301e\u0065\u0301 \x00\x7f",
    "(masterpiece:1.3), ((best quality)), [blurry], \\(literal\\) BREAK second chunk, a, b, c",
    "(unbalanced [nested (deep:0.5) ] :1.1 ) ) ] ( [",
    ", ".join(["word%d" % i for i in range(60)]),
]
for i, p in enumerate(PROMPTS):
    out("fuzz_tokenizer", "p%d" % i, bytes([i & 1]) + p.encode())
    out("fuzz_prompt_weights", "p%d" % i, p)
out("fuzz_tokenizer", "invalid_utf8", b"\x01\xff\xfe\xc3\x28 abc \xe2\x82")

# --- request JSON ----------------------------------------------------------
BODIES = [
    {"prompt": "a cat", "steps": 20, "width": 512, "height": 512, "seed": 1, "cfg_scale": 7.5,
     "sampler": "dpmpp_2m", "schedule": "karras", "images": 2, "clip_skip": 2},
    {"prompt": "x", "negative_prompt": None, "width": 64, "height": 64, "steps": 1, "model": "sd1"},
    {"prompt": "y", "batch_size": 1, "n_iter": 1, "sampler_name": "Euler a", "scheduler": "Karras",
     "override_settings": {"CLIP_stop_at_last_layers": 2}},
    {"prompt": "z", "prompts": ["a", "b"], "width": 1e300, "steps": 18446744073709551615},
]
for i, b in enumerate(BODIES):
    out("fuzz_request_json", "b%d.json" % i, json.dumps(b))
out("fuzz_request_json", "nested.json", '{"prompt": [[[[{"a": "\\ud83d\\ude00"}]]]], "steps": -0.0}')
