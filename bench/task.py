"""What a run generates: a task object wraps the denoiser and supplies its conditioning images.

Conditional tasks work by channel concatenation (SR3, Saharia et al. 2021; Palette, Saharia et al.
2022; study 002 generates the bottom half of a face from its top half). Every caller goes through one
object, whatever the task: `task.denoiser(model, x0)` (training and validation: conditioned on the
clean batch itself), `task.sampling_net(model, n, offset)` (sampling: conditioned on held-out images
[offset, offset + n)) and `task.finish(samples, offset)` (the samples as scored, plus task metrics).
`Task` itself is the unconditional task (the model as it is); `make_task` picks the class by
`task.kind`.

For `inpaint`, `task.condition` says what the denoiser sees:
  concat  `cat(x_t, x0 * keep, keep)`: the known pixels and the mask itself (C + 1 extra channels,
          passed to the architecture as `cond_channels`; SR3 / Palette)
  paste   `keep * x0 + (1 - keep) * x_t`: the clean known region and the noisy unknown one in one
          image, no extra channels (study 002 §2.1: "the clean top half and the noisy bottom half";
          the seed stacked the two halves as channels of a half-height input, here they stay in place)
`task.loss_on`: `all` (the usual loss on the whole image) or `hole` (the mean over the generated
region only, study 002 §2.2), in training and in the validation loss. Samples are composited (known
pixels pasted back) before they are scored, and the score is the PSNR of the generated region
against the held-out ground truth.

The held-out images come from a supplier `heldout(n, offset) -> images in [-1, 1]` handed over by
the caller (`bench.run.build`), so this module stays below `bench.data` in the import graph.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from bench.errors import BenchError

MASKS = ("bottom_half", "top_half", "left_half", "right_half", "center")
HeldOut = Callable[[int, int], torch.Tensor]  # (n, offset) -> held-out images [n, C, H, W] in [-1, 1]


def keep_mask(mask: str, size, device=None) -> torch.Tensor:
    """[1, 1, H, W] float mask (`size` S or (H, W)), 1 where pixels are given, 0 where the model
    must generate them: the halves split at H // 2 (rows) or W // 2 (columns)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    keep = torch.ones(1, 1, h, w, device=device)
    region = {"bottom_half": (slice(h // 2, None), slice(None)),
              "top_half": (slice(None, h // 2), slice(None)),
              "right_half": (slice(None), slice(w // 2, None)),
              "left_half": (slice(None), slice(None, w // 2)),
              "center": (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))}[mask]
    keep[(0, 0, *region)] = 0
    return keep


class Task:
    """The unconditional task: the denoiser as it is, nothing to condition on, samples as drawn."""

    kind = "unconditional"

    def __init__(self, cfg=None, channels: int = 0, heldout: HeldOut | None = None):
        self.cfg, self.channels, self._heldout = cfg, channels, heldout

    @property
    def cond_channels(self) -> int:
        """Conditioning channels the task adds to the denoiser's input."""
        return 0 if self.cfg is None else cond_channels(self.cfg, self.channels)

    def denoiser(self, model, x0: torch.Tensor):
        """`model` conditioned on the clean images `x0` (training, validation)."""
        return model

    def loss_mask(self, x0: torch.Tensor) -> torch.Tensor | None:
        """[1, 1, H, W] pixels the loss averages over (None: all of them)."""
        return None

    def sampling_net(self, model, n: int, offset: int = 0):
        """`model` to sample `n` images with, conditioned on held-out images [offset, offset + n)."""
        return model

    def finish(self, samples: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, dict]:
        """(the samples as they are scored, task metrics) of samples drawn by `sampling_net`."""
        return samples, {}

    def generated(self, samples: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """The images FID/KID score of samples drawn by `sampling_net(len(samples), offset)`."""
        return samples


class Inpaint(Task):
    """Generate the masked region given the rest of a held-out image."""

    kind = "inpaint"

    def denoiser(self, model, x0: torch.Tensor):
        if self.cfg.condition == "paste":
            return Pasted(model, x0, keep_mask(self.cfg.mask, x0.shape[-2:], x0.device))
        return Conditioned(model, make_condition(self.cfg, x0))

    def loss_mask(self, x0: torch.Tensor) -> torch.Tensor | None:
        return 1 - keep_mask(self.cfg.mask, x0.shape[-2:], x0.device) if self.cfg.loss_on == "hole" \
            else None

    def given(self, n: int, offset: int = 0) -> torch.Tensor:
        """Held-out images [offset, offset + n) in [-1, 1]: what the samples are conditioned on."""
        if self._heldout is None:
            raise BenchError("task: inpaint samples need held-out images; none were supplied")
        return self._heldout(n, offset)

    def sampling_net(self, model, n: int, offset: int = 0):
        return self.denoiser(model, self.given(n, offset))

    def generated(self, samples: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """With `loss_on: hole` only the hole is trained: the known pixels are pasted back."""
        if self.cfg.loss_on != "hole":
            return samples                     # the full output, known region regenerated too
        return composite(self.cfg, samples, self.given(len(samples), offset))

    def finish(self, samples: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, dict]:
        given = self.given(len(samples), offset)
        pasted = composite(self.cfg, samples, given)
        return pasted, {"inpaint_psnr": inpaint_psnr(self.cfg, pasted, given)}


TASKS: dict[str, type[Task]] = {"unconditional": Task, "inpaint": Inpaint}
UNCONDITIONAL = Task()  # the default of the training loop and the validation loss


def make_task(cfg, channels: int, heldout: HeldOut | None = None) -> Task:
    """The task object for a `TaskConfig` on `channels`-channel images."""
    return TASKS[cfg.kind](cfg, channels, heldout)


def cond_channels(cfg, channels: int) -> int:
    """Extra input channels the task `cfg` adds to the denoiser (0 when unconditional or pasted)."""
    if cfg.kind == "unconditional" or getattr(cfg, "condition", "concat") == "paste":
        return 0
    return channels + 1


def make_condition(cfg, x0: torch.Tensor) -> torch.Tensor:
    """The conditioning channels for clean images x0 in [-1, 1]: known pixels and the mask."""
    keep = keep_mask(cfg.mask, x0.shape[-2:], x0.device).expand(x0.shape[0], 1, -1, -1)
    return torch.cat([x0 * keep, keep], dim=1)


class Conditioned(nn.Module):
    """A denoiser with fixed conditioning channels: the plain (x, t) contract for the samplers."""

    def __init__(self, model: nn.Module, cond: torch.Tensor):
        super().__init__()
        self.model, self.cond = model, cond

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, self.cond.to(x.dtype)], dim=1), t)


class Pasted(nn.Module):
    """A denoiser that sees x_t with the known pixels of `x0` in place (study 002's input)."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, keep: torch.Tensor):
        super().__init__()
        self.model, self.x0, self.keep = model, x0, keep

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        keep = self.keep.to(x.dtype)
        return self.model(keep * self.x0.to(x.dtype) + (1 - keep) * x, t)


def composite(cfg, samples: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Known pixels pasted back over the generated ones."""
    keep = keep_mask(cfg.mask, x0.shape[-2:], x0.device)
    return keep * x0 + (1 - keep) * samples


def inpaint_psnr(cfg, samples: torch.Tensor, x0: torch.Tensor) -> float:
    """PSNR (dB, images in [0, 1]) of the generated region against the ground truth."""
    hole = 1 - keep_mask(cfg.mask, x0.shape[-2:], x0.device)
    err = ((samples - x0) / 2) ** 2 * hole
    mse = err.sum() / (hole.sum() * x0.shape[0] * x0.shape[1])
    return float(10 * torch.log10(1 / mse.clamp(min=1e-12)))
