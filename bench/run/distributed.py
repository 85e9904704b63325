"""`torchrun --nproc_per_node N -m bench run SUITE`: each run of the suite trained data-parallel
over the N ranks (PyTorch DistributedDataParallel, as EDM's `train.py` and AlgoPerf run it).

The group is initialized from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT): gloo on
a CPU, `cpu:gloo,cuda:nccl` where CUDA is available (NCCL for the gradients, gloo for the few CPU
collectives), each rank on cuda:LOCAL_RANK. Rank 0 drives the suite exactly as a plain `bench run`
(skips, resumes, claims, leaderboard) and announces each run it trains (`announce`); the other
ranks follow (`follow`): they build the same run and take part in its training steps and its
sharded FID sampling, and write nothing (`bench.run.results`). Once the runs are trained, rank 0
releases the followers (`release`) and evaluates any `eval.variants` and the report alone.

What a run means under DDP is in `bench.train.parallel` (global batch, gradient accumulation),
`bench.train.clock` (one clock over the ranks), `bench.run.build` (per-rank seeds) and
`bench.metrics.quality` (sharded sampling, features gathered on rank 0).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as tdist

from bench import dist
from bench.errors import BenchError

FOLLOW_TIMEOUT = timedelta(hours=2)  # longest a rank waits for the others (rank 0 between runs)


def launched() -> bool:
    """Whether this process was started by torchrun (its environment names a rank and a world)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start() -> None:
    """Join the torchrun group (no-op outside torchrun, or when already joined)."""
    if not launched() or tdist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    tdist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=FOLLOW_TIMEOUT)


def check(suite) -> None:
    """Refuse, before any work, a run whose global batch does not split over the ranks."""
    world = dist.world()
    if world == 1:
        return
    for spec in suite.runs:
        where = f"{suite.path}: {spec.entry.name}: train"
        if spec.train.batch_size % world:
            raise BenchError(f"{where}.batch_size: {spec.train.batch_size} does not split over the "
                             f"{world} ranks of this torchrun job; choose a multiple of {world}")
        if spec.train.device.startswith("cuda:"):
            raise BenchError(f"{where}.device: {spec.train.device} under torchrun; use auto or "
                             f"cuda (rank r trains on cuda:LOCAL_RANK)")


def follower() -> bool:
    """Whether this process follows rank 0 (a rank > 0 of a torchrun job)."""
    return dist.active() and not dist.is_main()


def announce(run_id: str) -> None:
    """Rank 0, before training a run: tell the followers which one."""
    if dist.active() and dist.is_main():
        dist.broadcast(run_id)


def release() -> None:
    """Rank 0, once every run is trained: the followers leave; rank 0 goes on alone."""
    if dist.active() and dist.is_main():
        dist.broadcast(None)
        dist.alone()


def follow(suite, run: Callable) -> int:
    """A follower's `bench run`: `run(spec)` for each run rank 0 announces, until it releases us."""
    by_id = {spec.run_id: spec for spec in suite.runs}
    while (run_id := dist.broadcast(None)) is not None:
        run(by_id[run_id])
    stop()
    return 0


def stop() -> None:
    """Leave the group at the end of the command (no-op without one)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
