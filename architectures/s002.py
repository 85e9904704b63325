"""Study 002 (seeds/002_ba69bd02600bb514.txt, CelebA: generate the bottom half from the top half).

Four levels 64/128/256/512, each with two ResNet blocks (conv-BN-LeakyReLU-conv-BN, residual
added before the final LeakyReLU, 1x1-projected when widths differ; He et al. 2016); stride-2 conv
down-sampling; three residual+attention (RAA) blocks at the bottleneck only (Song et al. 2024,
ICDIP); the time embedding is a 512-d vector added to the bottleneck only. Conditioning is channel
concatenation: the input is [x_t, cond] with `cond_channels` extra channels (the clean top half),
the output has `out_channels`.

Resolved points (the report gives no decoder or attention details):
- Self-attention is the SAGAN block of the code they cite (YigitEkin/Attention-UNet-Pytorch):
  1x1 query/key to C/8, value C, unscaled softmax, output gamma * attn + x with gamma = 0 at init.
- Decoder: transposed conv 2x2/2 halving the width (milesial Pytorch-UNet, which that code
  follows), concatenation with the encoder skip, two ResNet blocks; 1x1 output conv.
- Levels: 64 at full resolution, three stride-2 convs to 128/256/512 (Ronneberger layout), so
  the bottleneck runs at 1/8 resolution. This gives 32.1 M parameters against the report's 37 M
  (-13 %); the report does not describe its decoder, where the difference most likely sits, and
  a fourth down-sampling level would overshoot (about 45 M).
- They fed t/T to a scalar MLP; the harness passes integer t, so the 512-d vector is
  sinusoid(128) -> Linear -> LeakyReLU -> Linear.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register
from .layers import check_size, timestep_embedding


# ResNet basic block (He et al. 2016) with BatchNorm + LeakyReLU, as 002's Fig. 3.
class ResBlockBN(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, slope: float = 0.01):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.LeakyReLU(slope),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.body(x) + self.skip(x), self.slope)


# SAGAN self-attention (Zhang et al. 2019, Sec. 3) as in YigitEkin/Attention-UNet-Pytorch.
class SAGANAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.q = nn.Conv2d(channels, channels // reduction, 1)
        self.k = nn.Conv2d(channels, channels // reduction, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (m(x).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)[:, 0]      # [B, HW, C]
        return self.gamma * out.transpose(1, 2).reshape(b, c, h, w) + x


# Study 002 conditional U-Net (Sec. 2.1).
class UNet002(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,             # noisy-image channels
        out_channels: int = 3,            # predicted channels (eps)
        image_size: int = 64,             # input S or [H, W]
        base_channels: int = 64,          # first-level width
        channel_mult: tuple = (1, 2, 4, 8),  # width per level, x base
        num_raa: int = 3,                 # residual+attention blocks at the bottleneck
        cond_channels: int = 0,           # conditioning channels concatenated to x_t
        time_dim: int = 128,              # sinusoid width before the MLP
    ):
        super().__init__()
        widths = [base_channels * m for m in channel_mult]
        self.downsample_factor = 2 ** (len(widths) - 1)
        check_size(image_size, self.downsample_factor, "s002_unet")
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, widths[-1]), nn.LeakyReLU(),
                                      nn.Linear(widths[-1], widths[-1]))
        self.enc = nn.ModuleList()
        self.downs = nn.ModuleList()
        cur = in_channels + cond_channels
        for i, w in enumerate(widths):
            if i:
                self.downs.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
            self.enc.append(nn.Sequential(ResBlockBN(cur, w), ResBlockBN(w, w)))
            cur = w
        self.raa = nn.ModuleList(nn.Sequential(ResBlockBN(cur, cur), SAGANAttention(cur)) for _ in range(num_raa))
        self.ups, self.dec = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(cur, cur // 2, 2, stride=2))
            self.dec.append(nn.Sequential(ResBlockBN(cur // 2 + w, w), ResBlockBN(w, w)))
            cur = w
        self.out = nn.Conv2d(cur, out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for i, block in enumerate(self.enc):
            h = block(self.downs[i - 1](h) if i else h)
            skips.append(h)
        h = skips.pop() + self.time_mlp(timestep_embedding(t, self.time_dim))[:, :, None, None]
        for block in self.raa:
            h = block(h)
        for up, block in zip(self.ups, self.dec):
            h = block(torch.cat([up(h), skips.pop()], dim=1))
        return self.out(h)


@register(width="base_channels")
def s002_unet(**kw) -> UNet002:
    """002 inpainting U-Net: BN+LeakyReLU ResBlocks, RAA bottleneck, time at the bottleneck only."""
    return UNet002(**kw)
