"""RunContext: the typed context hooks see; it satisfies the metrics-side EvalContext protocol."""
from __future__ import annotations

import typing

import pytest
import torch

from bench.config.suite import parse_suite
from bench.data import load_dataset
from bench.errors import BenchError
from bench.images import to_float
from bench.metrics.hook import EvalContext
from bench.metrics.subset import select
from bench.run.build import build_run
from bench.run.context import RunContext

RAW = {"name": "ctx", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 16,
                               "holdout": 0.25},
       "diffusion": {"timesteps": 100}, "budget": {"steps": 1},
       "train": {"batch_size": 4, "device": "cpu"}, "eval": {"val_images": 4, "sample_batch": 4},
       "models": [{"arch": "unet_tiny"}], "seeds": [0]}


def _context(**task) -> RunContext:
    spec = parse_suite({**RAW, "task": task}, "test").runs[0]
    return build_run(spec, load_dataset(spec.data), torch.device("cpu"))


def test_run_context_has_every_member_of_the_hook_protocol():
    ctx = _context()
    members = [*typing.get_type_hints(EvalContext), "shape", "net_for_sampling", "heldout"]
    assert all(hasattr(ctx, m) for m in members) and isinstance(ctx, EvalContext)
    assert ctx.shape == (3, 8, 8) and ctx.amp == "none" and ctx.record["status"] == "running"


def test_heldout_slices_convert_and_refuse_beyond_the_split():
    ctx = _context()
    held = ctx.dataset.heldout
    order = select(len(held), len(held), "random", 0)             # eval.subset, eval.subset_seed
    assert torch.equal(ctx.scored.images, held[order]) and ctx.scored.split == "heldout"
    assert torch.equal(ctx.heldout(2, 1), to_float(held[order[1:3]]))
    with pytest.raises(BenchError, match=f"needs {len(held) + 1} held-out images"):
        ctx.heldout(len(held), 1)


def test_net_for_sampling_is_the_evaluated_net_or_its_conditioned_wrapper():
    plain = _context()
    with pytest.raises(RuntimeError, match="evaluating"):
        plain.net_for_sampling(2)
    view = plain.evaluating(plain.model, {"images": 0})
    assert view.net_for_sampling(2, 1) is plain.model and view.record is plain.record
    inpaint = _context(kind="inpaint")
    wrapped = inpaint.evaluating(inpaint.model).net_for_sampling(2, 1)
    assert wrapped.model is inpaint.model
    assert torch.equal(wrapped.cond[:, :3], to_float(inpaint.scored.images[1:3]) *
                       wrapped.cond[:, 3:])
