"""Optimizer, learning-rate schedule, EMA and budget arithmetic for `bench.train.loop`.

AdamW: fused (CUDA default), foreach or torch's single-tensor loop (CPU default), `train.optimizer_impl`.
LR: linear warm-up then constant, cosine (Loshchilov & Hutter 2017, SGDR without restarts) or cosine
with warm restarts (SGDR: cycle T_0 = `cycle_kimg`, growth T_mult = `cycle_mult`), all as pure
functions of images seen and budget progress. EMA: `torch.optim.swa_utils.AveragedModel` (the
PyTorch-native EMA) with, optionally, diffusers' `EMAModel` warm-up decay min(d, (1+n)/(10+n)) so
short runs are not dominated by the random initial weights; until `ema_start_step` it tracks the
raw weights. `ForeachEMA` (the default, `train.ema_impl: foreach`) is the same AveragedModel (same
state dict) updated by one `torch._foreach_lerp_` over cached tensor lists with the update count kept
on the host: the stock `update_parameters` reads `n_averaged` (a device sync on CUDA when the decay
depends on it) and re-lists every tensor each step; `averaged_model` keeps the stock path.
"""
from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel

from bench.device import optimizer_impl

_IMPL_KWARGS = {"fused": {"fused": True}, "foreach": {"foreach": True},
                "for_loop": {"foreach": False, "fused": False}}


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW on every parameter: `optimizer_impl` auto = fused on CUDA, single-tensor on CPU."""
    device = next(model.parameters()).device
    impl = optimizer_impl(device, getattr(cfg, "optimizer_impl", "auto"))
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, weight_decay=cfg.weight_decay, **_IMPL_KWARGS[impl])


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


def make_ema(model: torch.nn.Module, decay: float, warmup: bool = True,
             impl: str = "foreach") -> AveragedModel:
    """An EMA copy of `model` (parameters and buffers averaged): ForeachEMA, or the stock path."""
    if impl == "foreach":
        return ForeachEMA(model, decay, warmup)

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
        if isinstance(ema, ForeachEMA):
            ema.restart()
        else:
            ema.n_averaged.zero_()  # AveragedModel copies the weights when n_averaged == 0
    ema.update_parameters(model)


class ForeachEMA(AveragedModel):
    """AveragedModel updated by one `_foreach_lerp_` (floats) and `_foreach_copy_` (integer buffers)
    over tensor lists built once; `n_averaged` is mirrored on the host, so no update reads the device."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        super().__init__(model, use_buffers=True)
        self.decay, self.warmup = decay, warmup
        self._count: int | None = None     # host copy of n_averaged (None: read it once)
        self._lists: tuple | None = None   # (source model id, ema floats, src floats, ema ints, src ints)

    def restart(self) -> None:
        """Next update copies the weights (as AveragedModel with n_averaged == 0)."""
        self._count = 0
        self.n_averaged.zero_()

    def _pairs(self, model: torch.nn.Module) -> tuple:
        if self._lists is None or self._lists[0] != id(model):
            mine = [t.detach() for t in [*self.module.parameters(), *self.module.buffers()]]
            src = [t.detach() for t in [*model.parameters(), *model.buffers()]]
            floats = [i for i, t in enumerate(mine) if t.is_floating_point()]
            ints = [i for i, t in enumerate(mine) if not t.is_floating_point()]
            self._lists = (id(model), [mine[i] for i in floats], [src[i] for i in floats],
                           [mine[i] for i in ints], [src[i] for i in ints])
        return self._lists[1:]

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)  # once, after construction or a state-dict load
        ema_f, src_f, ema_i, src_i = self._pairs(model)
        if self._count == 0:
            torch._foreach_copy_(ema_f, src_f)
        elif ema_f:
            torch._foreach_lerp_(ema_f, src_f, 1.0 - ema_decay(self.decay, self._count, self.warmup))
        if ema_i:
            torch._foreach_copy_(ema_i, src_i)  # integer buffers (BatchNorm counters) follow the model
        self._count += 1
        self.n_averaged.fill_(self._count)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._count, self._lists = None, None
        return out


class Budget:
    """Budget in kimg | steps | seconds; `next_batch` trims the last batch to land exactly."""

    def __init__(self, cfg, batch_size: int):
        self.unit, self.amount = cfg.unit, cfg.amount
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
