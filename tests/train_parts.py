"""Shared test helper: a tiny UNet, a 100-step diffusion, seeded uint8 batches and a noise
generator, all from one seed (used by test_train and test_train_sync)."""
from __future__ import annotations

import torch

from architectures import create
from bench.data import DeviceBatches
from bench.diffusion import Diffusion

BATCH_SIZE = 8


def parts(seed: int = 0, n_images: int = 40):
    """A tiny model, diffusion, batches and noise generator, all from `seed`."""
    torch.manual_seed(seed)
    model = create("unet_tiny", in_channels=3, out_channels=3, image_size=8, base_channels=8)
    images = torch.randint(0, 256, (n_images, 3, 8, 8), generator=torch.Generator().manual_seed(9),
                           dtype=torch.uint8)
    batches = DeviceBatches(images, BATCH_SIZE, torch.Generator().manual_seed(seed))
    return model, Diffusion(timesteps=100), batches, torch.Generator().manual_seed(seed + 1)
