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


def active() -> bool:
    """Whether a process group is initialized (torchrun, even with one rank)."""
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


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


def all_max(value: float, device="cpu") -> float:
    """The largest `value` over the ranks (a `seconds` budget: all ranks stop at the same step)."""
    if not active():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())
