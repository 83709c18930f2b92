"""Procedural dataset of the Diffuse demo model: simple shape scenes with captions.

Every image shows one or two shapes (circle, square, triangle, star) in one of
eight named colours, at a named position (left, right, top, bottom, centre) and
size (small, large), on a plain background of another named colour. Each image
comes with an English caption whose wording varies ("a small red circle on the
left, on a blue background", "a blue background with a red circle on the
left", ...). Everything is a pure function of a seed.

30 single-shape attribute tuples are held out: no training image shows that
(background, colour, shape, position, size) combination under any wording, and
`eval_cases()` captions them for the prompt-adherence check.
"""

import math
import random

# Named colours, sRGB 0-255. The C++ scorer reads them from eval_captions.json.
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star"]
POSITIONS = ["left", "right", "top", "bottom", "centre"]
SIZES = ["small", "large"]

# Shape centre as a fraction of the image side (x, y; y grows downwards).
CENTRES = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "centre": (0.5, 0.5),
}
RADII = {"small": 0.11, "large": 0.2}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

POSITION_PHRASES = {
    "left": ["on the left", "at the left", "on the left side"],
    "right": ["on the right", "at the right", "on the right side"],
    "top": ["at the top", "on the top", "near the top"],
    "bottom": ["at the bottom", "on the bottom", "near the bottom"],
    "centre": ["in the centre", "in the center", "in the middle"],
}

HELD_OUT_SEED = 4242
NUM_HELD_OUT = 30


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def shape_phrase(rng, colour, shape, size, with_size):
    words = ([size] if with_size else []) + [colour, shape]
    return f"{_article(words[0])} {' '.join(words)}"


def caption(rng, bg, shapes, always_position=False):
    """shapes: list of (colour, shape, position, size). Returns one wording.

    Sizes are named in 3 of 4 captions; a single shape's position in 4 of 5
    (so "a red circle on a blue background" is a caption the model knows).
    """
    with_size = rng.random() < 0.75
    with_position = always_position or len(shapes) > 1 or rng.random() < 0.8
    parts = [shape_phrase(rng, c, s, z, with_size)
             + (f" {rng.choice(POSITION_PHRASES[p])}" if with_position else "")
             for (c, s, p, z) in shapes]
    objects = " and ".join(parts)
    template = rng.randrange(4)
    if template == 0:
        return f"{objects}, on {_article(bg)} {bg} background"
    if template == 1:
        return f"{objects} on {_article(bg)} {bg} background"
    if template == 2:
        return f"{_article(bg)} {bg} background with {objects}"
    return f"{objects}, {bg} background"


def vocabulary_words():
    """Every word the grammar can produce (for the BPE vocabulary)."""
    words = set(COLOURS) | set(SHAPES) | set(SIZES) | {"a", "an", "and", "with", "background"}
    for phrases in POSITION_PHRASES.values():
        for phrase in phrases:
            words.update(phrase.split())
    return sorted(words)


def held_out_tuples():
    rng = random.Random(HELD_OUT_SEED)
    chosen = set()
    while len(chosen) < NUM_HELD_OUT:
        bg = rng.choice(COLOURS)
        colour = rng.choice([c for c in COLOURS if c != bg])
        chosen.add((bg, colour, rng.choice(SHAPES), rng.choice(POSITIONS), rng.choice(SIZES)))
    return sorted(chosen)


def eval_cases():
    """The held-out prompts: one caption per held-out tuple, single shapes."""
    rng = random.Random(HELD_OUT_SEED + 1)
    cases = []
    for (bg, colour, shape, position, size) in held_out_tuples():
        cases.append({
            "caption": caption(rng, bg, [(colour, shape, position, size)], always_position=True),
            "background": bg, "colour": colour, "shape": shape,
            "position": position, "size": size,
        })
    return cases


class SceneSampler:
    """Draws random scenes (attributes + caption); deterministic from a seed."""

    def __init__(self, seed, two_shape_fraction=0.3):
        self.rng = random.Random(seed)
        self.two_shape_fraction = two_shape_fraction
        self.held_out = set(held_out_tuples())

    def _shape(self, bg, position, exclude_colour=None):
        colour = self.rng.choice([c for c in COLOURS if c != bg and c != exclude_colour])
        return (colour, self.rng.choice(SHAPES), position, self.rng.choice(SIZES))

    def sample(self):
        while True:
            bg = self.rng.choice(COLOURS)
            if self.rng.random() < self.two_shape_fraction:
                first = self.rng.choice(list(OPPOSITE))
                a = self._shape(bg, first)
                shapes = [a, self._shape(bg, OPPOSITE[first], exclude_colour=a[0])]
            else:
                shapes = [self._shape(bg, self.rng.choice(POSITIONS))]
            if any((bg,) + s in self.held_out for s in shapes):
                continue
            return bg, shapes, caption(self.rng, bg, shapes)

    def batch(self, n):
        return [self.sample() for _ in range(n)]


