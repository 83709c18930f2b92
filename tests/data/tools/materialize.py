#!/usr/bin/env python3
"""Rebuilds the fixture tree the tests read (what ../shared/fixtures holds for
them) from tests/data, checking every file against the sha256 in
manifest.json. Python standard library only. The build runs it (CMake target
test_data) into <build>/test-data/fixtures:

  python3 tests/data/tools/materialize.py tests/data . build/test-data/fixtures

  --verify-source DIR  also check that DIR (e.g. ../shared/fixtures) holds the
                       files this data was packed from (original_sha256)

The tree is written next to OUT and renamed into place, so a failed run leaves
no half-written tree behind.
"""
import argparse
import hashlib
import json
import lzma
import os
import shutil
import struct
import sys
import tarfile

sys.dont_write_bytecode = True  # no __pycache__ in tests/data (the build globs it)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_format as ff  # noqa: E402


class Failure(Exception):
    pass


def materialize(data, repo, out):
    with open(os.path.join(data, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != 1:
        raise Failure(f"manifest.json: unknown format {manifest.get('format')}")
    entries = manifest["files"]
    kept_ids = ff.ranges_to_ids(manifest["token_rows"]["kept"])
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    def write(rel, blob):
        want = entries[rel]["sha256"]
        if ff.sha256(blob) != want:
            raise Failure(f"sha256 {ff.sha256(blob)} is not the manifest's {want}")
        path = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)

    def read_data(rel):
        with open(os.path.join(data, rel), "rb") as f:
            return f.read()

    with tarfile.open(fileobj=lzma.open(os.path.join(data, "files.tar.xz"))) as tar:
        for member in tar:
            if member.name not in entries or entries[member.name]["from"] != "files.tar.xz" or not member.isfile():
                raise Failure(f"files.tar.xz: {member.name} is not a verbatim file of the manifest")
            try:
                write(member.name, tar.extractfile(member).read())
            except Failure as err:
                raise Failure(f"{member.name} (from files.tar.xz): {err}") from None

    def make(rel, e):
        src = e["from"]
        if src == "files.tar.xz":
            if not os.path.exists(os.path.join(tmp, rel)):
                raise Failure("not in files.tar.xz")
        elif src.startswith("repo:"):
            with open(os.path.join(repo, src[5:]), "rb") as f:
                write(rel, f.read())
        elif src.endswith(".pxz"):
            blob = ff.unpack_pxz(read_data(src))
            if "fill_rows" in e:
                blob = ff.fill_rows(blob, e["fill_rows"], kept_ids)
            st = ff.SafeTensors(blob)
            for name, h in e.get("tensors_sha256", {}).items():  # the tensors of the original file
                if ff.sha256(st.tensor(name)) != h:
                    raise Failure(f"tensor {name} differs from the original")
            write(rel, blob)
        elif src.endswith(".recipe.json.xz"):  # from the folder's files, written before
            folder = os.path.join(tmp, os.path.dirname(rel), "model")
            recipe = json.loads(lzma.decompress(read_data(src)))
            cache = {}

            def component(c):
                if c not in cache:
                    cache[c] = ff.SafeTensors.read(os.path.join(folder, c))
                return cache[c]
            write(rel, ff.build_single_file(recipe, component))
        else:
            raise Failure(f"unknown source {src}")

    recipes_last = sorted(entries, key=lambda rel: entries[rel]["from"].endswith(".recipe.json.xz"))
    for rel in recipes_last:
        try:
            make(rel, entries[rel])
        except (Failure, OSError, ValueError, KeyError, lzma.LZMAError, struct.error) as err:
            raise Failure(f"{rel} (from {entries[rel]['from']}): {err}") from None

    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return len(entries)


def verify_source(data, source):
    with open(os.path.join(data, "manifest.json"), encoding="utf-8") as f:
        entries = json.load(f)["files"]
    derived = 0
    for rel, e in entries.items():
        with open(os.path.join(source, rel), "rb") as f:
            h = hashlib.sha256(f.read()).hexdigest()
        if h != e.get("original_sha256", e["sha256"]):
            raise Failure(f"{source}/{rel} is not the file tests/data was packed from")
        derived += "original_sha256" in e
    print(f"{source}: all {len(entries)} files are the ones packed ({derived} are stored in derived form)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="tests/data")
    ap.add_argument("repo", help="the repository root (for models/tokenizers/clip)")
    ap.add_argument("out", help="the fixture tree to write")
    ap.add_argument("--stamp", help="file to touch when done (the build's output)")
    ap.add_argument("--verify-source", metavar="DIR")
    args = ap.parse_args()
    try:
        if args.verify_source:
            verify_source(args.data, args.verify_source)
        n = materialize(args.data, args.repo, args.out)
    except (Failure, OSError, ValueError, KeyError, lzma.LZMAError, tarfile.TarError) as err:
        shutil.rmtree(f"{args.out}.tmp-{os.getpid()}", ignore_errors=True)
        sys.exit(f"materialize.py: {err}")
    if args.stamp:
        with open(args.stamp, "w") as f:
            f.write(f"{n} fixture files in {args.out}\n")
    print(f"materialize.py: {n} fixture files in {args.out}")


if __name__ == "__main__":
    main()
