"""The safetensors format by hand, for the reference scripts here (Debian has
no python3-safetensors): a little-endian u64 header length, the JSON header
(compact, padded with spaces to a multiple of 8 bytes), then the raw data in
the dict's order."""
import json
import struct

import numpy as np

_DTYPES = {np.dtype("float16"): "F16", np.dtype("float32"): "F32"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: name -> torch tensor or numpy array (f16 or f32), written in
    the dict's order; metadata: an optional str -> str dict."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
        a = np.ascontiguousarray(a)
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
