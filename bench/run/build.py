"""`build_run`: the one path from a `RunSpec` to a `RunContext` (model, diffusion, task, batches,
generators, validation triples, precision flags, record), used by `bench run` (`bench.run.runner`)
and by the evaluation of a finished run (`bench.run.curves`), so both see the very same parts.

Everything is seeded from the run's seed: weight init by `torch.manual_seed(seed)`, the data order
and flips by a generator seeded `seed`, the training noise by one seeded `seed + 1_000_003`. Under
torchrun rank r's data order and noise are seeded the same way from `rank_seed(seed, r)` (rank 0:
the seed itself, so a one-rank job trains as a plain run) and its batches hold its share
`train.batch_size / world` of the global batch.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from architectures import create
from bench import dist
from bench.config.suite import RunSpec
from bench.data import Dataset, DeviceBatches
from bench.device import precision_flags
from bench.edm import make_diffusion
from bench.images import heldout_images
from bench.noise import image_seed
from bench.run.context import RunContext, ScoredImages
from bench.run.evaluate import validation_triples
from bench.run.results import CHECKPOINT, SAMPLES, environment
from bench.task import make_task


def build_run(spec: RunSpec, dataset: Dataset, device: torch.device, run_dir: str | Path | None = None,
              record: dict | None = None) -> RunContext:
    """The run's context; `record` is the result being written (a fresh `running` one if None)."""
    flags = precision_flags(device, spec.train)
    scored = ScoredImages.of(dataset, spec.eval, spec.eval.split)
    val = scored if (spec.eval.val_split or spec.eval.split) == spec.eval.split else ScoredImages.of(
        dataset, spec.eval, spec.eval.val_split)
    task = make_task(spec.task, spec.data.channels, partial(heldout_images, scored.images,
                                                            device=device))
    torch.manual_seed(spec.seed)  # weight init
    model = create(spec.entry.arch, in_channels=spec.data.channels, out_channels=spec.data.channels,
                   image_size=spec.data.image_size, cond_channels=task.cond_channels or None,
                   **spec.entry.kwargs).to(device)
    if spec.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    seed = rank_seed(spec.seed, dist.rank() if dist.active() else 0)
    data_gen = torch.Generator(device).manual_seed(seed)
    noise_gen = torch.Generator(device).manual_seed(seed + 1_000_003)
    batches = DeviceBatches(dataset.train.to(device), spec.train.batch_size // dist.world(),
                            data_gen, flip=spec.data.flip)
    diffusion = make_diffusion(spec.diffusion)
    triples = validation_triples(val.images, spec.eval.val_images, spec.eval.val_t_per_image,
                                 diffusion.T, device)
    return RunContext(spec=spec, run_dir=Path(run_dir) if run_dir is not None else None,
                      device=device, flags=flags, dataset=dataset, model=model, diffusion=diffusion,
                      task=task, batches=batches, noise_gen=noise_gen, triples=triples,
                      scored=scored, val_scored=val,
                      record=new_record(spec, device, flags, dataset) if record is None else record)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s data order (+ 1_000_003: its training noise): a hash of
    (seed, rank), the seed itself on rank 0."""
    return seed if rank == 0 else image_seed(seed, rank, "rank")


def parallel_record(spec: RunSpec) -> dict:
    """How the run was split: world size (1 without torchrun), per-rank batch, micro-batch."""
    world = dist.world()
    return {"world_size": world, "backend": dist.backend(), "rank_batch": spec.train.batch_size // world,
            "micro_batch": spec.train.micro_batch}


def new_record(spec: RunSpec, device: torch.device, flags: dict, dataset: Dataset) -> dict:
    """The result record of a run that has just started (`status: running`)."""
    return {"suite": spec.suite, "entry": spec.entry.name, "arch": spec.entry.arch,
            "seed": spec.seed, **({} if spec.fold is None else {"fold": spec.fold}),
            "run_id": spec.run_id, "status": "running",
            "config": spec.config(), "capacity": spec.capacity, "metrics": {}, "history": [],
            "budget": {}, "timing": {}, "data": dataset.info,
            "environment": environment(device, flags), "parallel": parallel_record(spec),
            "files": {"samples": SAMPLES, "checkpoint": CHECKPOINT}}
