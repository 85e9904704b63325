"""Study 003 (seeds/003_c546c882cb2b2d21.txt, Fruits-360): U-Net adapted from awjuliani/pytorch-diffusion.

Their Sec. 3.1 / Fig. 2: a DoubleConv stem to 32 channels (GroupNorm + GELU), three stages of
[2x2 max-pool, residual DoubleConv, DoubleConv] to 64 / 128 / 128 channels ("7 double convolutions,
... 128 channels"), a self-attention bridge at the bottleneck (pre-LN, 4 heads, GELU MLP), three
stages of [bilinear x2, concatenate skip, residual DoubleConv, DoubleConv] back to 32 channels, and
a 1x1 output conv. At every stage the sinusoidal positional encoding of t at the stage width is
added to the output (no learned time projection, as awjuliani's `pos_encoding`).

Built on `s001.UNet001` (the same dome272/milesial blocks). Resolved points: widths follow
awjuliani's 64/128/256/256 halved (32/64/128/128), which matches "32 ... 128"; attention only at the
bridge (their text), not awjuliani's three SA layers. Their custom output `scaler` was a sampling
bug workaround and is not part of the network.
"""
from __future__ import annotations

from . import register
from .s001 import UNet001


@register(width="base_channels")
def s003_unet(**kw) -> UNet001:
    """003 Fruits U-Net: GN+GELU DoubleConvs 32->128, max-pool, attention bridge, bilinear up."""
    return UNet001(**{"base_channels": 32, "channel_mult": (1, 2, 4, 4), "attention": False,
                      "bottleneck": "attention", "time_proj": False, **kw})
