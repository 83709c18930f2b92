#!/usr/bin/env python3
"""Writes this folder from the v2 fixture set (../shared/fixtures/v2).

The probe and model-variant tests only read safetensors headers and config
JSONs of the v2 9-channel inpainting models and the SDXL refiner (they stop
before any weight is read). So this keeps, for each of those models, its
JSON files as they are, each .safetensors as <name>.header.json (the header
only), and each relative link to a v1 component as its target text.
All of it, with README.md, goes into one reproducible skeletons.tar.xz
(JSON headers compress ~17x). The build unpacks it (CMake target test_data)
into <build>/test-data/v2-headers, and tests/fixtures_v2.h turns that back into
sparse safetensors files of the right size, with the links pointing at the v1
test data.

Usage: python3 tests/data/v2-headers/make.py /path/to/shared/fixtures/v2
"""
import io
import json
import lzma
import os
import struct
import sys
import tarfile
import tempfile

MODELS = ["sd1_inpaint", "sd2_inpaint", "sdxl_inpaint", "sdxl_refiner"]
EXTRA_FILES = ["sd1_inpaint/single_file.safetensors"]


def header_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def copy_entry(src_root, rel, dst_root):
    src = os.path.join(src_root, rel)
    dst = os.path.join(dst_root, rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if rel.endswith(".safetensors"):
        with open(dst + ".header.json", "w") as f:
            json.dump(header_of(src), f, separators=(",", ":"), sort_keys=True)
    elif os.path.isfile(src) and os.path.getsize(src) < 256 and not rel.endswith(".json"):
        with open(src) as s, open(dst + ".link", "w") as d:  # a relative link stored as its target
            d.write(s.read().strip() + "\n")
    else:
        with open(src, "rb") as s, open(dst, "wb") as d:
            d.write(s.read())


def pack(tree, readme, out):
    """tree's files and README.md as a tar.xz that depends only on their bytes."""
    rels = sorted(os.path.relpath(os.path.join(d, f), tree) for d, _, fs in os.walk(tree) for f in fs)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for rel, path in [("README.md", readme)] + [(r, os.path.join(tree, r)) for r in rels]:
            with open(path, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            t.addfile(info, io.BytesIO(data))
    with open(out, "wb") as f:
        f.write(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def main():
    src_root = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tree:
        for m in MODELS:
            base = os.path.join(src_root, m, "model")
            for dirpath, _, files in os.walk(base):
                for name in files:
                    copy_entry(src_root, os.path.relpath(os.path.join(dirpath, name), src_root), tree)
        for rel in EXTRA_FILES:
            copy_entry(src_root, rel, tree)
        pack(tree, os.path.join(here, "README.md"), os.path.join(here, "skeletons.tar.xz"))


if __name__ == "__main__":
    main()
