"""The contract between the runner and its evaluation hooks: what a hook may read of a run.

A hook is called as `hook(phase, ctx)` at every in-training evaluation (`phase == "train"`, after the
validation loss; `ctx.point` is that evaluation's history point, which later hooks see updated with
earlier hooks' metrics) and once at the end (`phase == "final"`, `ctx.point` is None); it returns
the metrics it measured (or None).

Layering: the concrete context is the dataclass `bench.run.context.RunContext`, built by
`bench.run.build.build_run`. `bench.metrics` sits below `bench.run` in the import graph (arrows only
point down), so the hooks here are typed against `EvalContext`, a `typing.Protocol` naming exactly
the attributes they read; `RunContext` satisfies it structurally (tests/test_context.py checks
that every member listed here exists on it). Hooks above `bench.run` (the Optuna pruner in
`bench.tune`) take `RunContext` itself.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class EvalContext(Protocol):
    spec: Any                         # bench.config.suite.RunSpec of the run
    device: torch.device              # where the run trains and samples
    amp: str                          # autocast mode in effect: bf16 | fp16 | none
    dataset: Any                      # bench.data Dataset: uint8 `train` and `heldout` tensors
    diffusion: Any                    # bench.diffusion.Diffusion of the run
    record: dict                      # the run's result record (result.json being written)
    net: torch.nn.Module | None       # the network evaluated now (EMA or raw, per eval.use_ema)
    state: dict | None                # the training state (bench.train.loop) at this evaluation
    point: dict | None                # this in-training evaluation's history point (None at the end)
    scored: Any                       # the images held-out metrics score (eval.split, subset order)

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def net_for_sampling(self, n: int, offset: int = 0) -> torch.nn.Module: ...

    def generated(self, samples: torch.Tensor, offset: int = 0) -> torch.Tensor: ...

    def heldout(self, n: int, offset: int = 0) -> torch.Tensor: ...


class Hook(Protocol):
    def __call__(self, phase: str, ctx: EvalContext) -> dict | None: ...
