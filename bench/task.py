"""Conditional tasks by channel concatenation (SR3, Saharia et al. 2021; Palette, Saharia et al. 2022;
study 002 generates the bottom half of a face from its top half).

For `inpaint`, the denoiser sees `cat(x_t, x0 * keep, keep)`: the known pixels and the mask itself
(C + 1 extra channels, passed to the architecture as `cond_channels`). The loss is the usual one on
the whole image; samples are composited (known pixels pasted back) before they are scored, and the
score is the PSNR of the generated region against the held-out ground truth.
"""
from __future__ import annotations

import torch
import torch.nn as nn

MASKS = ("bottom_half", "top_half", "left_half", "right_half", "center")


def keep_mask(mask: str, size: int, device=None) -> torch.Tensor:
    """[1, 1, H, W] float mask, 1 where pixels are given, 0 where the model must generate them."""
    keep = torch.ones(1, 1, size, size, device=device)
    half, quarter = size // 2, size // 4
    region = {"bottom_half": (slice(half, None), slice(None)),
              "top_half": (slice(None, half), slice(None)),
              "right_half": (slice(None), slice(half, None)),
              "left_half": (slice(None), slice(None, half)),
              "center": (slice(quarter, size - quarter), slice(quarter, size - quarter))}[mask]
    keep[(0, 0, *region)] = 0
    return keep


def cond_channels(task, channels: int) -> int:
    """Extra input channels the task adds to the denoiser (0 when unconditional)."""
    return 0 if task.kind == "unconditional" else channels + 1


def make_condition(task, x0: torch.Tensor) -> torch.Tensor:
    """The conditioning channels for clean images x0 in [-1, 1]: known pixels and the mask."""
    keep = keep_mask(task.mask, x0.shape[-1], x0.device).expand(x0.shape[0], 1, -1, -1)
    return torch.cat([x0 * keep, keep], dim=1)


def conditioned(model, task, x0: torch.Tensor | None):
    """`model` itself when unconditional, else a callable (x, t) -> model(cat(x, cond(x0)), t)."""
    if task.kind == "unconditional" or x0 is None:
        return model
    return Conditioned(model, make_condition(task, x0))


class Conditioned(nn.Module):
    """A denoiser with fixed conditioning channels: the plain (x, t) contract for the samplers."""

    def __init__(self, model: nn.Module, cond: torch.Tensor):
        super().__init__()
        self.model, self.cond = model, cond

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, self.cond.to(x.dtype)], dim=1), t)


def composite(task, samples: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Known pixels pasted back over the generated ones."""
    keep = keep_mask(task.mask, x0.shape[-1], x0.device)
    return keep * x0 + (1 - keep) * samples


def inpaint_psnr(task, samples: torch.Tensor, x0: torch.Tensor) -> float:
    """PSNR (dB, images in [0, 1]) of the generated region against the ground truth."""
    hole = 1 - keep_mask(task.mask, x0.shape[-1], x0.device)
    err = ((samples - x0) / 2) ** 2 * hole
    mse = err.sum() / (hole.sum() * x0.shape[0] * x0.shape[1])
    return float(10 * torch.log10(1 / mse.clamp(min=1e-12)))
