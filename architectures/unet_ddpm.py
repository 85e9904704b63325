"""DDPM U-Net (Ho et al. 2020, arXiv:2006.11239, Appendix B; `diffusion_tf/models/unet.py`).

CIFAR-10 configuration: base 128 channels, multipliers (1, 2, 2, 2), two ResBlocks per level,
self-attention at 16x16 and in the middle, dropout 0.1, GroupNorm(32), SiLU, 35.75 M parameters.
ADM / score-SDE knobs are keywords (Nichol & Dhariwal 2021; Song et al. 2021): attention
resolutions, heads or head channels, BigGAN-style resblock up/down, scale-shift norm, 1/sqrt(2)
skip rescale, dropout.

Deviations / resolved points: sinusoid order is [sin, cos] with frequencies 10000^(-i/half)
(Ho uses 1/(half-1); no effect on capacity); the stride-2 down-sampling conv pads 1 on every side
(TF 'SAME' pads right/bottom only). `cond_channels` widens the input conv for conditioning by
channel concatenation (study 002); the output keeps `out_channels`.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from . import register
from .layers import (
    AttnBlock,
    Downsample,
    ResBlock,
    Upsample,
    check_size,
    group_norm,
    short_side,
    time_mlp,
    zero_,
)


# Ho et al. 2020 U-Net (Appendix B) with ADM options (Nichol & Dhariwal 2021, Sec. 3).
class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,             # image channels
        out_channels: int = 3,            # predicted channels (eps)
        image_size: int = 32,             # input S or [H, W] (its shorter side names the attention levels)
        base_channels: int = 128,         # width of the first level ("ch")
        channel_mult: tuple = (1, 2, 2, 2),  # width multiplier per level
        num_res_blocks: int = 2,          # ResBlocks per level (the decoder has one more)
        attention_resolutions: tuple = (16,),  # pixel resolutions with self-attention
        mid_attention: bool = True,       # attention between the two middle ResBlocks
        dropout: float = 0.1,             # ResBlock dropout
        num_heads: int = 1,               # attention heads
        num_head_channels: int | None = None,  # ADM: fixed channels per head instead
        resblock_updown: bool = False,    # BigGAN-style ResBlocks for down/up-sampling
        scale_shift_norm: bool = False,   # ADM AdaGN time conditioning
        skip_rescale: bool = False,       # score-SDE 1/sqrt(2) rescale of residual sums
        conv_resample: bool = True,       # conv in Downsample/Upsample (False: pool / nearest)
        norm_groups: int = 32,            # GroupNorm groups
        cond_channels: int = 0,           # extra conditioning channels concatenated to x
    ):
        super().__init__()
        self.downsample_factor = 2 ** (len(channel_mult) - 1)
        check_size(image_size, self.downsample_factor, "unet")
        ch, emb_dim = base_channels, 4 * base_channels
        res_kw = dict(emb_dim=emb_dim, dropout=dropout, scale_shift=scale_shift_norm,
                      skip_rescale=skip_rescale, groups=norm_groups)
        attn_kw = dict(num_heads=num_heads, head_channels=num_head_channels,
                       skip_rescale=skip_rescale, groups=norm_groups)
        self.time_embed = time_mlp(ch, emb_dim)
        self.conv_in = nn.Conv2d(in_channels + cond_channels, ch, 3, padding=1)

        attend = [short_side(image_size) // 2 ** i in attention_resolutions for i in range(len(channel_mult))]
        widths = [ch * m for m in channel_mult]
        make_res = functools.partial(ResBlock, **res_kw)
        make_attn = functools.partial(AttnBlock, **attn_kw)

        def resample(c: int, up: bool) -> nn.Module:
            if resblock_updown:
                return make_res(c, c, resample="up" if up else "down")
            return Upsample(c, conv_resample) if up else Downsample(c, conv_resample)

        self.down, skips = self._encoder(ch, widths, num_res_blocks, attend, make_res, make_attn, resample)
        cur = widths[-1]
        self.mid = nn.ModuleList([make_res(cur, cur), make_attn(cur) if mid_attention else nn.Identity(),
                                  make_res(cur, cur)])
        self.up = self._decoder(widths, num_res_blocks, attend, skips, make_res, make_attn, resample)
        cur = widths[0]
        self.out = nn.Sequential(group_norm(cur, norm_groups), nn.SiLU(),
                                 zero_(nn.Conv2d(cur, out_channels, 3, padding=1)))

    @staticmethod
    def _encoder(ch, widths, num_res_blocks, attend, make_res, make_attn, resample):
        """Levels of ResBlocks (+ attention), a down-sampler between levels; returns skip widths."""
        layers, skips, cur = nn.ModuleList(), [ch], ch
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(nn.ModuleList([make_res(cur, width)] + ([make_attn(width)] if attend[level] else [])))
                cur = width
                skips.append(cur)
            if level != len(widths) - 1:
                layers.append(resample(cur, up=False))
                skips.append(cur)
        return layers, skips

    @staticmethod
    def _decoder(widths, num_res_blocks, attend, skips, make_res, make_attn, resample):
        """Mirror of the encoder with one more ResBlock per level, each eating one skip."""
        layers, cur = nn.ModuleList(), widths[-1]
        for level in reversed(range(len(widths))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleList([make_res(cur + skips.pop(), widths[level])])
                cur = widths[level]
                if attend[level]:
                    block.append(make_attn(cur))
                if level and i == num_res_blocks:
                    block.append(resample(cur, up=True))
                layers.append(block)
        return layers

    @staticmethod
    def _run(layers, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in layers if isinstance(layers, nn.ModuleList) else [layers]:
            h = layer(h, emb) if isinstance(layer, (ResBlock, AttnBlock)) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(t)
        hs = [self.conv_in(x)]
        for layer in self.down:
            hs.append(self._run(layer, hs[-1], emb))
        h = self._run(self.mid, hs[-1], emb)
        for layer in self.up:
            h = self._run(layer, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


@register(width="base_channels")
def unet_ddpm(**kwargs) -> UNet:
    """Ho et al. 2020 CIFAR-10 U-Net (35.7 M parameters at the default width 128)."""
    return UNet(**kwargs)


@register(width="base_channels")
def unet_ddpm_noattn(**kwargs) -> UNet:
    """The DDPM U-Net with no self-attention anywhere (neither at 16x16 nor in the middle)."""
    kwargs.setdefault("attention_resolutions", ())
    kwargs.setdefault("mid_attention", False)
    return UNet(**kwargs)
