#!/usr/bin/env python3
"""IP-Adapter goldens (SD1 and SDXL, base and "plus") small enough for the repository.

Tiny random-weight models with the real architectures:
  image_encoder/  a CLIPVisionModelWithProjection (transformers; diffusers
                  layout: config.json + model.safetensors) of ENC_CONFIG:
                  hidden 16, 3 layers, 2 heads, 32x32 images in 8x8 patches
                  (17 tokens), projection 16, erf GELU.
  sd1_base.bin            IP-Adapter (ImageProjection: Linear + LayerNorm into
                          4 tokens) for the sd1 fixture UNet, as torch.save of
                          {"image_proj": {...}, "ip_adapter": {...}} (the
                          original .bin layout, read by the restricted unpickler).
  sdxl_plus.safetensors   IP-Adapter Plus (the perceiver Resampler, 4 layers
                          as diffusers' IPAdapterPlusImageProjection requires,
                          width PLUS_WIDTH, one 64-wide head, PLUS_QUERIES
                          queries) for sdxl, keys image_proj.* / ip_adapter.*.
  sd1_plus_proj.safetensors   only the image_proj.* of the sd1 plus adapter,
                          whose ip_adapter.* weights are sd1_base's; and
  sdxl_base_proj.safetensors  only the image_proj.* of an SDXL base adapter
                          whose ip_adapter.* weights are sdxl_plus's (this
                          saves 140 KB of test data); the tests write those
                          two whole files themselves (diffusers read them
                          whole: sd1_plus.safetensors, sdxl_base.safetensors,
                          deleted at the end).
Every weight is seeded torch.randn (torch.Generator('cpu'), one seed per
model) scaled by 1/sqrt(fan_in) (LayerNorm scales 1 + 0.1 randn), rounded to
fp16 and stored fp16. The ip_adapter.<n> numbering (n = 1, 3, 5, ...) follows
diffusers' attn-processor order (down blocks, up blocks, mid block, each
attention's transformer blocks in order); the script checks its own
derivation of that order against unet.attn_processors.

Recorded (tensors.safetensors, f32 unless noted; cases.json says what each is):
  preprocess/{a,b}/pixel_values   diffusers' feature extractor (CLIPImageProcessor
                                  with size = crop = 32) of ref_a.png / ref_b.png
  encoder/image_embeds            [2, 16] the encoder's image_embeds of a, b
  encoder/hidden_minus2           [2, 17, 16] hidden_states[-2] of a, b
  encoder/uncond_hidden_minus2    [1, 17, 16] hidden_states[-2] of all-zero pixel values
  <fam>/<kind>/tokens             [2, 2, T, D] unet.encoder_hid_proj of
                                  [negative; positive] embeddings of images (a, b)
  <fam>/<kind>/unet/{sample,context,text_embeds,time_ids,out}
                                  one UNet forward (batch 2, 8x8 latents, t=421,
                                  ip scale 0.7) with those embeddings
  <run>/final_latents              5-step Euler pipeline runs with load_ip_adapter
                                  (see RUNS), and two decoded images as PNGs
  torch_ref/...                   this script's own pure-torch (float64)
                                  encoder / projection / resampler, for a
                                  cross-check recorded in cases.json
Runs are float32 on the CPU, TF32 off, diffusers at DIFFUSERS_COMMIT imported
from its source (PYTHONPATH).

Usage:
  PYTHONPATH=<diffusers>/src python3 tools/reference/ipadapter_goldens.py \\
      --fixtures build/test-data/fixtures --out tests/adapters/data/ipadapter
  /usr/bin/python3 tools/reference/ipadapter_goldens.py --local --fixtures ... --out DIR
      (no diffusers / transformers: writes the models and the pure-torch
      references only)
"""
import argparse
import hashlib
import json
import os
import sys
from png_file import write_png  # noqa: E402  (tools/reference)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
PROMPT = "a red fox sitting in a snowy forest, detailed oil painting"
NEGATIVE = "blurry, low quality"
WIDTH, HEIGHT, STEPS, CFG = 64, 64, 5, 7.5
ENC_CONFIG = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8, "projection_dim": 16, "hidden_act": "gelu",
              "layer_norm_eps": 1e-5, "num_channels": 3}
