#!/usr/bin/env python3
"""Writes tests/data from a complete fixture set (the shared v1 fixtures, e.g.
../shared/fixtures): only what the tests read, in the smallest lossless form
this script knows, plus manifest.json, from which materialize.py rebuilds the
fixture tree at build time. Python standard library only. Maintainers run it
when the fixture set changes:

  python3 tests/data/tools/pack.py ../shared/fixtures tests/data

What it does (README.md says why):
- verbatim files (JSON, TSV, the fixtures' README) go into files.tar.xz;
- the CLIP vocab.json / merges.txt of every tokenizer folder are the
  repository's models/tokenizers/clip files (checked: same sha256), so they are
  not stored again;
- weights and tensors are .pxz files (fixture_format.py);
- <family>/tensors.safetensors keeps only the tensors a test reads (KEEP);
- the token-embedding tables of the text encoders keep only the rows of the
  token ids that test prompts can reach (reachable_token_ids); the others are
  filled at build time;
- <family>/single_file.safetensors is a recipe over the folder's tensors.
"""
import argparse
import codecs
import fnmatch
import glob
import io
import json
import os
import re
import sys
import tarfile
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in tests/data (the build globs it)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_format as ff  # noqa: E402
from clip_bpe import BOS, EOS, ClipBpe  # noqa: E402

FAMILIES = ("sd1", "sd2", "sdxl")
SOURCE = ("shared fixture set v1 (../shared/fixtures; its README.md is materialised as README.md): diffusers "
          "0.40.0.dev0 @ 58eb52c0803ea9af3abec60841c2a093bdf1f951, transformers 5.17.0, torch 2.11.0+cu130")
TOKEN_TABLE = "text_model.embeddings.token_embedding.weight"
CLIP_DIR = "models/tokenizers/clip"

# Files of the set that no test reads (relative to the set's root).
DROPPED_GLOBS = ("v2/*", "tools/*", "baselines/bench_*", "generation_log.txt", "primary.log")

# From the v2 set (editing and adapter goldens, ../shared/fixtures/v2), the
# files tests/pipeline/test_edit_goldens.cpp and tests/adapters/* read: its
# README, the init images and masks, the LoRA files and textual-inversion
# embeddings, each family's cases.json, the final latents of every run of
# V2_SECTIONS (V2_KEEP_FIELDS of each run), the encoder outputs of the adapter
# runs (V2_KEEP_ENCODE of each run's "encode") and one 8-bit image per section
# (V2_PNGS; the f32 images of the full set are not kept).
V2_SECTIONS = ("img2img", "inpaint", "lora", "textual_inversion")
V2_KEEP_FIELDS = ("final_latents",)
V2_KEEP_ENCODE = ("prompt_embeds", "pooled_prompt_embeds")
V2_KEPT_GLOBS = ("v2/README.md", "v2/inputs/*.png", "v2/*/cases.json", "v2/sd1/tensors.safetensors",
                 "v2/sd2/tensors.safetensors", "v2/sdxl/tensors.safetensors", "v2/*/lora/*.safetensors",
                 "v2/*/ti/*", "v2/sdxl_refiner/model/*", "v2/sdxl_refiner/single_file_recipe.json")
V2_PNGS = ("img2img__euler_s0.75.png", "inpaint__euler_s0.8.png", "lora__kohya_w1.0.png", "ti__*.png",
           "refiner__*.png")
# The SDXL refiner (tests/pipeline/test_refiner.cpp): its model folder (the
# UNet; text encoder 2, tokenizer 2 and VAE are links to the v1 SDXL model),
# its single-file recipe, and these tensors of the sdxl cases.json "refiner" runs.
V2_REFINER_FIELDS = ("handoff_latents", "final_latents", "unet_prompt_embeds", "unet_add_text_embeds",
                     "unet_add_time_ids", "image_latents")

# rng.safetensors: torch.randn goldens for 3 seeds x 3 shapes x {cpu, cuda}.
# Every seed is kept on the smallest shape (1x4x64x64), seed 0 only on the two
# big ones (2x4x96x96, 1x4x128x128): the same generator code draws them all,
# and the draws of one seed are prefixes of each other (tests/data/README.md).
RNG_DROPPED = re.compile(r"randn/(cpu|cuda)/seed(42|1234567)/(2x4x96x96|1x4x128x128)")

