"""Conditional inpainting task: masks, conditioning channels, compositing, PSNR of the hole."""
from __future__ import annotations

import math

import pytest
import torch

from bench.config.schema import TaskConfig
from bench.task import (
    Task,
    composite,
    cond_channels,
    inpaint_psnr,
    keep_mask,
    make_condition,
    make_task,
)

TASK = TaskConfig(kind="inpaint", mask="bottom_half")


@pytest.mark.parametrize("mask,hole", [("bottom_half", 32), ("top_half", 32), ("left_half", 32),
                                       ("right_half", 32), ("center", 16)])
def test_masks_hide_the_named_region(mask, hole):
    keep = keep_mask(mask, 8)
    assert keep.shape == (1, 1, 8, 8) and int((keep == 0).sum()) == hole
    if mask == "bottom_half":
        assert keep[0, 0, :4].eq(1).all() and keep[0, 0, 4:].eq(0).all()


def test_condition_carries_known_pixels_and_mask():
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    cond = make_condition(TASK, x0)
    assert cond.shape == (2, 4, 8, 8) and cond_channels(TASK, 3) == 4
    assert torch.equal(cond[:, :3, :4], x0[:, :, :4]) and cond[:, :3, 4:].eq(0).all()
    assert cond_channels(TaskConfig(), 3) == 0


def test_conditioned_model_sees_concatenated_channels():
    seen = {}

    def model(x, t):
        seen["shape"] = x.shape
        return x[:, :3]

    x0 = torch.zeros(2, 3, 8, 8)
    out = make_task(TASK, 3).denoiser(model, x0)(torch.ones(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    assert seen["shape"] == (2, 7, 8, 8) and out.shape == (2, 3, 8, 8)
    plain = make_task(TaskConfig(), 3)
    assert type(plain) is Task and plain.denoiser(model, x0) is model
    assert plain.sampling_net(model, 2) is model and plain.cond_channels == 0


def test_composite_and_psnr_closed_form():
    x0 = torch.zeros(1, 3, 8, 8)
    samples = torch.full((1, 3, 8, 8), 0.2)  # error 0.2 in [-1,1] = 0.1 in [0,1] units
    pasted = composite(TASK, samples, x0)
    assert pasted[:, :, :4].eq(0).all() and torch.allclose(pasted[:, :, 4:], samples[:, :, 4:])
    assert inpaint_psnr(TASK, pasted, x0) == pytest.approx(10 * math.log10(1 / 0.01), rel=1e-5)


def test_task_conditions_samples_on_the_held_out_images_it_is_given():
    heldout = torch.rand(6, 3, 8, 8) * 2 - 1
    asked = []

    def supply(n, offset):
        asked.append((n, offset))
        return heldout[offset:offset + n]

    task = make_task(TASK, 3, supply)
    net = task.sampling_net(lambda x, t: x[:, :3], 2, offset=3)
    assert asked == [(2, 3)] and torch.equal(net.cond, make_condition(TASK, heldout[3:5]))
    samples = torch.zeros(2, 3, 8, 8)
    pasted, metrics = task.finish(samples, offset=3)
    assert torch.equal(pasted, composite(TASK, samples, heldout[3:5]))
    assert metrics == {"inpaint_psnr": inpaint_psnr(TASK, pasted, heldout[3:5])}
    assert make_task(TaskConfig(), 3).finish(samples) == (samples, {})
