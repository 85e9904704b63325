"""Study 001 (seeds/001_a49163babcb0c413.txt, "Newer Architectures for Diffusion", CIFAR-10 32x32):
one U-Net skeleton (dome272/Diffusion-Models-pytorch, their baseline) and eight block variants.

Baseline: stem DoubleConv, then per stage [pool -> residual DoubleConv(in, in) -> DoubleConv(in,
out) -> + Linear(SiLU(sinusoid(t)))] and self-attention after every down/up stage (pre-LN,
4 heads, GELU MLP); widths 64/128/256/256, bottleneck of three plain DoubleConvs 256->512->512->256;
max-pool down, bilinear (align_corners) up with skip concatenation; GroupNorm(1) + GELU; 256-d
sinusoid time embedding. The `base_channels` keyword scales every width.

Variants (Sec. 2.2-2.3) and the points we resolved:
- addreslink: the second DoubleConv gets a 1x1-projected residual, then GELU (their code listing).
- rdn: each stage's two DoubleConvs become one residual dense block (Zhang et al. 2018): 4 conv3x3+
  ReLU layers, dense concatenation, 1x1 fusion and local residual (1x1-projected when widths
  differ); growth rate = the stage's output width ("scaled to the stage width"); no norm, as RDN.
- deep: a 5th resolution (32..2); first width 32, the other resolutions keep 128/256/256 (+256 at
  2x2), bottleneck unchanged ("only the first resolution's width goes from 64 to 32").
- convnext: each stage's residual unit is a `timm` ConvNeXt block at the input width followed by a
  1x1 conv to the output width (the baseline's width-changing DoubleConv); widths 96/192/384/768,
  1x1 stem, no attention; the bottleneck keeps the three DoubleConvs at 8x base width (768).
- antialias: a depthwise normalised 1-2-1 blur (`timm` BlurPool2d, stride 1, reflect padding)
  before every max-pool. Their code summed over all channels (filter repeated C x C without
  groups); that is a bug, not the design.
- 4dc: four DoubleConvs per stage (three residual + the width-changing one), residual sums x 1/sqrt2.
- biggan: BigGAN blocks (Brock et al. 2019, Fig. 15): down = D-block ReLU-conv-ReLU-conv-avgpool
  with a conv1x1-avgpool shortcut; up = G-block norm-ReLU-conv-norm-ReLU-conv on [nearest-up(x),
  skip] with a 1x1 shortcut. Class-conditional BN becomes the baseline's GroupNorm(1) (the report
  lists ReLU, avg-pool, layer order and residual placement as the only changes).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import BlurPool2d
from timm.models.convnext import ConvNeXtBlock

from bench.errors import choices_error

from . import register
from .layers import (
    SKIP_SCALE,
    DoubleConv,
    EmbAdd,
    SinusoidAdd,
    TokenSelfAttention,
    check_size,
    timestep_embedding,
)

BLOCKS = ("double", "addreslink", "rdn", "convnext", "4dc", "biggan")


# Residual dense block (Zhang et al. 2018, Fig. 3) with a 1x1-projected local residual.
class ResidualDenseBlock(nn.Module):
    def __init__(
        self,
        in_ch: int,                 # input channels
        out_ch: int,                # output channels
        growth: int,                # channels each dense layer adds
        num_layers: int = 4,        # dense conv layers (RDN uses 8; 001 halves it)
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_ch + i * growth, growth, 3, padding=1), nn.ReLU())
            for i in range(num_layers))
        self.fuse = nn.Conv2d(in_ch + num_layers * growth, out_ch, 1)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return self.fuse(torch.cat(feats, dim=1)) + self.skip(x)


# BigGAN residual block (Brock et al. 2019, Fig. 15b/c): D-block (down) or G-block (no resampling;
# the Up stage upsamples before it, which commutes with norm/ReLU for nearest upsampling).
class BigGANBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, down: bool):
        super().__init__()
        if down:
            self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.AvgPool2d(2))
            self.skip = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.AvgPool2d(2))
        else:
            self.body = nn.Sequential(nn.GroupNorm(1, in_ch), nn.ReLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                      nn.GroupNorm(1, out_ch), nn.ReLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
            self.skip = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def stage_body(block: str, cin: int, cout: int, up: bool) -> nn.Module:
    """The per-stage residual unit that replaces the baseline's two DoubleConvs."""
    mid = cin // 2 if up else None               # dome272 Up: second DoubleConv narrows via in//2
    if block == "double":
        return nn.Sequential(DoubleConv(cin, cin, residual=True), DoubleConv(cin, cout, mid))
    if block == "addreslink":
        return nn.Sequential(DoubleConv(cin, cin, residual=True), DoubleConv(cin, cout, mid, project=True))
    if block == "4dc":
        res = [DoubleConv(cin, cin, residual=True, skip_scale=SKIP_SCALE) for _ in range(3)]
        return nn.Sequential(*res, DoubleConv(cin, cout, mid))
    if block == "rdn":
        return ResidualDenseBlock(cin, cout, growth=cout)
    if block == "convnext":
        return nn.Sequential(ConvNeXtBlock(cin), nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity())
    if block == "biggan":
        return BigGANBlock(cin, cout, down=not up)
    raise choices_error("s001", "block", block, BLOCKS)