# cases.json fields whose tensors tests read, per section (tests/models/test_clip_text.cpp,
# test_unet.cpp, test_vae.cpp, tests/pipeline/*, tests/cli/test_cli.cpp,
# tests/sampling/test_schedulers.cpp). Not kept: encode_prompt/* (no test),
# pipeline_runs[].step_latents (no test), scheduler_steps of sd2 / sdxl (the
# trajectory test runs on sd1's).
KEEP = {
    "text_encoder": None,  # None: every tensor the section names
    "unet": None,
    "vae": None,
    "pipeline_runs": {"initial_latents", "final_latents", "image"},
}
KEEP_SD1_ONLY = {"scheduler_steps": None}
# pipeline_runs images (f32, 150 kB each here): those of these runs only; the
# other runs' final latents are still compared (tests/pipeline/test_pipeline_fixtures.cpp).
KEEP_IMAGES = {"ddim", "euler", "euler_a"}


def read_python_json(text):
    """cases.json is Python's json.dump output: -Infinity / NaN are not JSON."""
    return json.loads(re.sub(r"(?<![\w\"])(-?Infinity|NaN)(?![\w\"])", "null", text))


def tensor_refs(node, names, out):
    """Strings anywhere in `node` that name a tensor of `names`."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for v in node:
            tensor_refs(v, names, out)
    elif isinstance(node, str) and node in names:
        out.add(node)


def kept_tensors(family, cases, names):
    keep = dict(KEEP)
    if family == "sd1":
        keep.update(KEEP_SD1_ONLY)
    out = set()
    for section, fields in keep.items():
        if fields is None:
            tensor_refs(cases[section], names, out)
        else:
            for item in cases[section]:
                for f in fields:
                    if f == "image" and item.get("name") not in KEEP_IMAGES:
                        continue
                    if f in item and item[f] in names:
                        out.add(item[f])
    return out


def v2_kept_tensors(cases, names):
    """The V2_KEEP_FIELDS tensors and V2_KEEP_ENCODE encoder outputs of every run of V2_SECTIONS."""
    out = set()
    for section in V2_SECTIONS:
        for run in cases[section]["runs"]:
            for field in V2_KEEP_FIELDS:
                if run.get(field) in names:
                    out.add(run[field])
            encode = run.get("encode") or {}
            for field in V2_KEEP_ENCODE:
                if encode.get(field) in names:
                    out.add(encode[field])

    def walk(node):  # V2_REFINER_FIELDS anywhere in the refiner runs
        if isinstance(node, dict):
            for k, v in node.items():
                if k in V2_REFINER_FIELDS and isinstance(v, str) and v in names:
                    out.add(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(cases.get("refiner", {}).get("runs", []))
    return out


# --- token ids the tests can reach ------------------------------------------

RAW_STR = re.compile(r'R"([^()\\ ]{0,16})\((.*?)\)\1"', re.S)
C_STR = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
JS_STR = re.compile(r"'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\]|\\.)*)`")


def unescape(s):
    """The text of a C / JS literal: \\uNNNN as that character, \\xNN and octal escapes as bytes
    (a C string's UTF-8), \\n, \\" ..."""
    raw = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), s).encode("utf-8", "surrogatepass")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown escapes stay as they are
            raw, _ = codecs.escape_decode(raw)
    except ValueError:  # a bad \\x escape: the text as written
        pass
    return raw.decode("utf-8", "replace")  # invalid UTF-8 (lone surrogates too) as U+FFFD


