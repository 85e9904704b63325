"""Procedural coloured shapes: the `synthetic` dataset of `suites/smoke.yaml`.

Each image is a coloured background with one to three (`max_count`) anti-aliased shapes (circle, square, equilateral
triangle) of random colour, size, position and rotation, drawn in pure torch from signed distances
(the 2-D SDFs of Inigo Quilez's "2D distance functions", in the Chebyshev/half-plane form for the
polygons). Every parameter is drawn up front from a seeded `torch.Generator`, so the images depend on
the seed and the image index only, never on the rendering chunk size or the machine. `data.shapes`
(`ShapesConfig`) changes only what the same draws become: `max_count` and the radius range bound
them, `rotate: false` stands every shape upright and `palette: contrast` maps the background into
[0, 0.4] and the shapes into [0.6, 1] per channel, so no shape melts into its background (the
smoke suite's easy-to-learn setting).

Train and held-out images come from two disjoint generator streams (2·seed and 2·seed+1), so the
held-out set is "a further seeded set" that never repeats a training image of any seed.
"""
from __future__ import annotations

import math

import torch

from bench.images import hw

SHAPES = ("circle", "square", "triangle")
MAX_SHAPES = 3
_CHUNK = 512                                # images rendered at once (bounds memory, not results)
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L")


def draw_shapes(n: int, size, seed: int, channels: int = 3, shapes=None) -> torch.Tensor:
    """`n` images of `size` (S or (H, W)) as uint8 [n, channels, H, W], a pure function of
    (n, size, seed, shapes). Non-square: the shapes are drawn in the centred min(H, W) square.
    `shapes`: a `ShapesConfig` (count, radius bounds, rotation, palette); None = its defaults."""
    g = torch.Generator().manual_seed(seed)
    if shapes is None:
        params = _draw_params(n, g)
    else:
        params = _restyle(_draw_params(n, g, shapes.max_count, shapes.min_radius, shapes.max_radius),
                          shapes.rotate, shapes.palette)
    out = torch.empty(n, channels, *hw(size), dtype=torch.uint8)
    for lo in range(0, n, _CHUNK):
        chunk = {k: v[lo:lo + _CHUNK] for k, v in params.items()}
        rgb = _render(chunk, size)                                        # float [b,3,S,S] in [0,1]
        if channels == 1:
            rgb = torch.einsum("bchw,c->bhw", rgb, _LUMA).unsqueeze(1)
        out[lo:lo + _CHUNK] = (rgb * 255).round().clamp(0, 255).to(torch.uint8)
    return out


def _draw_params(n: int, g: torch.Generator, max_count: int = 3, r_lo: float = 0.12,
                 r_hi: float = 0.3) -> dict[str, torch.Tensor]:
    """All random choices for `n` images; shape slots beyond an image's count are switched off."""
    k = MAX_SHAPES

    def u(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    return {
        "background": u(n, 3),                                   # RGB in [0, 1]
        "count": torch.randint(1, max_count + 1, (n,), generator=g),  # shapes per image
        "kind": torch.randint(0, len(SHAPES), (n, k), generator=g),
        "colour": u(n, k, 3),
        "centre": u(n, k, 2, lo=0.2, hi=0.8),                    # (x, y) in image units
        "radius": u(n, k, lo=r_lo, hi=r_hi),                     # circumradius, image units
        "angle": u(n, k, lo=0.0, hi=2 * math.pi),
    }


def _restyle(p: dict[str, torch.Tensor], rotate: bool, palette: str) -> dict[str, torch.Tensor]:
    """The same draws, upright (angle π: a triangle's apex up) and/or in the contrast palette
    (background channels into [0, 0.4], shape channels into [0.6, 1]: light shapes on dark)."""
    if not rotate:
        p["angle"] = torch.full_like(p["angle"], math.pi)
    if palette == "contrast":
        p["background"], p["colour"] = 0.4 * p["background"], 0.6 + 0.4 * p["colour"]
    return p


def _render(p: dict[str, torch.Tensor], size) -> torch.Tensor:
    """Composite the shape slots over the background, back to front, with a one-pixel soft edge."""
    b, (h, w) = p["background"].shape[0], hw(size)
    size = min(h, w)                                                      # image units: the square
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 - (h - size) / 2) / size
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 - (w - size) / 2) / size
    y, x = torch.meshgrid(ys, xs, indexing="ij")                          # [H, W]
    img = p["background"][:, :, None, None].expand(b, 3, h, w).clone()
    for s in range(MAX_SHAPES):
        dx = x - p["centre"][:, s, 0, None, None]                         # [b, S, S]
        dy = y - p["centre"][:, s, 1, None, None]
        cos, sin = p["angle"][:, s].cos()[:, None, None], p["angle"][:, s].sin()[:, None, None]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy                  # shape-local coordinates
        dist = _distance(p["kind"][:, s], u, v, p["radius"][:, s, None, None])
        alpha = (0.5 - dist * size).clamp(0, 1)                           # coverage of each pixel
        alpha = alpha * (s < p["count"]).float()[:, None, None]
        img = img * (1 - alpha[:, None]) + p["colour"][:, s, :, None, None] * alpha[:, None]
    return img


def _distance(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) to a circle, square or triangle of circumradius `r`."""
    circle = (u * u + v * v).sqrt() - r
    square = torch.maximum(u.abs(), v.abs()) - r / math.sqrt(2)
    # equilateral triangle: inside all three half-planes at the inradius r/2 (outward normals below)
    normals = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    triangle = torch.stack([nx * u + ny * v for nx, ny in normals]).amax(0) - r / 2
    kind = kind[:, None, None]
    return torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))
