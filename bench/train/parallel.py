"""Data-parallel training steps (PyTorch DistributedDataParallel under torchrun, EDM's way): the
global batch split over the ranks, and over micro-batches on a rank (gradient accumulation).

A step of the global batch of n images (the budget counts global images; the last step of a kimg
budget may be short) gives rank r the share n // W + (r < n mod W) of W ranks, cut into chunks of at
most `train.micro_batch`. Chunk c's loss is its mean times |c| W / n, so that after DDP averages
the gradients over the W ranks the step's gradient is that of the mean loss over all n images,
exactly as one process with the whole batch (a rank with an empty share runs one image at weight 0,
since every rank must join the all-reduce). DDP synchronizes the gradients at the last chunk only
(`no_sync` before). The loss logged per step is Σ_c mean_c |c| / n summed over the ranks at the
next sync point (`bench.train.loop._flush`), the global mean. With one rank and one chunk every
weight is exactly 1 and the step is the plain step, bit for bit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from bench import dist


@dataclass(frozen=True)
class Split:
    """How one step's images are divided: `world` ranks, this `rank`, chunks of <= `micro`."""
    world: int = 1
    rank: int = 0
    micro: int | None = None          # train.micro_batch (None: the rank's whole share at once)

    @classmethod
    def current(cls, micro: int | None = None) -> Split:
        return cls(dist.world(), dist.rank(), micro)

    def share(self, n: int) -> int:
        """This rank's images of a global batch of n."""
        return n // self.world + (self.rank < n % self.world)

    def chunks(self, x: torch.Tensor, n: int) -> list[tuple[torch.Tensor, float]]:
        """(chunk, loss weight) of this rank's share `x` of a global batch of n images."""
        if len(x) == 0:
            raise ValueError("Split.chunks: pass at least one image (an empty share runs one at weight 0)")
        share = self.share(n)
        if share == 0:
            return [(x[:1], 0.0)]
        size = self.micro or share
        return [(c, len(c) * self.world / n) for c in x[:share].split(size)]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """`model` under DistributedDataParallel when this process runs in a torchrun group."""
    if not dist.active():
        return model
    device = next(model.parameters()).device
    if device.type != "cuda":
        return DistributedDataParallel(model)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return DistributedDataParallel(model, device_ids=[index], output_device=index)


def sync_at(net: torch.nn.Module, last: bool):
    """DDP's gradient all-reduce only at the last chunk of a step (`no_sync` before it)."""
    if last or not isinstance(net, DistributedDataParallel):
        return contextlib.nullcontext()
    return net.no_sync()