def literals(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        src = f.read()
    if path.endswith(".html"):
        return [src]
    out = [m.group(2) for m in RAW_STR.finditer(src)]
    rest = RAW_STR.sub(" ", src)
    out += [unescape(m.group(1)) for m in C_STR.finditer(rest)]
    if path.endswith(".js"):
        out += [unescape(m.group(1) or m.group(2) or "") for m in JS_STR.finditer(rest)]
    return out


def prompt_strings(repo, src, cases):
    """Every string a test could give a text encoder of the fixture models, over-approximated:
    every string literal of tests/ (and of web/, which the browser test drives), every string of
    cases.json and the tokenizer.json prompts."""
    texts = []
    files = [f for f in glob.glob(os.path.join(repo, "tests", "**", "*"), recursive=True)
             if f.endswith((".cpp", ".h", ".js")) and os.sep + "fuzz" + os.sep not in f
             and os.sep + "node_modules" + os.sep not in f]
    files += glob.glob(os.path.join(repo, "web", "*.js")) + glob.glob(os.path.join(repo, "web", "*.html"))
    for f in sorted(files):
        texts += literals(f)

    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                strings(v)
        elif isinstance(node, list):
            for v in node:
                strings(v)
        elif isinstance(node, str):
            texts.append(node)
    for key in cases:
        strings(cases[key])
    for fam in FAMILIES:
        with open(os.path.join(src, fam, "tokenizer.json"), encoding="utf-8") as f:
            strings([c["prompt"] for c in json.load(f)["cases"]])
    return texts


def reachable_token_ids(repo, src, cases, input_ids):
    """Token ids whose embedding rows are kept: BOS, EOS, both pad ids, every id of the goldens'
    input_ids, the tokens of every prompt string (prompt_strings), each tokenised whole and with
    the prompt-weighting syntax ()[]{}:|\\ turned into spaces (the parser tokenises the pieces
    between), by both tokenizer variants (pad "<|endoftext|>" and pad "!"); and, for prompts the
    tests build at run time: every single-byte token (punctuation, digits, letters, with and
    without </w>) and every token that repeats one character (std::string(n, 'a'))."""
    vocab_path, merges_path = (os.path.join(repo, CLIP_DIR, n) for n in ("vocab.json", "merges.txt"))
    toks = [ClipBpe(vocab_path, merges_path), ClipBpe(vocab_path, merges_path, "!")]
    ids = {BOS, EOS, 0}
    for t in input_ids:
        ids.update(t)
    syntax = re.compile(r"[()\[\]{}:|\\]")
    for text in prompt_strings(repo, src, cases):
        for variant in {text, syntax.sub(" ", text)}:
            for tok in toks:
                ids.update(tok.encode(variant))
    vocab = toks[0].vocab
    for token, i in vocab.items():
        body = token[:-4] if token.endswith("</w>") else token
        if len(body) == 1 or (body and body == body[0] * len(body)):
            ids.add(i)
    return sorted(ids)


def text_encoder_tables(blob, kept_ids):
    """(stored, materialised) forms of a text encoder file: the token table's rows not in
    kept_ids zeroed (xz stores them for nothing), and then filled as materialize.py fills them.
    Checks that every other byte is the original's."""
    st = ff.SafeTensors(blob)
    rows, width = st.header[TOKEN_TABLE]["shape"]
    base = len(st.header_bytes) + st.header[TOKEN_TABLE]["data_offsets"][0]
    row = 2 * width
    kept = set(kept_ids)
    zeroed = bytearray(blob)
    for r in range(rows):
        if r not in kept:
            zeroed[base + r * row:base + (r + 1) * row] = bytes(row)
    zeroed = bytes(zeroed)
    filled = ff.fill_rows(zeroed, TOKEN_TABLE, kept_ids)
    assert filled[:base] == blob[:base] and filled[base + rows * row:] == blob[base + rows * row:]
    assert all(filled[base + r * row:base + (r + 1) * row] == blob[base + r * row:base + (r + 1) * row] for r in kept)
    return zeroed, filled


# --- single files -----------------------------------------------------------

def single_file_recipe(single, components):
    """How each tensor of `single` comes from the folder tensors `components` ({rel: SafeTensors}):
    same bytes (copy; the single file may only reshape), a transposed 2-D tensor, or a
    concatenation along dim 0 (OpenCLIP's fused q/k/v)."""
    by_hash = {}
    for rel, st in components.items():
        for k in st.names():
            by_hash.setdefault(ff.sha256(st.tensor(k)), (rel, k))
    steps = {}
    for name in single.names():
        raw = single.tensor(name)
        e = single.header[name]
        h = ff.sha256(raw)
        if h in by_hash:
            steps[name] = {"op": "copy", "from": [list(by_hash[h])], "sha256": h}
            continue
        found = None
        if len(e["shape"]) == 2:
            esz = ff.DTYPE_SIZE[e["dtype"]]
            back = ff.sha256(ff.transpose2d(raw, e["shape"], esz))  # the folder tensor, if transposed
            if back in by_hash:
                found = {"op": "transpose2d", "from": [list(by_hash[back])], "sha256": h}
        if not found and e["shape"] and e["shape"][0] % 3 == 0:
            third = len(raw) // 3
            parts = [by_hash.get(ff.sha256(raw[i * third:(i + 1) * third])) for i in range(3)]
            if all(parts):
                found = {"op": "concat0", "from": [list(p) for p in parts], "sha256": h}
        if not found:
            raise SystemExit(f"single file tensor {name} {e['shape']}: no folder tensor gives its bytes")
        steps[name] = found
    return {"header": single.header_bytes[8:].decode(), "tensors": steps}


def compact_json(value):
    """Indented JSON with lists of numbers or strings on one line."""
    text = json.dumps(value, indent=1)
    return re.sub(r"\[\s*((?:-?\d+|\"[^\"]*\")(?:,\s*(?:-?\d+|\"[^\"]*\"))*)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


# --- main -------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="the complete fixture set (e.g. ../shared/fixtures)")
    ap.add_argument("out", help="tests/data")
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    args = ap.parse_args()
    src, out, repo = (os.path.abspath(p) for p in (args.src, args.out, args.repo))

    all_files = sorted(os.path.relpath(p, src) for p in glob.glob(os.path.join(src, "**", "*"), recursive=True)
                       if os.path.isfile(p))
    v2_kept = [f for f in all_files if any(fnmatch.fnmatch(f, g) for g in V2_KEPT_GLOBS)
               and f.split("/")[1] in ("README.md", "inputs", "sd1", "sd2", "sdxl", "sdxl_refiner")]
    v2_kept += [f for f in all_files for fam in FAMILIES for n in V2_PNGS if fnmatch.fnmatch(f, f"v2/{fam}/png/{n}")]
    dropped = [f for f in all_files if any(fnmatch.fnmatch(f, g) for g in DROPPED_GLOBS) and f not in v2_kept]
    files = [f for f in all_files if f not in dropped]
    cases, cases_v2 = {}, {}
    for fam in FAMILIES:
        with open(os.path.join(src, fam, "cases.json"), encoding="utf-8") as f:
            cases[fam] = read_python_json(f.read())
        with open(os.path.join(src, "v2", fam, "cases.json"), encoding="utf-8") as f:
            cases_v2[fam] = read_python_json(f.read())

    def original(rel):
        with open(os.path.join(src, rel), "rb") as f:
            return f.read()

    def write(rel, data):
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    manifest = {"format": 1, "source": SOURCE, "not_stored": list(DROPPED_GLOBS), "files": {}}
    entries = manifest["files"]

    # Tokens that the tests can feed to a text encoder.
    input_ids = []
    for fam in FAMILIES:
        st = ff.SafeTensors(original(f"{fam}/tensors.safetensors"))
        for k in st.names():
            if k.endswith("/input_ids"):
                raw = st.tensor(k)
                input_ids.append([int.from_bytes(raw[i:i + 8], "little", signed=True) for i in range(0, len(raw), 8)])
    kept_ids = reachable_token_ids(repo, src, {**cases, **{f"v2/{k}": v for k, v in cases_v2.items()}}, input_ids)
    manifest["token_rows"] = {"tensor": TOKEN_TABLE, "kept": ff.ids_to_ranges(kept_ids)}

    filled_blobs = {}  # text encoder files as materialize.py makes them
    verbatim = io.BytesIO()
    with tarfile.open(fileobj=verbatim, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in files:
            blob = original(rel)
            entry = {"sha256": ff.sha256(blob)}
            name = os.path.basename(rel)
            if name in ("vocab.json", "merges.txt"):
                with open(os.path.join(repo, CLIP_DIR, name), "rb") as f:
                    if ff.sha256(f.read()) != entry["sha256"]:
                        raise SystemExit(f"{rel} differs from {CLIP_DIR}/{name}")
                entry["from"] = f"repo:{CLIP_DIR}/{name}"
            elif not rel.endswith(".safetensors"):
                info = tarfile.TarInfo(rel)
                info.size, info.mtime, info.mode = len(blob), 0, 0o644
                tar.addfile(info, io.BytesIO(blob))
                entry["from"] = "files.tar.xz"
            elif rel.endswith("/single_file.safetensors"):
                continue  # after the folders (their recipes read the filled text encoders)
            elif rel == "rng.safetensors":
                st = ff.SafeTensors(blob)
                keep = {k for k in st.names() if not RNG_DROPPED.fullmatch(k)}
                tensors = {k: (st.header[k]["dtype"], st.header[k]["shape"], st.tensor(k)) for k in keep}
                pruned = ff.write_safetensors(tensors, st.header.get("__metadata__"))
                entry = {"sha256": ff.sha256(pruned), "from": "rng.pxz",
                         "tensors_sha256": {k: ff.sha256(tensors[k][2]) for k in sorted(keep)},
                         "dropped_tensors": sorted(set(st.names()) - keep), "original_sha256": entry["sha256"]}
                write(entry["from"], ff.pack_pxz(pruned))
            elif rel.startswith("v2/") and "/tensors.safetensors" not in rel:  # LoRA files, embeddings
                entry["from"] = rel[:-len(".safetensors")] + ".pxz"
                write(entry["from"], ff.pack_pxz(blob))
            elif rel.endswith("/tensors.safetensors"):
                v2 = rel.startswith("v2/")
                fam = rel.split("/")[1] if v2 else rel.split("/")[0]
                st = ff.SafeTensors(blob)
                keep = (v2_kept_tensors(cases_v2[fam], set(st.names())) if v2
                        else kept_tensors(fam, cases[fam], set(st.names())))
                tensors = {k: (st.header[k]["dtype"], st.header[k]["shape"], st.tensor(k)) for k in keep}
                pruned = ff.write_safetensors(tensors, st.header.get("__metadata__"))
                entry = {"sha256": ff.sha256(pruned), "from": ("v2/" if v2 else "") + f"{fam}/tensors.pxz",
                         "tensors_sha256": {k: ff.sha256(tensors[k][2]) for k in sorted(keep)},
                         "dropped_tensors": sorted(set(st.names()) - keep), "original_sha256": entry["sha256"]}
                write(entry["from"], ff.pack_pxz(pruned))
            elif rel.endswith("/model.safetensors") and TOKEN_TABLE in ff.SafeTensors(blob).header:
                fam, _, component = rel.split("/")[:3]
                zeroed, filled = text_encoder_tables(blob, kept_ids)
                entry = {"sha256": ff.sha256(filled), "from": f"{fam}/{component}.pxz", "fill_rows": TOKEN_TABLE,
                         "original_sha256": entry["sha256"]}
                filled_blobs[rel] = filled
                write(entry["from"], ff.pack_pxz(zeroed))
            else:
                parts = rel.split("/")
                stored = f"{parts[0]}/{parts[2]}.pxz"
                entry["from"] = stored
                write(stored, ff.pack_pxz(blob))
            entries[rel] = entry

    # Single files: recipes over the folder files as materialize.py makes them.
    for fam in FAMILIES:
        rel = f"{fam}/single_file.safetensors"
        single = ff.SafeTensors(original(rel))
        components = {}
        for crel, e in entries.items():
            if crel.startswith(f"{fam}/model/") and crel.endswith(".safetensors"):
                blob = filled_blobs.get(crel) or original(crel)
                components[crel[len(f"{fam}/model/"):]] = ff.SafeTensors(blob)
        # Match against the original folder tensors, then point the recipe at the filled ones.
        originals = {c: ff.SafeTensors(original(f"{fam}/model/{c}")) for c in components}
        recipe = single_file_recipe(single, originals)
        for name, step in recipe["tensors"].items():
            if any(key == TOKEN_TABLE for _, key in step["from"]):
                rel_c, key = step["from"][0]
                assert step["op"] == "copy"
                step["sha256"] = ff.sha256(components[rel_c].tensor(key))
        built = ff.build_single_file(recipe, components.__getitem__)
        stored = f"{fam}/single_file.recipe.json.xz"
        text = json.dumps(recipe, indent=0, sort_keys=True).encode()
        write(stored, ff.lzma.compress(text, preset=9 | ff.lzma.PRESET_EXTREME))
        entries[rel] = {"sha256": ff.sha256(built), "from": stored,
                        "original_sha256": ff.sha256(single.header_bytes + single.data)}
        if entries[rel]["sha256"] == entries[rel]["original_sha256"]:
            del entries[rel]["original_sha256"]

    write("files.tar.xz", ff.lzma.compress(verbatim.getvalue(), preset=9 | ff.lzma.PRESET_EXTREME))
    manifest["files"] = dict(sorted(entries.items()))
    write("manifest.json", (compact_json(manifest) + "\n").encode())
    print(f"{len(entries)} files ({len(dropped)} of the set not stored), {len(kept_ids)} of 49408 token rows kept")


if __name__ == "__main__":
    main()
