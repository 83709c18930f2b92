"""The storage formats of tests/data, shared by pack.py (which writes them) and
materialize.py (which turns them back into the fixture tree). Python standard
library only.

- .pxz: a safetensors file, xz-compressed after its data section was split
  into byte planes (byte 0 of every element, then byte 1, ...). The header
  (8-byte length + JSON) is stored as is, so unpacking gives the original
  file byte for byte. Splitting puts the sign/exponent bytes of floats side by
  side, where xz finds their redundancy; the low mantissa bytes are noise.
- token-embedding filler: rows of a text encoder's token table that no test
  reads are not stored; fill_rows() writes deterministic pseudo-random fp16
  values there (see fill_value).
- single-file recipe: how each tensor of an LDM/SGM single file is made from
  the diffusers folder's tensors (copy, transpose2d, concat0), with the
  sha256 of its bytes.
"""
import hashlib
import json
import lzma
import math
import struct

DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class SafeTensors:
    """A parsed safetensors file: raw header bytes, the header, the data section."""

    def __init__(self, blob):
        (n,) = struct.unpack_from("<Q", blob, 0)
        self.header_bytes = bytes(blob[:8 + n])
        self.header = json.loads(blob[8:8 + n])
        self.data = blob[8 + n:]

    @classmethod
    def read(cls, path):
        with open(path, "rb") as f:
            return cls(f.read())

    def names(self):
        return [k for k in self.header if k != "__metadata__"]

    def tensor(self, name):
        a, b = self.header[name]["data_offsets"]
        return bytes(self.data[a:b])

    def layout(self):
        """(name, begin, end, element size) in data order; the ranges must tile the data section."""
        out = sorted(((k, e["data_offsets"][0], e["data_offsets"][1], DTYPE_SIZE[e["dtype"]])
                      for k, e in self.header.items() if k != "__metadata__"), key=lambda t: t[1])
        pos = 0
        for name, a, b, esz in out:
            if a != pos or (b - a) % esz:
                raise ValueError(f"safetensors layout: {name} at [{a}, {b}) does not follow byte {pos}")
            pos = b
        if pos != len(self.data):
            raise ValueError(f"safetensors layout: tensors end at {pos}, data is {len(self.data)} bytes")
        return out


def write_safetensors(tensors, metadata=None):
    """Bytes of a safetensors file: tensors = {name: (dtype, shape, bytes)}, in name order."""
    header, chunks, off = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    return struct.pack("<Q", len(hb)) + hb + b"".join(chunks)


def _plane_order(st):
    """Tensors grouped by element size, then in data order: the order planes are written in."""
    lay = st.layout()
    return [(esz, [t for t in lay if t[3] == esz]) for esz in sorted({t[3] for t in lay})]


def pack_pxz(blob):
    st = SafeTensors(blob)
    parts = [st.header_bytes]
    for esz, group in _plane_order(st):
        for p in range(esz):
            parts.extend(st.data[a + p:b:esz] for _, a, b, _ in group)
    return lzma.compress(b"".join(parts), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=XZ_FILTERS)


def unpack_pxz(packed):
    raw = lzma.decompress(packed)
    (n,) = struct.unpack_from("<Q", raw, 0)
    out = bytearray(len(raw))
    out[:8 + n] = raw[:8 + n]
    st = SafeTensors(out)  # the header, over a data section of the right size
    data = memoryview(out)[8 + n:]
    pos = 8 + n
    for esz, group in _plane_order(st):
        for p in range(esz):
            for _, a, b, _ in group:
                k = (b - a) // esz
                data[a + p:b:esz] = raw[pos:pos + k]
                pos += k
    if pos != len(raw):
        raise ValueError("pxz: planes do not add up to the data section")
    return bytes(out)


# --- token-embedding filler -------------------------------------------------

def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def fill_value(row, col, width, std):
    """Uniform on [-sqrt(3), sqrt(3)) * std (variance std^2) from splitmix64(row * width + col)."""
    u = (splitmix64(row * width + col) >> 11) * (1.0 / (1 << 53))
    return (2.0 * u - 1.0) * math.sqrt(3.0) * std


def ranges_to_ids(ranges):
    return [i for a, b in ranges for i in range(a, b + 1)]


def ids_to_ranges(ids):
    out = []
    for i in sorted(set(ids)):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def fill_rows(blob, tensor, kept_ids):
    """The safetensors `blob` with every row of the F16 2-D `tensor` not in kept_ids replaced by
    filler scaled to the standard deviation of the kept rows."""
    st = SafeTensors(blob)
    e = st.header[tensor]
    if e["dtype"] != "F16" or len(e["shape"]) != 2:
        raise ValueError(f"{tensor}: filler needs a 2-D F16 table, not {e['dtype']} {e['shape']}")
    rows, width = e["shape"]
    a, _ = e["data_offsets"]
    kept = set(kept_ids)
    if not kept or max(kept) >= rows:
        raise ValueError(f"{tensor}: kept ids out of range for {rows} rows")
    out = bytearray(blob)
    base = len(st.header_bytes) + a
    stride = 2 * width
    vals = []
    for r in sorted(kept):
        vals.extend(struct.unpack_from(f"<{width}e", out, base + r * stride))
    mean = math.fsum(vals) / len(vals)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / len(vals))
    row_fmt = struct.Struct(f"<{width}e")
    for r in range(rows):
        if r not in kept:
            row_fmt.pack_into(out, base + r * stride, *(fill_value(r, c, width, std) for c in range(width)))
    return bytes(out)


# --- single-file recipes ----------------------------------------------------

def transpose2d(raw, shape, esz):
    rows, cols = shape
    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[esz]
    src = memoryview(raw).cast(fmt)
    return b"".join(src[j::cols].tobytes() for j in range(cols)) if rows else b""


def build_single_file(recipe, component):
    """Bytes of the single file that `recipe` describes. component(rel) returns the SafeTensors of a
    file of the diffusers folder (e.g. "unet/diffusion_pytorch_model.safetensors"). Every tensor is
    checked against the recipe's sha256."""
    header_bytes = recipe["header"].encode()
    header = json.loads(header_bytes)
    prefix = struct.pack("<Q", len(header_bytes)) + header_bytes
    size = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0)
    data = bytearray(size)
    for name, step in recipe["tensors"].items():
        e = header[name]
        parts = [(component(rel), key) for rel, key in step["from"]]
        if step["op"] in ("copy", "concat0"):
            raw = b"".join(st.tensor(key) for st, key in parts)
        elif step["op"] == "transpose2d":
            st, key = parts[0]
            raw = transpose2d(st.tensor(key), st.header[key]["shape"], DTYPE_SIZE[st.header[key]["dtype"]])
        else:
            raise ValueError(f"{name}: unknown op {step['op']}")
        a, b = e["data_offsets"]
        if len(raw) != b - a:
            raise ValueError(f"{name}: made {len(raw)} bytes, the header says {b - a}")
        if sha256(raw) != step["sha256"]:
            raise ValueError(f"{name}: sha256 mismatch (from {step['from']})")
        data[a:b] = raw
    missing = [k for k in header if k != "__metadata__" and k not in recipe["tensors"]]
    if missing:
        raise ValueError(f"recipe has no step for {missing[0]} (and {len(missing) - 1} more)")
    return prefix + bytes(data)
