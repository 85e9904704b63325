"""Inpainting as study 002 trains it (§2.1-2.2): the loss on the hole only (`task.loss_on: hole`,
exactly blind to the known region), the pasted input (clean known half + noisy unknown half,
`task.condition: paste`), their checks, run ids of the default unchanged, and a tiny run."""
from __future__ import annotations

import pytest
import torch

from bench.config.schema import DiffusionConfig, TaskConfig
from bench.config.suite import parse_suite
from bench.data import load_dataset
from bench.diffusion import Diffusion
from bench.errors import BenchError
from bench.run.evaluate import validation_loss
from bench.run.runner import run_one
from bench.task import cond_channels, keep_mask, make_task

THEIRS = TaskConfig(kind="inpaint", mask="bottom_half", condition="paste", loss_on="hole")


class Scripted(torch.nn.Module):
    """A 'denoiser' returning a fixed prediction (plus a tiny parameter, so eval_mode works)."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out, self.w = out, torch.nn.Parameter(torch.zeros(()))
        self.seen = None

    def forward(self, x, t):
        self.seen = x
        return self.out + 0 * self.w


def test_hole_loss_ignores_the_known_region_exactly():
    diffusion = Diffusion.from_config(DiffusionConfig(timesteps=100))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1, torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([5, 50, 99])
    pred = torch.randn(3, 3, 8, 8, generator=g)
    hole = make_task(THEIRS, 3).loss_mask(x0)
    assert hole.shape == (1, 1, 8, 8) and int(hole.sum()) == 32 and hole[0, 0, 4:].eq(1).all()
    loss = diffusion.loss(Scripted(pred), x0, t=t, noise=noise, mask=hole)[0]
    by_hand = ((pred - noise)[:, :, 4:] ** 2).mean(dim=(1, 2, 3))      # their F.mse_loss on the half
    assert torch.allclose(loss, by_hand, rtol=1e-6, atol=0)
    perturbed = pred.clone()
    perturbed[:, :, :4] += 100.0                                       # anything in the known half
    again = diffusion.loss(Scripted(perturbed), x0, t=t, noise=noise, mask=hole)[0]
    assert torch.equal(again, loss)
    full = diffusion.loss(Scripted(perturbed), x0, t=t, noise=noise)[0]
    assert (full > loss + 100).all()                                   # loss_on: all sees it
    assert make_task(TaskConfig(kind="inpaint"), 3).loss_mask(x0) is None


def test_paste_feeds_the_clean_known_half_and_the_noisy_unknown_half():
    x0, x_t = torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8)
    model = Scripted(torch.zeros(2, 3, 8, 8))
    task = make_task(THEIRS, 3)
    assert task.cond_channels == 0 and cond_channels(THEIRS, 3) == 0
    assert cond_channels(TaskConfig(kind="inpaint"), 3) == 4           # concat: x0*keep and the mask
    task.denoiser(model, x0)(x_t, torch.zeros(2, dtype=torch.long))
    assert model.seen.shape == (2, 3, 8, 8)
    assert torch.equal(model.seen[:, :, :4], x0[:, :, :4])             # clean top half
    assert torch.equal(model.seen[:, :, 4:], x_t[:, :, 4:])            # noisy bottom half
    other = x_t.clone()
    other[:, :, :4] = 7.0                                              # x_t's known half is unseen
    task.denoiser(model, x0)(other, torch.zeros(2, dtype=torch.long))
    assert torch.equal(model.seen[:, :, :4], x0[:, :, :4])


def test_what_fid_scores_is_the_composite_only_when_the_hole_alone_is_trained():
    given = torch.rand(2, 3, 8, 8) * 2 - 1
    samples = torch.full((2, 3, 8, 8), 0.5)
    keep = keep_mask("bottom_half", 8)
    pasted = make_task(THEIRS, 3, lambda n, offset: given[offset:offset + n]).generated(samples)
    assert torch.equal(pasted, keep * given + (1 - keep) * samples)
    concat = make_task(TaskConfig(kind="inpaint"), 3, lambda n, offset: given).generated(samples)
    assert concat is samples


def _raw(task):
    return {"name": "ip", "task": task,
            "data": {"dataset": "synthetic", "image_size": 8, "num_images": 64, "holdout": 0.25},
            "budget": {"kimg": 0.032}, "train": {"batch_size": 8, "device": "cpu"},
            "eval": {"steps": 2, "grid": 4, "sample_batch": 4, "val_images": 8, "metric": "inpaint_psnr",
                     "direction": "maximize"},
            "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}]}


def test_default_task_keys_leave_inpaint_run_ids_unchanged():
    plain = parse_suite(_raw({"kind": "inpaint"}), "ip.yaml").runs[0]
    spelled = parse_suite(_raw({"kind": "inpaint", "condition": "concat", "loss_on": "all"}),
                          "ip.yaml").runs[0]
    assert plain.run_id == spelled.run_id and set(plain.config()["task"]) == {"kind", "mask"}
    theirs = parse_suite(_raw({"kind": "inpaint", "condition": "paste", "loss_on": "hole"}), "ip.yaml")
    assert theirs.runs[0].run_id != plain.run_id
    assert theirs.runs[0].config()["task"]["condition"] == "paste"


@pytest.mark.parametrize("task, expect", [
    ({"kind": "inpaint", "condition": "paste"}, "task.loss_on: task.condition 'paste' shows"),
    ({"loss_on": "hole"}, "task.loss_on: 'hole' needs task.kind: inpaint"),
    ({"kind": "inpaint", "condition": "stack"}, "task.condition: unknown value 'stack'"),
])
def test_bad_inpaint_settings_are_one_line_errors(task, expect):
    with pytest.raises(BenchError, match=expect) as err:
        parse_suite(_raw(task), "ip.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("ip.yaml: ")


def test_a_tiny_run_trains_their_inpainting_and_validates_on_the_hole(tmp_path, one_thread):
    spec = parse_suite(_raw({"kind": "inpaint", "condition": "paste", "loss_on": "hole"}),
                       "ip.yaml").runs[0]
    dataset = load_dataset(spec.data)
    record = run_one(spec, tmp_path / "run", dataset, progress=False, tensorboard=False)
    assert record["status"] == "complete" and record["budget"]["images"] == 32
    assert 0 < record["metrics"]["inpaint_psnr"] < 60
    net = Scripted(torch.zeros(1))
    diffusion = Diffusion.from_config(spec.diffusion)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    t, noise = torch.tensor([0, 10, 500, 999]), torch.randn(4, 3, 8, 8)
    val = validation_loss(net, diffusion, (x0, t, noise), 4, task=make_task(spec.task, 3))
    assert val["val_loss"] == pytest.approx(float((noise[:, :, 4:] ** 2).mean()), rel=1e-6)
