#!/usr/bin/python3
"""Goldens for the ControlNet preprocessors (src/image/control_preprocess.cpp).

Runs, with Python's OpenCV (Debian python3-opencv) and numpy, the steps that
sd-webui-controlnet's preprocessors take (scripts/preprocessor/legacy/processor.py,
model_free_preprocessors.py, annotator/shuffle): resize_image_with_pad, Canny,
invert, tile_resample, blur_gaussian and the content shuffle seeded through
numpy's legacy np.random.seed, written here from that description (the
extension itself needs A1111 to import). The test feeds the same input PNG to
the C++ port and compares byte for byte.

    /usr/bin/python3 tools/reference/control_preprocess_goldens.py --out tests/image/data/control_preprocess

Writes input.png (a 100x75 synthetic picture: gradient, disc, bar, thin line,
noise), one PNG per case, and cases.json (case -> module, parameters, file;
plus pixel-perfect resolutions). invert (255 - v) and tile_resample below
a rate of 1.1 (the input) are checked in the test without a file. Images are RGB PNGs (cv2 writes BGR: the
channels are swapped on the way out).
"""
import argparse
import json
import os

import cv2
import numpy as np


def pad64(x):
    return int(np.ceil(float(x) / 64.0) * 64 - x)


def resize_image_with_pad(img, resolution):
    h_raw, w_raw, _ = img.shape
    k = float(resolution) / float(min(h_raw, w_raw))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    h_t = int(np.round(float(h_raw) * k))
    w_t = int(np.round(float(w_raw) * k))
    img = cv2.resize(img, (w_t, h_t), interpolation=interpolation)
    padded = np.pad(img, [[0, pad64(h_t)], [0, pad64(w_t)], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (lambda x: np.ascontiguousarray(x[:h_t, :w_t].copy()))


def canny(img, res, low, high):
    padded, remove_pad = resize_image_with_pad(img, res)
    edges = cv2.Canny(padded, int(low), int(high))
    return cv2.cvtColor(remove_pad(edges), cv2.COLOR_GRAY2RGB)


def invert(img):
    return 255 - img


def tile_resample(img, rate):
    if rate < 1.1:
        return img
    h, w, _ = img.shape
    return cv2.resize(img, (int(float(w) / float(rate)), int(float(h) / float(rate))), interpolation=cv2.INTER_AREA)


def blur_gaussian(img, res, sigma):
    padded, remove_pad = resize_image_with_pad(img, res)
    return cv2.GaussianBlur(remove_pad(padded), (0, 0), float(sigma))


def make_noise_disk(h, w, f):
    noise = np.random.uniform(low=0, high=1, size=((h // f) + 2, (w // f) + 2, 1))
    noise = cv2.resize(noise, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)
    noise = noise[f:f + h, f:f + w]
    noise -= np.min(noise)
    noise /= np.max(noise)
    return noise[:, :, None]


def shuffle(img, res, seed):
    padded, remove_pad = resize_image_with_pad(img, res)
    img = remove_pad(padded)
    np.random.seed(seed)
    h, w, _ = img.shape
    x = make_noise_disk(h, w, 256) * float(w - 1)
    y = make_noise_disk(h, w, 256) * float(h - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(img, flow, None, cv2.INTER_LINEAR)


def pixel_perfect(raw_w, raw_h, target_w, target_h, fill):
    k0 = float(target_h) / float(raw_h)
    k1 = float(target_w) / float(raw_w)
    est = (min(k0, k1) if fill else max(k0, k1)) * float(min(raw_h, raw_w))
    return int(np.round(est))


def synthetic_input():
    h, w = 75, 100
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (xx * 255 // (w - 1)).astype(np.uint8)
    img[..., 1] = (yy * 255 // (h - 1)).astype(np.uint8)
    img[..., 2] = 128
    disc = (xx - 38) ** 2 + (yy - 33) ** 2 <= 17 ** 2
    img[disc] = (240, 40, 40)
    img[8:52, 66:84] = (20, 200, 90)
    for t in range(0, 90):  # a thin dark diagonal line
        x, y = 5 + t, 70 - (t * 60) // 90
        img[y, x] = (10, 10, 10)
    rng = np.random.RandomState(7)
    img = np.clip(img.astype(np.int32) + rng.randint(-6, 7, size=img.shape), 0, 255).astype(np.uint8)
    return img


def write_rgb(path, rgb):
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    img = synthetic_input()
    write_rgb(os.path.join(args.out, "input.png"), img)
    cases = {
        "canny_up": ("canny", dict(processor_res=128, threshold_a=100, threshold_b=200), canny(img, 128, 100, 200)),
        "canny_down": ("canny", dict(processor_res=64, threshold_a=50, threshold_b=150), canny(img, 64, 50, 150)),
        "canny_same": ("canny", dict(processor_res=75, threshold_a=20, threshold_b=60), canny(img, 75, 20, 60)),
        "tile_resample": ("tile_resample", dict(threshold_a=2.5), tile_resample(img, 2.5)),
        "blur_gaussian": ("blur_gaussian", dict(processor_res=64, threshold_a=3.0), blur_gaussian(img, 64, 3.0)),
        "shuffle": ("shuffle", dict(processor_res=80, seed=1234), shuffle(img, 80, 1234)),
        "shuffle_other_seed": ("shuffle", dict(processor_res=64, seed=4000000000), shuffle(img, 64, 4000000000)),
    }
    meta = {"opencv": cv2.__version__, "numpy": np.__version__, "cases": {}, "pixel_perfect": []}
    for name, (module, params, out) in cases.items():
        write_rgb(os.path.join(args.out, name + ".png"), out)
        meta["cases"][name] = {"module": module, "params": params, "file": name + ".png",
                               "width": int(out.shape[1]), "height": int(out.shape[0])}
    for raw_w, raw_h, tw, th in [(100, 75, 512, 512), (640, 480, 512, 768), (480, 640, 1024, 1024),
                                 (333, 500, 768, 512), (512, 512, 512, 512), (1000, 250, 640, 384)]:
        for fill in (False, True):
            meta["pixel_perfect"].append({"raw": [raw_w, raw_h], "target": [tw, th], "fill": fill,
                                          "resolution": pixel_perfect(raw_w, raw_h, tw, th, fill)})
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