PLUS_WIDTH, PLUS_QUERIES, PLUS_DEPTH, PLUS_HEAD = 8, 6, 4, 64
SEEDS = {"encoder": 8001, "sd1_base": 8002, "sd1_plus": 8003, "sdxl_base": 8004, "sdxl_plus": 8005, "unet": 8006}
# name, family, kind, adapter file, images, ip scale (a float or diffusers' per-block dict), seed, keep png
RUNS = [
    ("sd1_base", "sd1", "base", "sd1_base.bin", ["a"], 0.6, 8101, True),
    ("sd1_plus_multi", "sd1", "plus", "sd1_plus.safetensors", ["a", "b"],
     {"down": {"block_1": [0.0, 1.0]}, "mid": 0.5, "up": {"block_1": [1.0, 0.0, 0.6], "block_3": 0.8}}, 8102, False),
    ("sdxl_base", "sdxl", "base", "sdxl_base.safetensors", ["a"], 0.8, 8103, False),
    ("sdxl_plus", "sdxl", "plus", "sdxl_plus.safetensors", ["b"], 0.5, 8104, True),
]
REF_SIZES = {"a": (48, 40), "b": (40, 56)}  # (w, h): both need a resize and a centre crop


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ref_image(name):
    """Deterministic 8-bit RGB reference images with edges and gradients (so the
    bicubic resize matters)."""
    w, h = REF_SIZES[name]
    px = bytearray(w * h * 3)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 3
            if name == "a":
                disc = (x - 30) ** 2 + (y - 18) ** 2 <= 120
                px[i:i + 3] = bytes((250 if disc else 5 * x, (7 * y + 3 * x) % 256, 200 if x < 20 else 40))
            else:
                stripe = (x // 5 + y // 7) % 2
                px[i:i + 3] = bytes((60 + 150 * stripe, 255 - 4 * y, (x * y) % 256))
    return w, h, bytes(px)


def unet_cfg(fixtures, fam):
    with open(os.path.join(fixtures, fam, "model", "unet", "config.json")) as f:
        return json.load(f)


def ip_attention_layers(cfg):
    """(processor name, hidden size) of every cross-attention, in diffusers'
    attn_processors order: named_children of UNet2DConditionModel registers
    down_blocks and up_blocks before mid_block."""
    n = len(cfg["block_out_channels"])
    lpb = cfg["layers_per_block"]
    lpb = [lpb] * n if isinstance(lpb, int) else lpb
    tl = cfg.get("transformer_layers_per_block", 1)
    tl = [tl] * n if isinstance(tl, int) else tl
    rtl = cfg.get("reverse_transformer_layers_per_block") or list(reversed(tl))
    out = []
    for i, t in enumerate(cfg["down_block_types"]):
        if t.startswith("CrossAttn"):
            for a in range(lpb[i]):
                depth = tl[i] if isinstance(tl[i], int) else tl[i][a]
                for d in range(depth):
                    out.append((f"down_blocks.{i}.attentions.{a}.transformer_blocks.{d}.attn2.processor",
                                cfg["block_out_channels"][i]))
    rev = list(reversed(cfg["block_out_channels"]))
    rlpb = list(reversed(lpb))
    for i, t in enumerate(cfg["up_block_types"]):
        if t.startswith("CrossAttn"):
            for a in range(rlpb[i] + 1):
                depth = rtl[i] if isinstance(rtl[i], int) else rtl[i][a]
                for d in range(depth):
                    out.append((f"up_blocks.{i}.attentions.{a}.transformer_blocks.{d}.attn2.processor", rev[i]))
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        depth = tl[-1] if isinstance(tl[-1], int) else tl[-1][0]
        for d in range(depth):
            out.append((f"mid_block.attentions.0.transformer_blocks.{d}.attn2.processor", cfg["block_out_channels"][-1]))
    return out


class Rand:
    def __init__(self, seed):
        import torch
        self.torch = torch
        self.g = torch.Generator("cpu").manual_seed(seed)

    def w(self, shape, fan_in):
        return (self.torch.randn(shape, generator=self.g) / fan_in ** 0.5).half()

    def s(self, shape, std):
        return (self.torch.randn(shape, generator=self.g) * std).half()

    def ln(self, n):
        return (1 + 0.1 * self.torch.randn((n,), generator=self.g)).half(), self.s((n,), 0.1)


def encoder_weights():
    c = ENC_CONFIG
    r = Rand(SEEDS["encoder"])
    d, f, p = c["hidden_size"], c["intermediate_size"], c["patch_size"]
    n = (c["image_size"] // p) ** 2 + 1
    w = {"vision_model.embeddings.class_embedding": r.s((d,), 0.5),
         "vision_model.embeddings.patch_embedding.weight": r.w((d, 3, p, p), 3 * p * p),
         "vision_model.embeddings.position_embedding.weight": r.s((n, d), 0.5)}
    w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"] = r.ln(d)
    for i in range(c["num_hidden_layers"]):
        pre = f"vision_model.encoder.layers.{i}."
        w[pre + "layer_norm1.weight"], w[pre + "layer_norm1.bias"] = r.ln(d)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[pre + f"self_attn.{proj}.weight"] = r.w((d, d), d)
            w[pre + f"self_attn.{proj}.bias"] = r.s((d,), 0.05)
        w[pre + "layer_norm2.weight"], w[pre + "layer_norm2.bias"] = r.ln(d)
        w[pre + "mlp.fc1.weight"], w[pre + "mlp.fc1.bias"] = r.w((f, d), d), r.s((f,), 0.05)
        w[pre + "mlp.fc2.weight"], w[pre + "mlp.fc2.bias"] = r.w((d, f), f), r.s((d,), 0.05)
    w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"] = r.ln(d)
    w["visual_projection.weight"] = r.w((c["projection_dim"], d), d)
    return w


def encoder_config_json():
    j = {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
         "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
         "torch_dtype": "float16"}
    j.update(ENC_CONFIG)
    return j


def ip_layer_weights(cfg, r):
    cross = cfg["cross_attention_dim"]
    out = {}
    for i, (_, hidden) in enumerate(ip_attention_layers(cfg)):
        out[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = r.w((hidden, cross), cross)
        out[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = r.w((hidden, cross), cross)
    return out


def base_proj_weights(cfg, r):
    cross, e = cfg["cross_attention_dim"], ENC_CONFIG["projection_dim"]
    w = {"image_proj.proj.weight": r.w((4 * cross, e), e), "image_proj.proj.bias": r.s((4 * cross,), 0.05)}
    w["image_proj.norm.weight"], w["image_proj.norm.bias"] = r.ln(cross)
    return w


def plus_proj_weights(cfg, r):
    cross, e, hd = cfg["cross_attention_dim"], ENC_CONFIG["hidden_size"], PLUS_WIDTH
    w = {"image_proj.latents": r.s((1, PLUS_QUERIES, hd), hd ** -0.5),
         "image_proj.proj_in.weight": r.w((hd, e), e), "image_proj.proj_in.bias": r.s((hd,), 0.05),
         "image_proj.proj_out.weight": r.w((cross, hd), hd), "image_proj.proj_out.bias": r.s((cross,), 0.05)}
    w["image_proj.norm_out.weight"], w["image_proj.norm_out.bias"] = r.ln(cross)
    inner = PLUS_HEAD  # one head of 64
    for i in range(PLUS_DEPTH):
        p = f"image_proj.layers.{i}."
        w[p + "0.norm1.weight"], w[p + "0.norm1.bias"] = r.ln(hd)
        w[p + "0.norm2.weight"], w[p + "0.norm2.bias"] = r.ln(hd)
        w[p + "0.to_q.weight"] = r.w((inner, hd), hd)
        w[p + "0.to_kv.weight"] = r.w((2 * inner, hd), hd)
        w[p + "0.to_out.weight"] = r.w((hd, inner), inner)
        w[p + "1.0.weight"], w[p + "1.0.bias"] = r.ln(hd)
        w[p + "1.1.weight"] = r.w((4 * hd, hd), hd)
        w[p + "1.3.weight"] = r.w((hd, 4 * hd), 4 * hd)
    return w


def adapter_weights(fixtures):
    """name -> {full key: fp16 tensor} for the four adapters."""
    sd1, sdxl = unet_cfg(fixtures, "sd1"), unet_cfg(fixtures, "sdxl")
    out = {}
    r = Rand(SEEDS["sd1_base"])
    out["sd1_base"] = {**base_proj_weights(sd1, r), **ip_layer_weights(sd1, r)}
    r = Rand(SEEDS["sd1_plus"])
    out["sd1_plus"] = {**plus_proj_weights(sd1, r),
                       **{k: v for k, v in out["sd1_base"].items() if k.startswith("ip_adapter.")}}
    r = Rand(SEEDS["sdxl_plus"])
    out["sdxl_plus"] = {**plus_proj_weights(sdxl, r), **ip_layer_weights(sdxl, r)}
    r = Rand(SEEDS["sdxl_base"])
    out["sdxl_base"] = {**base_proj_weights(sdxl, r),
                        **{k: v for k, v in out["sdxl_plus"].items() if k.startswith("ip_adapter.")}}
    return out


def split_state_dict(w):
    return {"image_proj": {k[len("image_proj."):]: v.clone() for k, v in w.items() if k.startswith("image_proj.")},
            "ip_adapter": {k[len("ip_adapter."):]: v.clone() for k, v in w.items() if k.startswith("ip_adapter.")}}


# ---- this script's own pure-torch reference (float64) -------------------------

def preprocess_pil(w, h, rgb, size):
    """CLIPImageProcessor (slow, PIL): shortest side -> size bicubic, centre crop,
    x/255, normalise with CLIP's mean/std. -> [1, 3, size, size] float32."""
    import numpy as np
    from PIL import Image
    img = Image.frombytes("RGB", (w, h), rgb)
    short, long = (w, h) if w <= h else (h, w)
    nl = int(size * long / short)
    nw, nh = (size, nl) if w <= h else (nl, size)
    img = img.resize((nw, nh), resample=Image.BICUBIC)
    a = np.asarray(img).astype(np.float32)
    top, left = (nh - size) // 2, (nw - size) // 2
    a = a[top:top + size, left:left + size]
    a = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    a = (a - mean) / std
    return a.transpose(2, 0, 1)[None].copy()


def ref_encoder(w, pixel_values):
    import torch
    import torch.nn.functional as F
    c = ENC_CONFIG
    W = {k: v.double() for k, v in w.items()}
    x = torch.as_tensor(pixel_values).double()
    d, heads, eps = c["hidden_size"], c["num_attention_heads"], c["layer_norm_eps"]
    pe = F.conv2d(x, W["vision_model.embeddings.patch_embedding.weight"], stride=c["patch_size"])
    pe = pe.flatten(2).transpose(1, 2)  # [B, N, D]
    cls = W["vision_model.embeddings.class_embedding"].expand(x.shape[0], 1, d)
    h = torch.cat([cls, pe], 1) + W["vision_model.embeddings.position_embedding.weight"]
    h = F.layer_norm(h, (d,), W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], eps)
    hidden = [h]
    for i in range(c["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        n = F.layer_norm(h, (d,), W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], eps)
        q, k, v = (F.linear(n, W[p + f"self_attn.{s}_proj.weight"], W[p + f"self_attn.{s}_proj.bias"])
                   for s in "qkv")
        B, L, _ = q.shape
        q, k, v = (t.reshape(B, L, heads, -1).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v
        a = a.transpose(1, 2).reshape(B, L, d)
        h = h + F.linear(a, W[p + "self_attn.out_proj.weight"], W[p + "self_attn.out_proj.bias"])
        n = F.layer_norm(h, (d,), W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], eps)
        n = F.gelu(F.linear(n, W[p + "mlp.fc1.weight"], W[p + "mlp.fc1.bias"]))
        h = h + F.linear(n, W[p + "mlp.fc2.weight"], W[p + "mlp.fc2.bias"])
        hidden.append(h)
    pooled = F.layer_norm(h[:, 0], (d,), W["vision_model.post_layernorm.weight"],
                          W["vision_model.post_layernorm.bias"], eps)
    return pooled @ W["visual_projection.weight"].T, hidden


def ref_base_proj(w, embeds):
    import torch.nn.functional as F
    W = {k: v.double() for k, v in w.items()}
    cross = W["image_proj.norm.weight"].shape[0]
    x = F.linear(embeds.double(), W["image_proj.proj.weight"], W["image_proj.proj.bias"])
    x = x.reshape(embeds.shape[0], -1, cross)
    return F.layer_norm(x, (cross,), W["image_proj.norm.weight"], W["image_proj.norm.bias"], 1e-5)


def ref_resampler(w, x):
    """The original IP-Adapter Resampler (PerceiverAttention + FeedForward)."""
    import torch
    import torch.nn.functional as F
    W = {k[len("image_proj."):]: v.double() for k, v in w.items() if k.startswith("image_proj.")}
    hd = W["latents"].shape[2]
    lat = W["latents"].repeat(x.shape[0], 1, 1)
    x = F.linear(x.double(), W["proj_in.weight"], W["proj_in.bias"])
    for i in range(PLUS_DEPTH):
        p = f"layers.{i}."
        xn = F.layer_norm(x, (hd,), W[p + "0.norm1.weight"], W[p + "0.norm1.bias"], 1e-5)
        ln = F.layer_norm(lat, (hd,), W[p + "0.norm2.weight"], W[p + "0.norm2.bias"], 1e-5)
        q = F.linear(ln, W[p + "0.to_q.weight"])
        k, v = F.linear(torch.cat([xn, ln], 1), W[p + "0.to_kv.weight"]).chunk(2, -1)
        heads = q.shape[-1] // PLUS_HEAD
        B = q.shape[0]
        q, k, v = (t.reshape(B, t.shape[1], heads, PLUS_HEAD).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / PLUS_HEAD ** 0.5, -1) @ v
        a = a.transpose(1, 2).reshape(B, -1, heads * PLUS_HEAD)
        lat = F.linear(a, W[p + "0.to_out.weight"]) + lat
        f = F.layer_norm(lat, (hd,), W[p + "1.0.weight"], W[p + "1.0.bias"], 1e-5)
        lat = F.linear(F.gelu(F.linear(f, W[p + "1.1.weight"])), W[p + "1.3.weight"]) + lat
    out = F.linear(lat, W["proj_out.weight"], W["proj_out.bias"])
    cross = out.shape[-1]
    return F.layer_norm(out, (cross,), W["norm_out.weight"], W["norm_out.bias"], 1e-5)


def write_models(fixtures, out):
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from safetensors_file import write_safetensors
    enc = encoder_weights()
    os.makedirs(os.path.join(out, "image_encoder"), exist_ok=True)
    write_safetensors(os.path.join(out, "image_encoder", "model.safetensors"), enc, {"format": "pt"})
    with open(os.path.join(out, "image_encoder", "config.json"), "w") as f:
        json.dump(encoder_config_json(), f, indent=1)
    ad = adapter_weights(fixtures)
    torch.save(split_state_dict(ad["sd1_base"]), os.path.join(out, "sd1_base.bin"))
    write_safetensors(os.path.join(out, "sdxl_plus.safetensors"), ad["sdxl_plus"])
    for name in ("sd1_plus", "sdxl_base"):
        write_safetensors(os.path.join(out, f"{name}_proj.safetensors"),
                          {k: v for k, v in ad[name].items() if k.startswith("image_proj.")})
        # The whole file, for diffusers only (the tests assemble it).
        write_safetensors(os.path.join(out, f"{name}.safetensors"), ad[name])
    refs = {}
    for name in ("a", "b"):
        w, h, rgb = ref_image(name)
        write_png(os.path.join(out, f"ref_{name}.png"), w, h, rgb)
        refs[name] = (w, h, rgb)
    return enc, ad, refs


def torch_references(enc, ad, refs, tensors, pixel_values=None):
    """The pure-torch outputs, from `pixel_values` (name -> [1,3,S,S]) or this
    script's own PIL preprocessing."""
    import numpy as np
    import torch
    size = ENC_CONFIG["image_size"]
    pv = {}
    for name, (w, h, rgb) in refs.items():
        pv[name] = pixel_values[name] if pixel_values is not None else torch.from_numpy(preprocess_pil(w, h, rgb, size))
        tensors[f"torch_ref/preprocess/{name}"] = torch.from_numpy(preprocess_pil(w, h, rgb, size))
    x = torch.cat([pv["a"], pv["b"]], 0)
    embeds, hidden = ref_encoder(enc, x)
    _, uncond = ref_encoder(enc, torch.zeros_like(x[:1]))
    tensors["torch_ref/image_embeds"] = embeds.float()
    tensors["torch_ref/hidden_minus2"] = hidden[-2].float()
    tensors["torch_ref/uncond_hidden_minus2"] = uncond[-2].float()
    for fam in ("sd1", "sdxl"):
        tensors[f"torch_ref/{fam}/base/tokens"] = ref_base_proj(ad[f"{fam}_base"], embeds).float()
        tensors[f"torch_ref/{fam}/plus/tokens"] = ref_resampler(ad[f"{fam}_plus"], hidden[-2]).float()
    del np
    return embeds, hidden, uncond


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", required=True, help="the materialised fixture tree (sd1/sdxl/model)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--local", action="store_true", help="no diffusers: models and pure-torch references only")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from safetensors_file import write_safetensors
    import torch
    torch.set_num_threads(8)
    enc, ad, refs = write_models(args.fixtures, args.out)
    tensors = {}
    cases = {"diffusers_commit": DIFFUSERS_COMMIT, "torch": torch.__version__, "encoder_config": ENC_CONFIG,
             "plus": {"width": PLUS_WIDTH, "queries": PLUS_QUERIES, "depth": PLUS_DEPTH, "dim_head": PLUS_HEAD},
             "seeds": SEEDS, "weight_rule": "randn(torch.Generator('cpu').manual_seed(seed)) / sqrt(fan_in); "
             "LayerNorm scale 1 + 0.1 randn, shift 0.1 randn; rounded to fp16, stored fp16",
             "ref_images": {n: f"ref_{n}.png" for n in refs},
             "ip_layers": {fam: [n for n, _ in ip_attention_layers(unet_cfg(args.fixtures, fam))]
                           for fam in ("sd1", "sdxl")}}
    if args.local:
        torch_references(enc, ad, refs, tensors)
        write_safetensors(os.path.join(args.out, "tensors.safetensors"), tensors)
        with open(os.path.join(args.out, "cases.json"), "w") as f:
            json.dump(cases, f, indent=1)
        for name in ("sd1_plus", "sdxl_base"):
            os.remove(os.path.join(args.out, f"{name}.safetensors"))
        return

    import numpy as np
    from PIL import Image
    import diffusers
    import transformers
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cases.update({"diffusers_version": diffusers.__version__, "transformers": transformers.__version__,
                  "prompt": PROMPT, "negative_prompt": NEGATIVE, "guidance_scale": CFG, "steps": STEPS,
                  "scheduler": "euler", "width": WIDTH, "height": HEIGHT, "families": {}})
    pil = {n: Image.frombytes("RGB", (w, h), rgb) for n, (w, h, rgb) in refs.items()}

    def make_pipe(fam):
        base = os.path.join(args.fixtures, fam, "model")
        if fam == "sdxl":
            p = StableDiffusionXLPipeline.from_pretrained(base, torch_dtype=torch.float32, add_watermarker=False)
        else:
            p = StableDiffusionPipeline.from_pretrained(base, torch_dtype=torch.float32, safety_checker=None,
                                                        feature_extractor=None, requires_safety_checker=False)
        p.set_progress_bar_config(disable=True)
        p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config)
        return p

    files = {"base": {"sd1": "sd1_base.bin", "sdxl": "sdxl_base.safetensors"},
             "plus": {"sd1": "sd1_plus.safetensors", "sdxl": "sdxl_plus.safetensors"}}
    pixel_values = None
    for fam in ("sd1", "sdxl"):
        cfg = unet_cfg(args.fixtures, fam)
        fam_cases = {"base_unet_sha256": sha256(os.path.join(args.fixtures, fam, "model/unet/diffusion_pytorch_model.safetensors"))}
        for kind in ("base", "plus"):
            pipe = make_pipe(fam)
            pipe.load_ip_adapter(args.out, subfolder="", weight_name=files[kind][fam], image_encoder_folder="image_encoder")
            # diffusers' own order of the IP-Adapter processors (the Resampler's attentions, under
            # encoder_hid_proj, are processors too): recorded, and compared with ip_attention_layers.
            names = [n for n in pipe.unet.attn_processors if n.endswith("attn2.processor")]
            fam_cases["diffusers_ip_layer_order"] = names
            fam_cases["ip_layer_order_matches_script"] = names == [n for n, _ in ip_attention_layers(cfg)]
            print(fam, kind, "ip layer order matches:", fam_cases["ip_layer_order_matches_script"], flush=True)
            if pixel_values is None:
                fe = pipe.feature_extractor
                cases["feature_extractor"] = {"class": type(fe).__module__ + "." + type(fe).__name__,
                                              "config": json.loads(fe.to_json_string())}
                pixel_values = {n: fe(pil[n], return_tensors="pt").pixel_values.float() for n in ("a", "b")}
                for n in ("a", "b"):
                    tensors[f"preprocess/{n}/pixel_values"] = pixel_values[n].contiguous()
                x = torch.cat([pixel_values["a"], pixel_values["b"]], 0)
                with torch.no_grad():
                    eo = pipe.image_encoder(x, output_hidden_states=True)
                    uo = pipe.image_encoder(torch.zeros_like(x[:1]), output_hidden_states=True)
                tensors["encoder/image_embeds"] = eo.image_embeds.float().contiguous()
                tensors["encoder/hidden_minus2"] = eo.hidden_states[-2].float().contiguous()
                tensors["encoder/uncond_hidden_minus2"] = uo.hidden_states[-2].float().contiguous()
                # Cross-check of this script's own reference against transformers/diffusers.
                t_emb, t_hid, t_unc = torch_references(enc, ad, refs, tensors, pixel_values)
                cases["torch_ref_vs_diffusers"] = {
                    "pixel_values_max_abs": max(float((tensors[f"torch_ref/preprocess/{n}"] - pixel_values[n]).abs().max())
                                                for n in ("a", "b")),
                    "image_embeds_max_abs": float((t_emb.float() - eo.image_embeds).abs().max()),
                    "hidden_minus2_max_abs": float((t_hid[-2].float() - eo.hidden_states[-2]).abs().max()),
                    "uncond_max_abs": float((t_unc[-2].float() - uo.hidden_states[-2]).abs().max())}
            # Projected tokens and one UNet forward, batch [negative, positive], images (a, b).
            if kind == "base":
                pos = tensors["encoder/image_embeds"][None]                # [1, 2, E]
                neg = torch.zeros_like(pos)
            else:
                pos = tensors["encoder/hidden_minus2"][None]               # [1, 2, 17, H]
                neg = tensors["encoder/uncond_hidden_minus2"].expand(2, -1, -1)[None]
            embeds = torch.cat([neg, pos], 0)
            with torch.no_grad():
                tokens = pipe.unet.encoder_hid_proj([embeds])[0]
            tensors[f"{fam}/{kind}/tokens"] = tokens.float().contiguous()
            ref_tokens = tensors[f"torch_ref/{fam}/{kind}/tokens"]
            fam_cases[f"{kind}_tokens_torch_ref_max_abs"] = float(
                (tokens[1].reshape(ref_tokens.shape) - ref_tokens).abs().max())
            pipe.set_ip_adapter_scale(0.7)
            g = torch.Generator("cpu").manual_seed(SEEDS["unet"])
            sample = torch.randn((2, 4, 8, 8), generator=g).half().float()
            context = torch.randn((2, 8, cfg["cross_attention_dim"]), generator=g).half().float()
            added = {"image_embeds": [embeds]}
            p = f"{fam}/{kind}/unet/"
            if fam == "sdxl":
                pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
                added["text_embeds"] = torch.randn((2, pooled), generator=g).half().float()
                added["time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
                tensors[p + "text_embeds"] = added["text_embeds"].half()
                tensors[p + "time_ids"] = added["time_ids"]
            with torch.no_grad():
                out = pipe.unet(sample, torch.tensor([421.0]), encoder_hidden_states=context,
                                added_cond_kwargs=added, return_dict=False)[0]
            tensors[p + "sample"] = sample.half()
            tensors[p + "context"] = context.half()
            tensors[p + "out"] = out.float().contiguous()
            fam_cases[f"{kind}_unet"] = {"timestep": 421.0, "ip_scale": 0.7, "batch": "[negative, positive]",
                                         "images": ["a", "b"]}
            print(fam, kind, "tokens", tuple(tokens.shape), "unet out std", float(out.std()), flush=True)
        cases["families"][fam] = fam_cases

    cases["runs"] = []
    for name, fam, kind, fname, images, scale, seed, keep_png in RUNS:
        pipe = make_pipe(fam)
        pipe.load_ip_adapter(args.out, subfolder="", weight_name=fname, image_encoder_folder="image_encoder")
        pipe.set_ip_adapter_scale(scale)
        last = {}

        def keep(p, i, t, kw_):
            last["latents"] = kw_["latents"].detach().clone()
            return kw_
        ip_image = [[pil[n] for n in images]] if len(images) > 1 else pil[images[0]]
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, ip_adapter_image=ip_image, height=HEIGHT, width=WIDTH,
                   guidance_scale=CFG, num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(seed),
                   output_type="np", callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["latents"])
        tensors[f"{name}/final_latents"] = last["latents"].float().contiguous()
        run = {"name": name, "family": fam, "kind": kind, "adapter": fname, "images": [f"ref_{n}.png" for n in images],
               "ip_scale": scale, "seed": seed, "final_latents": f"{name}/final_latents"}
        if keep_png:
            im = out.images[0]
            rgb = (im * 255).round().clip(0, 255).astype("uint8").reshape(-1).tolist()
            write_png(os.path.join(args.out, f"{name}.png"), im.shape[1], im.shape[0], rgb)
            run["image_png"] = f"{name}.png"
        plain = make_pipe(fam)
        lat = plain(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, guidance_scale=CFG,
                    num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(seed),
                    output_type="latent").images
        run["vs_no_adapter_max_abs_diff"] = float((lat - last["latents"]).abs().max())
        cases["runs"].append(run)
        print(name, "final latents std", float(last["latents"].std()), "vs no adapter",
              run["vs_no_adapter_max_abs_diff"], flush=True)
    for name in ("sd1_plus", "sdxl_base"):
        os.remove(os.path.join(args.out, f"{name}.safetensors"))
    for k in [k for k in tensors if k.startswith("torch_ref/preprocess/")]:
        del tensors[k]  # the same as preprocess/*/pixel_values up to cases.json's torch_ref_vs_diffusers
    write_safetensors(os.path.join(args.out, "tensors.safetensors"), tensors)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    del np


if __name__ == "__main__":
    main()
