"""Study 004 (seeds/004_81e86c5572fe083a.txt, Flowers102 / CelebA 64x64): 5-level U-Net with
optional channel + spatial (CBAM-style) attention whose spatial sigmoid gate is rescaled to [0.5, 1].

Their Sec. 3: five down-levels, each doubling the channels and halving H, W; five mirrored
up-levels with skip connections; a 32-d sinusoidal time embedding mapped to each level's width by
one linear layer. The attention variant (Attention U-Net after their ref. [3]) adds, at every level,
channel attention (global average pooling -> two linear layers -> sigmoid; their text names only
average pooling, so there is no max-pooled descriptor) then spatial attention (channel-wise average
and max maps -> 7x7 conv -> sigmoid, rescaled to 0.5 + 0.5 * sigmoid, their fix for a gate that
"erased almost all pixels"). Written here, not with timm's CbamModule, because both gates differ.

Resolved points (not in the report): each level is conv3x3-GN-SiLU, + Linear(t_emb), conv3x3-GN-SiLU
(GroupNorm(8), DDPM-style placement of the time embedding); max-pool down, transposed conv 2x2 up;
widths base x (1, 2, 4, 8, 16) with a bottleneck at base x 32 (base 32: 32 .. 1024), so the
down-sampling factor is 32 (64x64 -> 2x2 at the bottleneck); attention after every encoder,
bottleneck and decoder block; channel-MLP reduction 16 (CBAM's default), at least 8 hidden units.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register
from .layers import check_size, group_norm, timestep_embedding


# Channel attention (CBAM, Woo et al. 2018, eq. 2, average-pooled descriptor only).
class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8):
        super().__init__()
        hidden = max(channels // reduction, min_hidden)   # >= 8 units, so no single dead ReLU
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(x.mean(dim=(2, 3))))[:, :, None, None]


# Spatial attention (CBAM eq. 3) with 004's gate rescaled from [0, 1] to [0.5, 1].
class SpatialGate(nn.Module):
    def __init__(self, kernel_size: int = 7, floor: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.floor = floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * (self.floor + (1 - self.floor) * torch.sigmoid(self.conv(maps)))


class Level(nn.Module):
    """conv-GN-SiLU, + Linear(t_emb), conv-GN-SiLU, then optional channel + spatial attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, cbam: bool, groups: int = 8):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), group_norm(out_ch, groups), nn.SiLU())
        self.time = nn.Linear(emb_dim, out_ch)
        self.conv2 = nn.Sequential(nn.Conv2d(out_ch, out_ch, 3, padding=1), group_norm(out_ch, groups), nn.SiLU())
        self.attn = nn.Sequential(ChannelGate(out_ch), SpatialGate()) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.conv2(self.conv1(x) + self.time(emb)[:, :, None, None]))


# Study 004 U-Net (Sec. 3, Fig. 2).
class UNet004(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,             # image channels
        out_channels: int = 3,            # predicted channels (eps)
        image_size: int = 64,             # input S or [H, W] (divisible by 2**levels)
        base_channels: int = 32,          # first-level width
        levels: int = 5,                  # down-levels (each doubles the width)
        time_dim: int = 32,               # sinusoid width, mapped per level by a Linear
        cbam: bool = False,               # channel + spatial attention at every level
        norm_groups: int = 8,             # GroupNorm groups
    ):
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(levels + 1)]
        self.downsample_factor = 2 ** levels
        check_size(image_size, self.downsample_factor, "s004")
        self.time_dim = time_dim
        kw = dict(emb_dim=time_dim, cbam=cbam, groups=norm_groups)
        self.enc = nn.ModuleList(Level(a, b, **kw) for a, b in zip([in_channels] + widths[:-2], widths[:-1]))
        self.mid = Level(widths[-2], widths[-1], **kw)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(levels)))
        self.dec = nn.ModuleList(Level(2 * widths[i], widths[i], **kw) for i in reversed(range(levels)))
        self.out = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.time_dim)
        skips, h = [], x
        for level in self.enc:
            h = level(h, emb)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.mid(h, emb)
        for up, level in zip(self.ups, self.dec):
            h = level(torch.cat([up(h), skips.pop()], dim=1), emb)
        return self.out(h)


@register(width="base_channels")
def s004_unet(**kw) -> UNet004:
    """004 plain 5-level U-Net, widths doubling per level, 32-d sinusoid mapped per level."""
    return UNet004(**kw)


@register(width="base_channels")
def s004_cbam(**kw) -> UNet004:
    """004 U-Net with channel + spatial attention at every level, spatial gate in [0.5, 1]."""
    return UNet004(**{"cbam": True, **kw})
