"""`RunContext`: one run's parts (spec, folder, device, data, model, diffusion, task, record), typed.

Built by `bench.run.build.build_run` for both a training run (`bench.run.runner`) and the
evaluation of a finished one (`bench.run.curves`). The per-evaluation state — the network evaluated
(`net`), the training state (`state`) and the history point (`point`) — is None on the base context;
`ctx.evaluating(net, state, point)` returns a copy with it filled in, which is what every hook sees.

Hooks read it through `bench.metrics.hook.EvalContext` (a Protocol: `bench.metrics` may not import
`bench.run`); this dataclass satisfies it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.config.suite import RunSpec
from bench.data import Dataset, DeviceBatches, eval_split
from bench.diffusion import Diffusion
from bench.images import heldout_images, hw
from bench.metrics.subset import protocol, select
from bench.task import Task


@dataclass(frozen=True)
class ScoredImages:
    """The images the held-out metrics score (`eval.split`), in the seeded `eval.subset` order: a
    metric that needs N images takes the first N, so every entry and seed scores the same ones."""
    images: torch.Tensor              # uint8 [M, C, H, W], ordered
    labels: torch.Tensor | None       # int64 [M] or None, same order
    split: str                        # heldout | test
    source: str                       # which images those are (the dataset's split description)
    subset: str                       # random | stratified
    seed: int                         # eval.subset_seed

    @classmethod
    def of(cls, dataset: Dataset, cfg, split: str) -> ScoredImages:
        images, labels, source = eval_split(dataset, split)
        order = select(len(images), len(images), cfg.subset, cfg.subset_seed, labels)
        return cls(images[order], None if labels is None else labels[order], split, source,
                   cfg.subset, cfg.subset_seed)

    def protocol(self, n: int) -> dict:
        """The record of the first `n` of these images (split, rule, seed, N, classes spanned)."""
        k = min(n, len(self.images))
        return protocol(self.split, self.subset, self.seed, n, self.labels, torch.arange(k),
                        self.source)


@dataclass
class RunContext:
    spec: RunSpec                     # the run (resolved config, seed, id)
    run_dir: Path | None              # its folder (result.json, checkpoint.pt, samples.png)
    device: torch.device              # where it trains and samples
    flags: dict                       # precision flags in effect (bench.device.precision_flags)
    dataset: Dataset                  # uint8 train / heldout images
    model: torch.nn.Module            # the raw denoiser being trained
    diffusion: Diffusion
    task: Task                        # wraps the denoiser, supplies conditioning images
    batches: DeviceBatches            # training batches (data order generator inside)
    noise_gen: torch.Generator        # training noise / timestep generator
    triples: tuple                    # fixed validation (x0, t, noise), bench.run.evaluate
    scored: ScoredImages | None = None      # eval.split in eval.subset order (held-out metrics)
    val_scored: ScoredImages | None = None  # the same for the validation loss (eval.val_split)
    record: dict = field(default_factory=dict)  # the result record being written
    net: torch.nn.Module | None = None  # per evaluation: the network evaluated (EMA or raw)
    state: dict | None = None         # per evaluation: the training state (bench.train.loop)
    point: dict | None = None         # per in-training evaluation: its history point

    @property
    def amp(self) -> str:
        """Autocast mode in effect (bf16 | fp16 | none)."""
        return self.flags["amp"]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a generated image."""
        return (self.spec.data.channels, *hw(self.spec.data.image_size))

    def evaluating(self, net: torch.nn.Module, state: dict | None = None,
                   point: dict | None = None) -> RunContext:
        """This context at one evaluation of `net` (same record, same parts)."""
        return dataclasses.replace(self, net=net, state=state, point=point)

    def heldout(self, n: int, offset: int = 0) -> torch.Tensor:
        """The scored images [offset, offset + n) (eval.split, eval.subset order) in [-1, 1]."""
        return heldout_images(self.scored.images, n, offset, self.device)

    def net_for_sampling(self, n: int, offset: int = 0) -> torch.nn.Module:
        """The evaluated network to draw `n` samples with (conditioned, for conditional tasks, on
        held-out images [offset, offset + n))."""
        if self.net is None:
            raise RuntimeError("RunContext.net_for_sampling: no network; use ctx.evaluating(net)")
        return self.task.sampling_net(self.net, n, offset)

    def generated(self, samples: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """What the model generated of samples drawn with `net_for_sampling(len, offset)`: the
        samples, or with `task.loss_on: hole` the known pixels pasted back (the rest is untrained)."""
        return self.task.generated(samples, offset)
