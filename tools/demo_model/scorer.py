"""Prompt-adherence scorer of the demo model (the rules of `diffuse demo-eval`, in numpy).

For one generated image and the attributes of its caption:
- background: the median colour of a 4-pixel border ring, named by the nearest
  palette colour;
- the shape mask: pixels farther than 60 (RGB distance) from that median;
  under 0.3% of the image means "no shape" (colour, position and shape fail);
- shape colour: the per-channel median of the mask's pixels, nearest palette;
- position: the mask centroid; within 0.12 of the middle on both axes is
  "centre", otherwise the axis with the larger offset decides
  left/right/top/bottom;
- shape: circle if area / (pi * max centroid distance^2) > 0.8, else square if
  > 0.52, else triangle if area / bounding box > 0.42, else star.
"""

import numpy as np

BORDER = 4
FOREGROUND_DISTANCE = 60.0
MIN_FOREGROUND = 0.003


def nearest(palette, rgb):
    names = list(palette)
    d = [np.sum((np.asarray(palette[n], dtype=np.float64) - rgb) ** 2) for n in names]
    return names[int(np.argmin(d))]


def analyse(img, palette):
    """img: (H, W, 3) uint8 -> dict(background, colour, position, shape) (None if no shape)."""
    h, w, _ = img.shape
    px = img.astype(np.float64)
    ring = np.concatenate([px[:BORDER].reshape(-1, 3), px[-BORDER:].reshape(-1, 3),
                           px[BORDER:-BORDER, :BORDER].reshape(-1, 3), px[BORDER:-BORDER, -BORDER:].reshape(-1, 3)])
    bg = np.median(ring, axis=0)
    out = {"background": nearest(palette, bg), "colour": None, "position": None, "shape": None}
    mask = np.sqrt(((px - bg) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    area = int(mask.sum())
    if area < MIN_FOREGROUND * h * w:
        return out
    out["colour"] = nearest(palette, np.median(px[mask], axis=0))
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    dx, dy = cx - 0.5, cy - 0.5
    if abs(dx) < 0.12 and abs(dy) < 0.12:
        out["position"] = "centre"
    elif abs(dx) >= abs(dy):
        out["position"] = "left" if dx < 0 else "right"
    else:
        out["position"] = "top" if dy < 0 else "bottom"
    r2 = ((xs + 0.5 - cx * w) ** 2 + (ys + 0.5 - cy * h) ** 2).max()
    roundness = area / (np.pi * r2) if r2 > 0 else 0.0
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    if roundness > 0.8:
        out["shape"] = "circle"
    elif roundness > 0.52:
        out["shape"] = "square"
    else:
        out["shape"] = "triangle" if area / box > 0.42 else "star"
    return out


def score_all(images, cases, palette=None):
    if palette is None:
        import shapes
        palette = shapes.PALETTE
    keys = ("background", "colour", "position", "shape")
    hits = {k: 0 for k in keys}
    for img, case in zip(images, cases):
        got = analyse(img, palette)
        for k in keys:
            hits[k] += got[k] == case[k]
    return {k: round(100.0 * v / len(cases), 1) for k, v in hits.items()}


def save_grid(images, path, cols=4):
    from PIL import Image
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = img
    Image.fromarray(grid).save(path)
