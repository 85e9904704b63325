"""The process group as the metrics and the training loop see it: rank, world size, and the few
collectives they need (torch.distributed; every function is the single-process identity when no
group is initialized, so nothing below `bench.run` needs to know whether it runs under torchrun).

Sharding rule of sampling (`shard`): the batches of a sample stream are dealt out round-robin,
batch b to rank b mod world (EDM's `generate.py` deals its batches the same way); since every image's
noise is a function of (seed, image index) alone (`bench.noise`), the gathered set is the same images
whatever the world size. `gather_ordered` brings the per-batch results back to rank 0 in index order.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

_ALONE = False   # set by `alone()`: this process goes on by itself (rank 0 after the training)


def active() -> bool:
    """Whether this process runs with its torchrun group (initialized, even with one rank)."""
    return not _ALONE and dist.is_available() and dist.is_initialized()


def alone() -> None:
    """From now on this process does without the group (every collective here the identity): rank 0
    once the other ranks have left, for work that is not sharded (eval variants, the report)."""
    global _ALONE
    _ALONE = True


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def backend() -> str | None:
    """The group's backend (gloo, nccl, or cpu:gloo,cuda:nccl); None without a group."""
    return str(dist.get_backend()) if active() else None


def is_main() -> bool:
    return rank() == 0


def shard(starts: list[int]) -> list[int]:
    """This rank's batches of a stream: those at positions b with b mod world == rank."""
    return starts[rank()::world()]


def barrier() -> None:
    if active():
        dist.barrier()


def gather_ordered(parts: list[tuple[int, np.ndarray]]) -> np.ndarray | None:
    """Every rank's (start index, rows) gathered on rank 0 and concatenated in index order (None
    on the other ranks; the rows themselves without a group)."""
    if active():
        everyone = [None] * world() if is_main() else None
        dist.gather_object(parts, everyone, dst=0)
        if not is_main():
            return None
        parts = [p for rank_parts in everyone for p in rank_parts]
    parts = sorted(parts, key=lambda p: p[0])
    return np.concatenate([rows for _, rows in parts]) if parts else None


def broadcast(obj):
    """Rank 0's `obj` on every rank (what rank 0 measured, so every rank decides alike)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def all_max(*values: float) -> list[float]:
    """The largest of each value over the ranks (the training clock: all ranks stop at one step)."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `t` over the ranks (a new tensor; `t` itself without a group)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
