"""CUDA graphs for the fixed-shape sampling loop (`eval.cuda_graphs`): the denoiser call of every
sampling step is captured once per input shape and replayed, removing the per-kernel launch cost
that dominates a small-image U-Net at large batch.

Follows PyTorch's "CUDA Graphs" notes (torch.cuda.graph, whole-network capture): warm up on a side
stream, capture with static input buffers, copy each step's inputs into them and replay. Autocast's
weight-cast cache must be off while capturing (a cached bf16 copy of a weight would be freed when
the autocast context exits while the graph still reads it), so capture and warm-up run under
`torch.autocast(..., cache_enabled=False)` with the caller's dtype; the graph then re-casts weights
on each replay from the live fp32 weights, so in-place weight updates (EMA) are seen by replays.

The capture itself is the only CUDA-specific part: `GraphedDenoiser` takes the capture function
as a parameter, so its bookkeeping (one capture per shape, static-buffer copies, cloned outputs,
autocast state) is tested on the CPU with a replaying stand-in (tests/test_sampling_precision.py).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

Capture = Callable[[Callable, tuple], tuple]  # (fn, static inputs) -> (static output, replay())


def cuda_capture(fn: Callable, inputs: tuple, warmup: int = 3) -> tuple:
    """Capture `fn(*inputs)` into a CUDA graph (after `warmup` side-stream calls)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*inputs)
    return out, graph.replay


class GraphedDenoiser(nn.Module):
    """`model(x, t)` replayed from one captured graph per (shape, dtype, autocast) of the inputs."""

    def __init__(self, model: nn.Module, capture: Capture = cuda_capture):
        super().__init__()
        self.model, self.capture = model, capture
        self.graphs: dict[tuple, tuple] = {}

    def _autocast_state(self, device_type: str) -> tuple:
        enabled = torch.is_autocast_enabled(device_type)
        return enabled, torch.get_autocast_dtype(device_type) if enabled else None

    def _record(self, x: torch.Tensor, t: torch.Tensor, autocast: tuple) -> tuple:
        static_x, static_t = x.clone(), t.clone()
        enabled, dtype = autocast

        def fn(a, b):
            with torch.no_grad(), torch.autocast(a.device.type, dtype=dtype or torch.bfloat16,
                                                 enabled=enabled, cache_enabled=False):
                return self.model(a, b)

        out, replay = self.capture(fn, (static_x, static_t))
        return static_x, static_t, out, replay

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        autocast = self._autocast_state(x.device.type)
        key = (tuple(x.shape), x.dtype, tuple(t.shape), t.dtype, x.device, autocast)
        if key not in self.graphs:
            self.graphs[key] = self._record(x, t, autocast)
        static_x, static_t, out, replay = self.graphs[key]
        static_x.copy_(x)
        static_t.copy_(t)
        replay()
        return out.clone()  # the static output is overwritten by the next replay


def maybe_graphed(model: nn.Module, enabled: bool, device) -> nn.Module:
    """The model wrapped for CUDA-graph replay when asked and on CUDA; else the model itself."""
    if enabled and torch.device(device).type == "cuda":
        return GraphedDenoiser(model)
    return model
