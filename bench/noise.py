"""Per-image sampling noise: every random draw of generated image i is a function of (seed, i) alone.

Source: EDM's `generate.py` (Karras et al. 2022), whose `StackedRandomGenerator` keeps one
`torch.Generator` per image, seeded by that image's seed, and draws a batch as the stack of each
image's own draw. Here image i of a sampling stream with seed s has the generator seeded
`image_seed(s, i)` (a 63-bit hash of (s, i, stream)), so a sample does not depend on which batch,
rank or device drew it, nor on the batch size: the FID set of N images is the same N images whether
it is drawn in batches of 16 or 256, by one process or sharded over the ranks of a torchrun job.

`stream` separates draws that must not repeat each other: the fixed grid's x_T (`GRID`, drawn on the
CPU so every device gets the same x_T) and the sampler's own draws (`SAMPLE`: x_T when not given,
then every ancestral / η > 0 DDIM noise), on the sampling device.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

SAMPLE, GRID = "sample", "grid"


def image_seed(seed: int, index: int, stream: str = SAMPLE) -> int:
    """The seed of image `index` of the sampling stream `seed` (a 63-bit hash; any int is valid)."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(index)}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ImageNoise:
    """One generator per image (EDM's StackedRandomGenerator): `randn(shape)` draws row k of the batch
    from image indices[k]'s own generator, so a row's values do not depend on its neighbours."""

    def __init__(self, seed: int, indices: Iterable[int], device="cpu", stream: str = SAMPLE):
        self.indices = [int(i) for i in indices]
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(image_seed(seed, i, stream))
                           for i in self.indices]

    def randn(self, shape, device=None) -> torch.Tensor:
        """float32 [len(indices), *shape[1:]]: each image's next standard normal draw."""
        if shape[0] != len(self.generators):
            raise ValueError(f"ImageNoise: batch of {shape[0]} for {len(self.generators)} images")
        rows = [torch.randn(tuple(shape[1:]), generator=g, device=self.device)
                for g in self.generators]
        return torch.stack(rows).to(device or self.device)

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]


def randn(shape, generator, device) -> torch.Tensor:
    """A standard normal batch from `generator`: an ImageNoise (per image), a torch.Generator or None."""
    if isinstance(generator, ImageNoise):
        return generator.randn(shape, device)
    return torch.randn(tuple(shape), generator=generator, device=device)


def grid_noise(n: int, shape: tuple[int, ...], seed: int, device="cpu", start: int = 0) -> torch.Tensor:
    """x_T of images [start, start + n) of the fixed grid, drawn on the CPU (same on every device)."""
    return ImageNoise(seed, range(start, start + n), "cpu", GRID).randn((n, *shape), device)
