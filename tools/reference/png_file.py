"""An 8-bit RGB PNG writer for the reference scripts here (standard library
only): the signature, IHDR, one zlib IDAT of filter-0 rows, IEND."""
import struct
import zlib


def write_png(path, w, h, rgb):
    """rgb: w * h * 3 bytes (or ints 0..255), rows top to bottom."""
    rows = b"".join(b"\x00" + bytes(rgb[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)