def time_add(emb_dim: int, channels: int, project: bool) -> nn.Module:
    """dome272: + Linear(SiLU(emb)); awjuliani (study 003): + the raw sinusoid of t at this width."""
    return EmbAdd(emb_dim, channels) if project else SinusoidAdd(channels)


class Down(nn.Module):
    """[blur] -> pool -> stage body -> + time embedding (dome272 Down)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, block: str, blur: bool, time_proj: bool = True):
        super().__init__()
        pool = nn.Identity() if block == "biggan" else nn.MaxPool2d(2)   # the D-block pools itself
        self.body = nn.Sequential(BlurPool2d(None, 3, stride=1) if blur else nn.Identity(), pool,
                                  stage_body(block, cin, cout, up=False))
        self.emb = time_add(emb_dim, cout, time_proj)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.emb(self.body(x), emb)


class Up(nn.Module):
    """upsample -> concat skip -> stage body -> + time embedding (dome272 Up)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, block: str, time_proj: bool = True):
        super().__init__()
        self.mode = "nearest" if block == "biggan" else "bilinear"
        self.body = stage_body(block, cin, cout, up=True)
        self.emb = time_add(emb_dim, cout, time_proj)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        corners = True if self.mode == "bilinear" else None
        x = F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=corners)
        return self.emb(self.body(torch.cat([skip, x], dim=1)), emb)


