"""Shared pytest fixtures of the Python module's tests (run by ctest as
python_pytest, label "python", with PYTHONPATH=<build>/python,
DIFFUSE_BINARY=<build>/diffuse and DIFFUSE_FIXTURES_DIR set).

By hand:  PYTHONPATH=build/python DIFFUSE_BINARY=build/diffuse \\
          DIFFUSE_FIXTURES_DIR=build/test-data/fixtures /usr/bin/python3 -m pytest python/tests
"""
import json
import os
import struct

import numpy as np
import pytest

import diffuse

# The demo model's prompt style (models/demo/README.md): shapes, colours, places.
PROMPT = "a red circle on the left, on a blue background"


def required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"${name} is not set (ctest sets it; see python/tests/conftest.py)")
    return value


@pytest.fixture(scope="session")
def pipe():
    """The built-in demo model on the CPU, shared by the tests."""
    return diffuse.Pipeline.from_pretrained(device="cpu")


@pytest.fixture(scope="session")
def diffuse_binary():
    path = required_env("DIFFUSE_BINARY")
    if not os.access(path, os.X_OK):
        pytest.fail(f"DIFFUSE_BINARY={path} is not an executable (build the diffuse target)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir():
    path = os.environ.get("DIFFUSE_FIXTURES") or required_env("DIFFUSE_FIXTURES_DIR")
    if not os.path.exists(os.path.join(path, "sd1", "cases.json")):
        pytest.fail(f"the golden fixtures are missing from {path} (build the test_data target)")
    return path


def read_safetensors(path, names):
    """The named tensors present (a missing name is left out) of a .safetensors file as float32 numpy arrays
    (F32, F16 and BF16 storage), read with the format's own rules: a
    little-endian u64 header length, the JSON header, then the data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name in names:
            if name not in header:
                continue
            meta = header[name]
            start, end = meta["data_offsets"]
            f.seek(base + start)
            raw = f.read(end - start)
            if meta["dtype"] == "F32":
                a = np.frombuffer(raw, dtype="<f4")
            elif meta["dtype"] == "F16":
                a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
            elif meta["dtype"] == "BF16":
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise ValueError(f"{name}: dtype {meta['dtype']} not handled")
            out[name] = a.reshape(meta["shape"]).copy()
        return out
