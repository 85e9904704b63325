"""Snapshots over training: file names of the per-evaluation sample grids and checkpoints, and
the one-step x̂0 panel (study 000, Fig. 9: held-out images noised to x_t and recovered in one step).

Study 000 shows sample grids epoch by epoch and study 001 BigGAN's same-noise grid every 50 epochs:
the runner keeps the fixed-noise grid of every in-training evaluation as `samples/kimg-000500.png`
(a fraction of a kimg is spelled out: `kimg-000000.016.png`) and, with `eval.keep_checkpoints:
every` (or true), the checkpoint beside it as `checkpoints/kimg-000500.pt`. The x̂0 panel: x̂0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) (Ho et al.
2020 eq. 15, `Diffusion.denoise`; formulation edm: `EDM.denoise`), clamped to [-1, 1]; one fixed noise per image (CPU generator),
so the columns differ only in t. Layout: one row per image, columns x0 | x_t, x̂0 for each t.
"""
from __future__ import annotations

import re

import torch

SAMPLES_DIR, CHECKPOINTS_DIR = "samples", "checkpoints"
X0_PANEL = "x0_panel.png"
PANEL_T = (50, 200, 500, 800, 1000)   # 1-based, scaled to T (study 000's Fig. 9 spans the range)
_KIMG = re.compile(r"kimg-(\d+(?:\.\d+)?)\.(png|pt)$")


def snapshot_name(images: int, suffix: str = "png") -> str:
    """`kimg-000500.png` after 500 000 training images; `kimg-000000.016.png` after 16 (tiny runs)."""
    whole, rest = divmod(images, 1000)
    return f"kimg-{whole:06d}.{suffix}" if not rest else f"kimg-{whole:06d}.{rest:03d}.{suffix}"


def snapshot_kimg(name: str) -> float | None:
    """The kimg of a snapshot file name, or None for any other file."""
    m = _KIMG.search(name)
    return float(m.group(1)) if m else None


def panel_t(T: int) -> list[int]:
    """The panel's 1-based timesteps for a T-step schedule (PANEL_T at T = 1000)."""
    return sorted({max(1, min(T, round(t * T / 1000))) for t in PANEL_T})


@torch.no_grad()
def x0_panel(model, diffusion, images_uint8: torch.Tensor, ts, *, seed: int = 0,
             device="cpu") -> torch.Tensor:
    """[rows * (1 + 2 len(ts)), C, H, W] in [0, 1]: per image x0, then (x_t, x̂0) per t."""
    was_training = model.training
    model.eval()
    x0 = images_uint8.to(device).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    columns = [x0]
    for t in ts:
        tt = torch.full((len(x0),), t - 1, device=x0.device, dtype=torch.long)
        x_t = diffusion.add_noise(x0, noise, tt)
        x0_hat = diffusion.denoise(model, x_t, tt).clamp(-1, 1)
        columns += [x_t.clamp(-1, 1), x0_hat]
    model.train(was_training)
    panel = torch.stack(columns, dim=1).flatten(0, 1)   # row-major: image by image
    return (panel.float().cpu() + 1) / 2
