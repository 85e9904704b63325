"""Optimizer, learning-rate schedule, EMA and budget arithmetic for `bench.train.loop`.

LR: linear warm-up then constant, cosine (Loshchilov & Hutter 2017, SGDR without restarts) or cosine
with warm restarts (SGDR: cycle T_0 = `cycle_kimg`, growth T_mult = `cycle_mult`), all as pure
functions of images seen and budget progress. EMA: `torch.optim.swa_utils.AveragedModel` (the
PyTorch-native EMA) with, optionally, diffusers' `EMAModel` warm-up decay min(d, (1+n)/(10+n)) so
short runs are not dominated by the random initial weights; until `ema_start_step` it tracks the
raw weights.
"""
from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW on every parameter (fused on CUDA when available)."""
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused or None)


def lr_at(cfg, kimg: float, progress: float) -> float:
    """Learning rate after `kimg` thousand images, at fraction `progress` of the budget."""
    if cfg.warmup_kimg > 0 and kimg < cfg.warmup_kimg:
        return cfg.lr * kimg / cfg.warmup_kimg
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * sgdr_phase(cfg, kimg)))


def sgdr_phase(cfg, kimg: float) -> float:
    """Position in [0, 1) inside the current SGDR cycle (cycles of cycle_kimg * cycle_mult^i).

    Closed form, as PyTorch's `CosineAnnealingWarmRestarts`: the cycle index is
    n = floor(log_m(1 + x (m - 1) / T_0)) (n = floor(x / T_0) when m = 1), so the cost does not grow
    with the number of cycles and no user number can make it loop.
    """
    length, mult = float(cfg.cycle_kimg), float(cfg.cycle_mult)
    if not (length > 0 and mult >= 1 and math.isfinite(length) and math.isfinite(mult)):
        raise ValueError(f"SGDR needs cycle_kimg > 0 and cycle_mult >= 1, got {length}, {mult}")
    position = max(kimg - max(cfg.warmup_kimg, 0.0), 0.0)
    if mult == 1.0:
        return (position % length) / length
    n = math.floor(math.log1p(position * (mult - 1) / length) / math.log(mult))
    start = length * (mult ** n - 1) / (mult - 1)
    phase = (position - start) / (length * mult ** n)
    return min(max(phase, 0.0), math.nextafter(1.0, 0.0))  # float rounding at a cycle boundary


def ema_decay(decay: float, n_averaged: int, warmup: bool) -> float:
    """EMA decay at the n-th update: fixed, or diffusers' warm-up min(decay, (1 + n) / (10 + n))."""
    return min(decay, (1 + n_averaged) / (10 + n_averaged)) if warmup else decay


def make_ema(model: torch.nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """An EMA copy of `model` (parameters and buffers averaged)."""

    @torch.no_grad()
    def update(ema_params, params, n_averaged):
        d = ema_decay(decay, int(n_averaged), warmup)
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - d)
        for e, p in zip(ema_params, params):
            if not e.is_floating_point():
                e.copy_(p)  # integer buffers (BatchNorm counters) follow the model

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def update_ema(ema: AveragedModel, model: torch.nn.Module, step: int, start_step: int) -> None:
    """One EMA update; before `start_step` the EMA copies the raw weights."""
    if step < start_step:
        ema.n_averaged.zero_()  # AveragedModel copies the weights when n_averaged == 0
    ema.update_parameters(model)


class Budget:
    """Budget in kimg | steps | seconds; `next_batch` trims the last batch to land exactly."""

    def __init__(self, cfg, batch_size: int):
        (self.unit, self.amount), = ((k, v) for k, v in vars(cfg).items() if v is not None)
        self.batch_size = batch_size

    def progress(self, images: int, steps: int, seconds: float) -> float:
        done = {"kimg": images / 1000, "steps": steps, "seconds": seconds}[self.unit]
        return done / self.amount

    def next_batch(self, images: int, steps: int, seconds: float) -> int:
        """Images in the next step (0 when the budget is spent)."""
        if self.progress(images, steps, seconds) >= 1:
            return 0
        if self.unit == "kimg":
            return min(self.batch_size, round(self.amount * 1000) - images)
        return self.batch_size

    def total_images(self) -> int | None:
        """Images the run will see, when known in advance (for the progress bar's ETA)."""
        if self.unit == "kimg":
            return round(self.amount * 1000)
        return self.amount * self.batch_size if self.unit == "steps" else None