# Study 001 U-Net (dome272 baseline, Sec. 2.1) with the block variants of Sec. 2.2.
class UNet001(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,             # image channels
        out_channels: int = 3,            # predicted channels (eps)
        image_size: int = 32,             # input S or [H, W]
        base_channels: int = 64,          # width unit
        channel_mult: tuple = (1, 2, 4, 4),  # width per resolution, x base (0.5 allowed)
        mid_mult: int = 8,                # bottleneck width, x base
        block: str = "double",            # stage body, one of BLOCKS
        attention: bool = True,           # self-attention after every down/up stage
        blur: bool = False,               # 1-2-1 blur before every down-sampling
        num_heads: int = 4,               # attention heads
        time_dim: int = 256,              # sinusoid width
        stem: str = "double",             # "double" (DoubleConv) | "conv1x1" (ConvNeXt stem)
        bottleneck: str = "double",       # "double" (3 DoubleConvs) | "attention" (study 003 bridge)
        time_proj: bool = True,           # project the sinusoid per stage (False: add it raw)
    ):
        super().__init__()
        widths = [int(round(base_channels * m)) for m in channel_mult]
        mid = base_channels * mid_mult
        self.downsample_factor = 2 ** (len(widths) - 1)
        check_size(image_size, self.downsample_factor, "s001")
        self.time_dim, self.time_proj = time_dim, time_proj
        self.inc = DoubleConv(in_channels, widths[0]) if stem == "double" else nn.Conv2d(in_channels, widths[0], 1)

        def attn(c):
            return TokenSelfAttention(c, num_heads) if attention else nn.Identity()

        self.downs = nn.ModuleList(Down(a, b, time_dim, block, blur, time_proj) for a, b in zip(widths, widths[1:]))
        self.down_attn = nn.ModuleList(attn(c) for c in widths[1:])
        if bottleneck == "attention":
            self.bottleneck = TokenSelfAttention(widths[-1], num_heads)
        elif bottleneck == "double":
            self.bottleneck = nn.Sequential(DoubleConv(widths[-1], mid), DoubleConv(mid, mid), DoubleConv(mid, widths[-1]))
        else:
            raise choices_error("s001", "bottleneck", bottleneck, ("attention", "double"))
        self.ups, self.up_attn, cur = nn.ModuleList(), nn.ModuleList(), widths[-1]
        for j in reversed(range(len(widths) - 1)):
            out = widths[max(j - 1, 0)]
            self.ups.append(Up(cur + widths[j], out, time_dim, block, time_proj))
            self.up_attn.append(attn(out))
            cur = out
        self.outc = nn.Conv2d(cur, out_channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.time_dim) if self.time_proj else t
        skips = [self.inc(x)]
        for down, attn in zip(self.downs, self.down_attn):
            skips.append(attn(down(skips[-1], emb)))
        h = self.bottleneck(skips.pop())
        for up, attn in zip(self.ups, self.up_attn):
            h = attn(up(h, skips.pop(), emb))
        return self.outc(h)


@register(width="base_channels")
def s001_baseline(**kw) -> UNet001:
    """dome272 U-Net: DoubleConvs, max-pool, bilinear, attention at every stage (001 baseline)."""
    return UNet001(**kw)


@register(width="base_channels")
def s001_addreslink(**kw) -> UNet001:
    """001 AdditionalResLink: 1x1-projected residual on the width-changing DoubleConv."""
    return UNet001(**{"block": "addreslink", **kw})


@register(width="base_channels")
def s001_rdn(**kw) -> UNet001:
    """001 RDN: one 4-layer residual dense block per stage, growth = stage width."""
    return UNet001(**{"block": "rdn", **kw})


@register(width="base_channels")
def s001_deep(**kw) -> UNet001:
    """001 Deep: five resolutions (32..2), first width 32, the others 128/256/256/256."""
    return UNet001(**{"channel_mult": (0.5, 2, 4, 4, 4), **kw})


@register(width="base_channels")
def s001_convnext(**kw) -> UNet001:
    """001 ConvNeXt: ConvNeXt blocks, widths 96/192/384/768, 1x1 stem, no attention."""
    return UNet001(**{"base_channels": 96, "channel_mult": (1, 2, 4, 8), "block": "convnext",
                      "attention": False, "stem": "conv1x1", **kw})


@register(width="base_channels")
def s001_antialias(**kw) -> UNet001:
    """001 Anti-aliasing: normalised 1-2-1 blur before every max-pool."""
    return UNet001(**{"blur": True, **kw})


@register(width="base_channels")
def s001_4dc(**kw) -> UNet001:
    """001 4DoubleConvBlocks: four DoubleConvs per stage, residual sums rescaled by 1/sqrt(2)."""
    return UNet001(**{"block": "4dc", **kw})


@register(width="base_channels")
def s001_biggan(**kw) -> UNet001:
    """001 BigGAN: D-blocks down (avg-pool), G-blocks up, ReLU; attention kept."""
    return UNet001(**{"block": "biggan", **kw})


@register(width="base_channels")
def s001_biggan_noattn(**kw) -> UNet001:
    """001 BigGAN without attention (their ablation: FID 75.9 vs 53.1)."""
    return UNet001(**{"block": "biggan", "attention": False, **kw})
