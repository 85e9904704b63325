"""Diffusion Transformer (Peebles & Xie 2023, arXiv:2212.09748; facebookresearch/DiT `models.py`)
built from `timm.layers` (PatchEmbed, Attention, Mlp): the attention-only end of the registry.

Pixel-space, unconditional: patchify (p = 2) -> fixed 2D sin-cos position embedding -> N adaLN-Zero
blocks conditioned on the timestep embedding (sinusoid(256) -> MLP) -> adaLN final layer ->
unpatchify. `dit_s2` (width 384, depth 12, 6 heads) and `dit_b2` (768, 12, 12) as in Table 1.

Deviations: no class embedding (unconditional); the output has `out_channels` (no learned-sigma
half, since the harness's losses predict eps only); `cond_channels` widens the patch embedding for
conditioning by concatenation. Initialisation follows DiT: xavier-uniform linears, zero adaLN
modulations and zero final layer, so the untrained network outputs zeros.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import Attention, Mlp, PatchEmbed

from bench.errors import BenchError

from . import register
from .layers import check_size, time_mlp


def sincos_2d(dim: int, grid: int) -> torch.Tensor:
    """DiT/MAE fixed 2D sin-cos position embedding, [grid*grid, dim] (half for rows, half for columns)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    ys, xs = torch.meshgrid(pos, pos, indexing="ij")

    def axis(p):
        out = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([axis(xs), axis(ys)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


# DiT block with adaLN-Zero (Peebles & Xie 2023, Sec. 3.2, Fig. 3).
class DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


# DiT (Peebles & Xie 2023, Fig. 3 left), pixel space, unconditional.
class DiT(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,             # image channels
        out_channels: int = 3,            # predicted channels (eps)
        image_size: int = 32,             # input H = W (divisible by the patch size)
        hidden_size: int = 384,           # token width
        depth: int = 12,                  # DiT blocks
        num_heads: int = 6,               # attention heads
        patch_size: int = 2,              # patch side
        mlp_ratio: float = 4.0,           # MLP hidden / token width
        cond_channels: int = 0,           # conditioning channels concatenated to x
    ):
        super().__init__()
        if hidden_size % num_heads or hidden_size % 4:
            raise BenchError(f"dit: hidden_size {hidden_size} must be divisible by 4 and by num_heads {num_heads}")
        if not isinstance(image_size, int):
            raise BenchError(f"dit: square images only (its position grid is square), got image_size "
                             f"{list(image_size)}")
        check_size(image_size, patch_size, "dit")
        self.downsample_factor, self.out_channels = patch_size, out_channels
        self.grid = image_size // patch_size
        self.patch = PatchEmbed(image_size, patch_size, in_channels + cond_channels, hidden_size)
        self.register_buffer("pos", sincos_2d(hidden_size, self.grid)[None], persistent=False)
        self.t_embed = time_mlp(256, hidden_size)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.head = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT `initialize_weights`: xavier linears, zero adaLN and output layers."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for lin in (self.t_embed[1], self.t_embed[3]):
            nn.init.normal_(lin.weight, std=0.02)
        for layer in [b.ada[-1] for b in self.blocks] + [self.ada[-1], self.head]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        b, p, g, c = x.shape[0], self.downsample_factor, self.grid, self.out_channels
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.patch(x) + self.pos.to(x.dtype)
        c = self.t_embed(t)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.unpatchify(self.head(modulate(self.norm(h), shift, scale)))


@register(width="hidden_size")
def dit_s2(**kw) -> DiT:
    """DiT-S/2: width 384, depth 12, 6 heads, patch 2."""
    return DiT(**kw)


@register(width="hidden_size")
def dit_b2(**kw) -> DiT:
    """DiT-B/2: width 768, depth 12, 12 heads, patch 2."""
    return DiT(**{"hidden_size": 768, "num_heads": 12, **kw})
