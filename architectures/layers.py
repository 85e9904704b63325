"""Shared denoiser blocks: timestep embeddings, DDPM/ADM residual blocks, attention, resampling.

Sources: Ho et al. 2020 (DDPM, `diffusion_tf/models/unet.py`), Nichol & Dhariwal 2021 (ADM,
`guided_diffusion/unet.py`: scale-shift norm, heads, BigGAN up/down), Song et al. 2021 (score-SDE:
1/sqrt(2) skip rescale). Attention uses `timm.layers.Attention` (one qkv projection = Ho's q, k, v
NIN layers; same parameter count). The course-study blocks (double conv, dome272-style attention)
are here too because studies 001 and 003 share them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention, Mlp

from bench.errors import BenchError
from bench.images import hw

SKIP_SCALE = 1.0 / math.sqrt(2.0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of integer timesteps: [sin(t f_i), cos(t f_i)], [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class SinusoidalEmbedding(nn.Module):
    """Parameter-free sinusoidal embedding as a module (so it can sit in nn.Sequential)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(t, self.dim)


def time_mlp(dim: int, hidden: int, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """DDPM time embedding: sinusoid(dim) -> Linear -> act -> Linear (Ho et al. 2020, temb)."""
    return nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, hidden), act(), nn.Linear(hidden, hidden))


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm that fails with a teaching message when the width does not split into groups."""
    if channels % groups:
        raise BenchError(f"width {channels} is not divisible by {groups} GroupNorm groups")
    return nn.GroupNorm(groups, channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (Ho et al.'s init_scale=0 on the last conv of each branch)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def check_size(image_size, factor: int, name: str) -> None:
    """Raise a BenchError unless `image_size` (S, or [H, W]: each side) is divisible by the model's
    down-sampling factor."""
    for side in hw(image_size):
        if side % factor:
            shown = image_size if isinstance(image_size, int) else list(image_size)
            raise BenchError(f"{name}: image_size {shown} is not divisible by its down-sampling "
                             f"factor {factor}")


def short_side(image_size) -> int:
    """The shorter side of `image_size` (S, or [H, W]): the resolution attention levels are named by."""
    return min(hw(image_size))


# ---------------------------------------------------------------------------------------------
# DDPM / ADM blocks.

class Downsample(nn.Module):
    """Halve H, W: 3x3 stride-2 conv (DDPM) or 2x2 average pool (ADM use_conv=False)."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H, W: nearest neighbour, then an optional 3x3 conv (DDPM)."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# Ho et al. 2020 ResnetBlock (Appendix B), with ADM's scale-shift norm (Nichol & Dhariwal 2021,
# eq. AdaGN: GN(h)*(1+s)+b), BigGAN up/down inside the block and score-SDE's 1/sqrt(2) skip rescale.
class ResBlock(nn.Module):
    def __init__(
        self,
        in_ch: int,                 # input channels
        out_ch: int,                # output channels
        emb_dim: int,               # time-embedding width
        dropout: float = 0.0,       # dropout before the second conv
        scale_shift: bool = False,  # ADM AdaGN instead of adding the embedding
        skip_rescale: bool = False, # divide the residual sum by sqrt(2)
        resample: str | None = None,  # None | "up" | "down" (BigGAN-style resblock_updown)
        groups: int = 32,           # GroupNorm groups
    ):
        super().__init__()
        self.norm1, self.norm2 = group_norm(in_ch, groups), group_norm(out_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)
        self.resample = {None: nn.Identity(), "up": Upsample(in_ch, False), "down": Downsample(in_ch, False)}[resample]
        self.scale_shift, self.skip_rescale = scale_shift, skip_rescale

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h, x = self.resample(h), self.resample(x)
        h = self.conv1(h)
        e = self.emb(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.drop(F.silu(h)))
        out = self.skip(x) + h
        return out * SKIP_SCALE if self.skip_rescale else out


# Ho et al. 2020 AttnBlock: GroupNorm, single- or multi-head self-attention over the H*W tokens,
# output projection zero-initialised, residual add (optionally rescaled by 1/sqrt(2)).
class AttnBlock(nn.Module):
    def __init__(
        self,
        channels: int,              # feature channels (token width)
        num_heads: int = 1,         # heads (ignored when head_channels is set)
        head_channels: int | None = None,  # ADM num_head_channels: heads = channels // this
        skip_rescale: bool = False, # divide the residual sum by sqrt(2)
        groups: int = 32,           # GroupNorm groups
    ):
        super().__init__()
        if head_channels:
            if channels % head_channels:
                raise BenchError(f"attention width {channels} is not divisible by head_channels {head_channels}")
            num_heads = channels // head_channels
        if channels % num_heads:
            raise BenchError(f"attention width {channels} is not divisible by num_heads {num_heads}")
        self.norm = group_norm(channels, groups)
        self.attn = Attention(channels, num_heads=num_heads, qkv_bias=True)
        zero_(self.attn.proj)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hh, ww = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        h = self.attn(tokens).transpose(1, 2).reshape(b, c, hh, ww)
        return (x + h) * SKIP_SCALE if self.skip_rescale else x + h


# ---------------------------------------------------------------------------------------------
# Course-study blocks (dome272/Diffusion-Models-pytorch, used by studies 001 and 003).

class DoubleConv(nn.Module):
    """conv3x3-GN-GELU-conv3x3-GN; `residual` adds the input then GELU (dome272 DoubleConv).

    `project` puts a 1x1 conv on the residual path when widths differ (001 AdditionalResLink);
    `skip_scale` multiplies the residual sum (001 4DoubleConvBlocks uses 1/sqrt(2)).
    """

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None, residual: bool = False,
                 project: bool = False, skip_scale: float = 1.0, groups: int = 1):
        super().__init__()
        mid_ch = mid_ch or out_ch
        self.block = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=False), nn.GroupNorm(groups, mid_ch), nn.GELU(),
            nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False), nn.GroupNorm(groups, out_ch),
        )
        self.residual = residual or project
        self.proj = nn.Conv2d(in_ch, out_ch, 1) if project and in_ch != out_ch else nn.Identity()
        if residual and not project and in_ch != out_ch:
            raise ValueError("a plain residual DoubleConv needs in_ch == out_ch")
        self.skip_scale = skip_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.block(x)
        return F.gelu((self.proj(x) + self.block(x)) * self.skip_scale)


class TokenSelfAttention(nn.Module):
    """dome272 SelfAttention: pre-LN multi-head attention over H*W tokens, then a pre-LN GELU MLP.

    Uses `timm.layers.Attention` (4 heads, qkv bias as nn.MultiheadAttention) and `timm.layers.Mlp`.
    """

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = Attention(channels, num_heads=num_heads, qkv_bias=True)
        self.mlp = Mlp(channels, channels, channels, act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tok = x.flatten(2).transpose(1, 2)
        tok = tok + self.attn(self.ln1(tok))
        tok = tok + self.mlp(self.ln2(tok))
        return tok.transpose(1, 2).reshape(b, c, h, w)


class EmbAdd(nn.Module):
    """dome272 time injection: SiLU -> Linear(emb_dim, C), broadcast-added over H, W."""

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return x + self.proj(emb)[:, :, None, None]


class SinusoidAdd(nn.Module):
    """awjuliani/pytorch-diffusion time injection: + sinusoid(t) of width C, no parameters."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + timestep_embedding(t, self.channels).to(x.dtype)[:, :, None, None]
