#!/usr/bin/env python3
"""Compares two 8-bit PNGs (RGB/RGBA/L, non-interlaced) pixel by pixel: prints the
mean and max absolute difference in 1/255 units. Python standard library only.

  python3 tools/png_diff.py a.png b.png [--max 8 --mean 1]   (exit 1 when over the bounds)
"""
import argparse
import struct
import sys
import zlib


def read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or interlace:
        raise SystemExit(f"{path}: only 8-bit non-interlaced PNGs")
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = w * channels
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    rgb = []
    for line in rows:
        for x in range(w):
            px = line[x * channels:(x + 1) * channels]
            rgb.extend(px[:3] if channels >= 3 else px[:1] * 3)
    return w, h, rgb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--max", type=float, default=None)
    ap.add_argument("--mean", type=float, default=None)
    args = ap.parse_args()
    wa, ha, a = read_png(args.a)
    wb, hb, b = read_png(args.b)
    if (wa, ha) != (wb, hb):
        print(f"size differs: {wa}x{ha} vs {wb}x{hb}")
        return 1
    d = [abs(x - y) for x, y in zip(a, b)]
    mean, worst = sum(d) / len(d), max(d)
    print(f"mean {mean:.3f}/255 max {worst}/255")
    bad = (args.max is not None and worst > args.max) or (args.mean is not None and mean > args.mean)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
