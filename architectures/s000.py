"""Study 000 (seeds/000_5f4b4148b86a66e6.txt, anime faces 64x64): ResNet + self-attention U-Net.

The report's structure (DownEncoder / Bottleneck / UpDecoder chains, `down_channels`,
`mid_channels`, `num_*_layers`, 128-d time embedding, Table I's "mini" row) is the public
explainingai-code/DDPM-Pytorch U-Net, which we follow: each block layer is a ResNet block
(GN-SiLU-conv, + Linear(t), GN-SiLU-[dropout]-conv, 1x1-conv residual) then optional
self-attention (GroupNorm, 4 heads, residual); strided conv 4x4/2 down, transposed conv 4x4/2 up;
sinusoid(t) -> learnable Linear-SiLU-Linear time embedding; GroupNorm(8); last decoder width 16.

Resolved points / deviations:
- Attention token layout. `tokens` is [B, HW, C] (pixels attend to pixels). `channels` is the
  [B, C, HW] layout they found harmful: channels attend to channels (C x C attention map, pixels as
  features), with the same qkv / output projections over channels, so both layouts have the same
  parameter count (their Mega is 74 M either way; an attention with HW-wide projections would not
  be, and would depend on the image size).
- Giga's bottleneck: Table I says 5 mid layers, Table II shows three mid positions ("-" for 4-5).
  We take 3 (Table II): 81.8 M (Table I: 85 M, -3.7 %); 5 layers would give 94.5 M (+11 %).
  `num_mid_layers=5` restores Table I's reading.
- The 5-level presets down-sample at every level but the last (as the 4-level default does).
- Dropout (Table III: 0.1 for Mega/Giga) sits before each ResNet block's second conv (as DDPM).
- `time_embedding="learned"` swaps the sinusoid for a learned nn.Embedding(num_timesteps, d).
- Parameter counts at 64x64 (Table I: 10 / 49 / 74 / 85 M): mini 10.19 M, simple 48.98 M,
  mega 73.98 M (mega_channels the same), giga 81.82 M; pinned in tests/test_architectures.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention

from bench.errors import BenchError, choices_error

from . import register
from .layers import check_size, group_norm, timestep_embedding

LAYOUTS = ("tokens", "channels")


# Self-attention over pixels ([B,HW,C]) or over channels ([B,C,HW]); GroupNorm, 4 heads, residual.
class LayoutAttention(nn.Module):
    def __init__(self, channels: int, num_heads: int = 4, layout: str = "tokens", groups: int = 8):
        super().__init__()
        if layout not in LAYOUTS:
            raise choices_error("s000", "attention layout", layout, LAYOUTS)
        self.norm = group_norm(channels, groups)
        self.attn = Attention(channels, num_heads=num_heads, qkv_bias=True)
        self.layout, self.heads = layout, num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x.reshape(b, c, h * w)).transpose(1, 2)          # [B, HW, C]
        if self.layout == "tokens":
            out = self.attn(seq)
        else:
            q, k, v = self.attn.qkv(seq).reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1)
            out = F.scaled_dot_product_attention(q, k, v)                   # [B, heads, C/heads, HW]
            out = self.attn.proj(out.reshape(b, c, h * w).transpose(1, 2))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


# ResNet block of explainingai DDPM-Pytorch (always a 1x1-conv residual), optional attention after.
class ResAttnLayer(nn.Module):
    def __init__(
        self,
        in_ch: int,                 # input channels
        out_ch: int,                # output channels
        emb_dim: int,               # time-embedding width
        attention: bool,            # self-attention after the ResNet block
        layout: str = "tokens",     # attention token layout
        dropout: float = 0.0,       # dropout before the second conv
        num_heads: int = 4,         # attention heads
    ):
        super().__init__()
        self.conv1 = nn.Sequential(group_norm(in_ch, 8), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.conv2 = nn.Sequential(group_norm(out_ch, 8), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1)
        self.attn = LayoutAttention(out_ch, num_heads, layout) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x) + self.emb(emb)[:, :, None, None]
        return self.attn(self.conv2(h) + self.skip(x))


def _attn_map(spec, n: int, where: str) -> tuple[bool, ...]:
    """Per-layer attention flags: True/False for all layers, or a sequence (Table II row)."""
    if isinstance(spec, bool):
        return (spec,) * n
    flags = tuple(bool(f) for f in spec) + (False,) * max(0, n - len(spec))
    if len(flags) != n:
        raise BenchError(f"s000: {where} has {len(spec)} entries for {n} layers")
    return flags


# Study 000 U-Net (explainingai-code/DDPM-Pytorch `Unet`): DownBlocks, MidBlocks, UpBlocks.
class UNet000(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,                 # image channels
        out_channels: int = 3,                # predicted channels (eps)
        image_size: int = 64,                 # input S or [H, W]
        base_channels: int = 32,              # width unit
        down_mult: tuple = (1, 2, 4, 8),      # down_channels / base
        mid_mult: tuple = (8, 8, 4),          # mid_channels / base
        num_down_layers: int = 2,             # block layers per DownBlock (= per UpBlock)
        num_mid_layers: int = 2,              # attention+ResNet pairs per MidBlock
        attn_down=True,                       # bool or per-layer flags (Table II row)
        attn_mid=True,
        attn_up=True,
        attn_layout: str = "tokens",          # "tokens" [B,HW,C] | "channels" [B,C,HW]
        num_heads: int = 4,                   # attention heads
        time_emb_dim: int = 128,              # time-embedding width
        time_embedding: str = "sinusoidal",   # "sinusoidal" | "learned" (nn.Embedding table)
        num_timesteps: int = 1000,            # table size for time_embedding="learned"
        dropout: float = 0.0,                 # ResNet-block dropout
        final_channels: int = 16,             # last decoder width (explainingai: 16)
    ):
        super().__init__()
        down = [base_channels * m for m in down_mult]
        mid = [base_channels * m for m in mid_mult]
        if mid[0] != down[-1] or mid[-1] != down[-2]:
            raise BenchError(f"s000: mid channels {mid} must start at {down[-1]} and end at {down[-2]}")
        self.downsample_factor = 2 ** (len(down) - 2)
        check_size(image_size, self.downsample_factor, "s000")
        self._time_embedding(time_embedding, time_emb_dim, num_timesteps)
        self.conv_in = nn.Conv2d(in_channels, down[0], 3, padding=1)
        n_levels = len(down) - 1
        resamples = [i < n_levels - 1 for i in range(n_levels)]      # the last level keeps its size
        kw = dict(emb_dim=time_emb_dim, layout=attn_layout, dropout=dropout, num_heads=num_heads)

        def layers(cin, cout, n, flags):
            return nn.ModuleList(ResAttnLayer(cin if i == 0 else cout, cout, attention=f, **kw)
                                 for i, f in enumerate(flags[:n]))

        fd = _attn_map(attn_down, num_down_layers, "attn_down")
        fm = _attn_map(attn_mid, num_mid_layers, "attn_mid")
        fu = _attn_map(attn_up, num_down_layers, "attn_up")
        self.downs = nn.ModuleList(layers(down[i], down[i + 1], num_down_layers, fd) for i in range(n_levels))
        self.down_convs = nn.ModuleList(nn.Conv2d(down[i + 1], down[i + 1], 4, 2, 1) if r else nn.Identity()
                                        for i, r in enumerate(resamples))
        self._mid_blocks(mid, fm, kw)
        self.up_convs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(n_levels)):
            cin, cout = down[i] * 2, down[i - 1] if i else final_channels
            self.up_convs.append(nn.ConvTranspose2d(cin // 2, cin // 2, 4, 2, 1) if resamples[i] else nn.Identity())
            self.ups.append(layers(cin, cout, num_down_layers, fu))
        self.out = nn.Sequential(group_norm(final_channels, 8), nn.SiLU(),
                                 nn.Conv2d(final_channels, out_channels, 3, padding=1))

    def _time_embedding(self, kind: str, dim: int, num_timesteps: int) -> None:
        """sinusoid(t) or a learned table, then the learnable Linear-SiLU-Linear projection."""
        if kind not in ("sinusoidal", "learned"):
            raise choices_error("s000", "time_embedding", kind, ("learned", "sinusoidal"))
        self.table = nn.Embedding(num_timesteps, dim) if kind == "learned" else None
        self.time_emb_dim = dim
        self.t_proj = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def _mid_blocks(self, mid: list[int], flags: tuple, kw: dict) -> None:
        """MidBlock(a -> b): ResNet(a -> b), then per layer [attention?, ResNet(b -> b)]."""
        self.mids = nn.ModuleList(
            nn.ModuleList([ResAttnLayer(a, b, attention=False, **kw)] +
                          [ResAttnLayer(b, b, attention=False, **kw) for _ in flags])
            for a, b in zip(mid, mid[1:]))
        self.mid_attn = nn.ModuleList(
            nn.ModuleList(LayoutAttention(b, kw["num_heads"], kw["layout"]) if f else nn.Identity() for f in flags)
            for b in mid[1:])

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        e = self.table(t) if self.table is not None else timestep_embedding(t, self.time_emb_dim)
        return self.t_proj(e)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed_time(t)
        h, skips = self.conv_in(x), []
        for block, resample in zip(self.downs, self.down_convs):
            skips.append(h)
            for layer in block:
                h = layer(h, emb)
            h = resample(h)
        for resnets, attns in zip(self.mids, self.mid_attn):
            h = resnets[0](h, emb)
            for attn, resnet in zip(attns, resnets[1:]):
                h = resnet(attn(h), emb)
        for upconv, block in zip(self.up_convs, self.ups):
            h = torch.cat([upconv(h), skips.pop()], dim=1)
            for layer in block:
                h = layer(h, emb)
        return self.out(h)


# Table I presets (mini / simple / mega / giga) and Table III dropouts.
@register(width="base_channels")
def s000_mini(**kw) -> UNet000:
    """Table I mini (~10 M): down [32,64,128,256] x2 layers, mid [256,256,128] x2, full attention."""
    return UNet000(**kw)


@register(width="base_channels")
def s000_simple(**kw) -> UNet000:
    """Table I simple (~49 M): down [32..512] x3 layers, mid [512,512,256] x2, full attention."""
    return UNet000(**{"down_mult": (1, 2, 4, 8, 16), "mid_mult": (16, 16, 8), "num_down_layers": 3, **kw})


@register(width="base_channels")
def s000_mega(**kw) -> UNet000:
    """Table I mega (~74 M): down [32..512] x5 layers, mid [512,512,256] x3, full attention, dropout 0.1."""
    return UNet000(**{"down_mult": (1, 2, 4, 8, 16), "mid_mult": (16, 16, 8), "num_down_layers": 5,
                      "num_mid_layers": 3, "dropout": 0.1, **kw})


@register(width="base_channels")
def s000_mega_channels(**kw) -> UNet000:
    """Mega with the [B, C, HW] attention layout (channels attend to channels), which they found harmful."""
    return s000_mega(**{"attn_layout": "channels", **kw})


@register(width="base_channels")
def s000_giga(**kw) -> UNet000:
    """Table I giga (~85 M): down [128,256,256,512] x5, mid [512,512,256] x3, Table II attention map."""
    return UNet000(**{"base_channels": 128, "down_mult": (1, 2, 2, 4), "mid_mult": (4, 4, 2),
                      "num_down_layers": 5, "num_mid_layers": 3, "dropout": 0.1,
                      "attn_down": (False, True, False, True, True), "attn_mid": (False, True, False),
                      "attn_up": (False, True, False, True, False), **kw})