def _shape_masks(kind, dx, dy, r):
    """Inside-masks (float) of one shape kind; dx, dy, r broadcast (B,H,W)."""
    import torch
    if kind == "circle":
        return (dx * dx + dy * dy <= r * r).float()
    if kind == "square":
        s = r * 0.85
        return ((dx.abs() <= s) & (dy.abs() <= s)).float()
    if kind == "triangle":
        # Equilateral, pointing up, circumradius 1.2 r, centroid at the centre.
        R = r * 1.2
        inside = torch.ones_like(dx, dtype=torch.bool)
        for k in range(3):
            ang = -math.pi / 2 + k * 2 * math.pi / 3
            # Edge opposite vertex k has outward normal -(cos, sin) at distance R/2.
            nx, ny = -math.cos(ang), -math.sin(ang)
            inside &= (dx * nx + dy * ny) <= R / 2
        return inside.float()
    if kind == "star":
        outer, inner = r * 1.25, r * 0.5
        theta = torch.atan2(dy, dx) + math.pi / 2          # 0 at the top point
        sector = 2 * math.pi / 5
        # Angle from the nearest outer point, 0 .. sector/2 (inner vertex).
        a = sector / 2 - (torch.remainder(theta, sector) - sector / 2).abs()
        rho = torch.sqrt(dx * dx + dy * dy)
        px, py = rho * torch.cos(a), rho * torch.sin(a)
        ax, ay = outer, torch.zeros_like(outer)
        bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
        # Inside = the origin's side of the edge from outer to inner vertex.
        cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
        return (cross >= 0).float()
    raise ValueError(kind)


def render(scenes, size=128, device="cpu", seed=0, supersample=2):
    """Scenes -> float images (B,3,size,size) in [-1, 1].

    Vectorised over the batch: one pass per shape slot (a scene has at most
    two shapes, at opposite positions, so they never overlap). Position, size,
    rotation and colour jitter come from a generator seeded with `seed`.
    """
    import torch
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = len(scenes)
    hi = size * supersample
    coords = (torch.arange(hi, device=device, dtype=torch.float32) + 0.5) / hi
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    rgb = torch.tensor([PALETTE[c] for c in COLOURS], dtype=torch.float32) / 255

    bg = torch.tensor([COLOURS.index(s[0]) for s in scenes])
    bg_rgb = (rgb[bg] + (torch.rand(n, 3, generator=g) - 0.5) * 0.06).clamp(0, 1)
    img = bg_rgb.to(device)[:, :, None, None].expand(n, 3, hi, hi).clone()
    for slot in range(2):
        rows = [i for i, s in enumerate(scenes) if len(s[1]) > slot]
        if not rows:
            continue
        m = len(rows)
        j = torch.rand(m, 7, generator=g)
        items = [scenes[i][1][slot] for i in rows]
        cx = torch.tensor([CENTRES[it[2]][0] for it in items]) + (j[:, 0] - 0.5) * 0.08
        cy = torch.tensor([CENTRES[it[2]][1] for it in items]) + (j[:, 1] - 0.5) * 0.08
        r = torch.tensor([RADII[it[3]] for it in items]) * (0.9 + 0.2 * j[:, 2])
        ang = (j[:, 3] - 0.5) * 0.3
        colour = (rgb[torch.tensor([COLOURS.index(it[0]) for it in items])] + (j[:, 4:7] - 0.5) * 0.06).clamp(0, 1)
        cx, cy, r, ang = (t.to(device)[:, None, None] for t in (cx, cy, r, ang))
        dx, dy = xx[None] - cx, yy[None] - cy
        rx = dx * torch.cos(ang) + dy * torch.sin(ang)
        ry = -dx * torch.sin(ang) + dy * torch.cos(ang)
        rr = r.expand_as(rx)
        mask = torch.zeros(m, hi, hi, device=device)
        for kind in SHAPES:
            sel = torch.tensor([it[1] == kind for it in items], device=device)
            if sel.any():
                mask[sel] = _shape_masks(kind, rx[sel], ry[sel], rr[sel])
        idx = torch.tensor(rows, device=device)
        c = colour.to(device)[:, :, None, None]
        img[idx] = img[idx] * (1 - mask[:, None]) + c * mask[:, None]
    img = torch.nn.functional.avg_pool2d(img, supersample)
    return img * 2 - 1
