"""The one uint8 <-> float image conversion of the harness, at the bottom of the import graph so the
data loaders, the metrics (FID samples, SSIM) and the runner (held-out conditioning images,
validation triples) all use it.

Images are stored as uint8 [0, 255] and computed with as float [-1, 1] (Ho et al. 2020's scaling).
The way back is torchvision `save_image`'s rounding ((x + 1) / 2 * 255 + 0.5, clamped, truncated,
in fp32), so samples quantized in memory are bit-identical to the pixels of a saved PNG (checked in
tests/test_fid.py against a PNG round trip).
"""
from __future__ import annotations

import torch

from bench.errors import BenchError


def hw(size) -> tuple[int, int]:
    """`data.image_size` as (H, W): an int S is S x S (square), [H, W] is itself."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_label(size) -> str:
    """`32` for a square, `108x88` (H x W) otherwise: file names, report groups."""
    h, w = hw(size)
    return f"{h}" if h == w else f"{h}x{w}"


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (x / 127.5 - 1)."""
    return x.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, bit-identical to `save_image((x + 1) / 2)` read back (fp32 math)."""
    return ((x.float() + 1) / 2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def heldout_images(images: torch.Tensor, n: int, offset: int, device) -> torch.Tensor:
    """uint8 `images` [offset, offset + n) in [-1, 1] on `device`; a BenchError when too few."""
    if len(images) < offset + n:
        raise BenchError(f"eval: the task needs {offset + n} held-out images to condition on; the "
                         f"held-out split has {len(images)}")
    return to_float(images[offset:offset + n].to(device))
