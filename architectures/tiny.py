"""`unet_tiny`: the DDPM U-Net class (`unet_ddpm.UNet`, Ho et al. 2020) at a test-sized width.

Base 16 channels, multipliers (1, 2), one ResBlock per level, attention at the lowest resolution
(image_size // 2) and in the middle, GroupNorm with 8 groups (32 groups do not fit 16 channels),
no dropout. For smoke suites and unit tests: a CPU forward+backward at batch 8, 16x16 takes
milliseconds.
"""
from __future__ import annotations

from . import register
from .layers import short_side
from .unet_ddpm import UNet


@register(width="base_channels")
def unet_tiny(image_size: int = 16, **kwargs) -> UNet:
    """DDPM U-Net at base width 16, mult (1, 2), 1 ResBlock per level (tests and smoke runs)."""
    kwargs.setdefault("base_channels", 16)
    kwargs.setdefault("channel_mult", (1, 2))
    kwargs.setdefault("num_res_blocks", 1)
    kwargs.setdefault("attention_resolutions", (short_side(image_size) // 2,))
    kwargs.setdefault("dropout", 0.0)
    kwargs.setdefault("norm_groups", 8)
    return UNet(image_size=image_size, **kwargs)
