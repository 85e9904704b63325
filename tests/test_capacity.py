"""Capacity metrics and capacity matching (bench.metrics.cost, bench.config.capacity): counts, FLOPs and the ±3 % contract."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import architectures
from architectures import create
from bench.config.capacity import match_capacity
from bench.errors import BenchError
from bench.metrics.cost import count_params, forward_flops

DIMS = dict(in_channels=3, out_channels=3, image_size=16)


pytestmark = pytest.mark.usefixtures("one_thread")


class ConvOnly(nn.Module):
    """A denoiser-shaped single conv, for an exact FLOP count."""

    downsample_factor = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x)


def test_count_params_and_conv_flops_are_exact():
    model = ConvOnly()
    assert count_params(model) == 3 * 5 * 9 + 5
    assert forward_flops(model, 3, 8) == 2 * 3 * 5 * 9 * 8 * 8     # 2 FLOPs per multiply-add


def test_flops_count_attention_on_cpu_as_on_meta():
    torch.manual_seed(0)
    cpu = create("unet_tiny", **DIMS)
    with torch.device("meta"):
        meta = create("unet_tiny", **DIMS)
    noattn = create("unet_tiny", **{**DIMS, "attention_resolutions": (), "mid_attention": False})
    assert forward_flops(cpu, 3, 16) == forward_flops(meta, 3, 16)
    assert forward_flops(cpu, 3, 16) > forward_flops(noattn, 3, 16)
    assert cpu.training                                              # mode restored


def test_conv_flops_grow_with_pixels():
    model = create("unet_tiny", **{**DIMS, "image_size": 32, "attention_resolutions": (), "mid_attention": False})
    assert forward_flops(model, 3, 32) == pytest.approx(4 * forward_flops(model, 3, 16), rel=0.01)


def rebuild(arch, kwargs, kind, size=16):
    with torch.device("meta"):
        model = create(arch, **{**DIMS, "image_size": size}, **kwargs)
    return count_params(model) if kind == "params" else forward_flops(model, 3, size)


@pytest.mark.parametrize("arch, target", [("s001_addreslink", "s001_baseline"), ("s001_biggan", "s001_baseline"),
                                          ("s001_convnext", "s001_baseline"), ("dit_s2", "s001_baseline"),
                                          ("unet_tiny", "unet_ddpm_noattn"), ("s002_unet", 5e6)])
def test_params_match_within_3_percent(arch, target):
    kwargs, info = match_capacity(arch, {}, target, kind="params", **DIMS)
    goal = rebuild(target, {}, "params") if isinstance(target, str) else target
    assert info["kind"] == "params" and info["target"] == goal
    assert abs(info["achieved"] / goal - 1) <= 0.03
    key = architectures.width_kwarg(arch)
    assert kwargs[key] == info["width"] and rebuild(arch, kwargs, "params") == info["achieved"]


def test_flops_match_within_3_percent():
    kwargs, info = match_capacity("s001_4dc", {"attention": False}, "s001_baseline", kind="flops", **DIMS)
    goal = rebuild("s001_baseline", {}, "flops")
    assert info["target"] == goal and info["target_arch"] == "s001_baseline"
    assert abs(info["achieved"] / goal - 1) <= 0.03
    assert kwargs["attention"] is False and rebuild("s001_4dc", kwargs, "flops") == info["achieved"]
    assert info["width"] < 64                                        # 4 DoubleConvs per stage cost more


def test_cond_channels_count_in_flops():
    kwargs, info = match_capacity("s002_unet", {"cond_channels": 3}, 2e8, kind="flops", **DIMS)
    assert kwargs["cond_channels"] == 3 and abs(info["rel_error"]) <= 0.03
    with torch.device("meta"):
        cond = create("s002_unet", **DIMS, **kwargs)
        plain = create("s002_unet", **DIMS, **{**kwargs, "cond_channels": 0})
    assert forward_flops(cond, 6, 16) == info["achieved"] > forward_flops(plain, 3, 16)


def test_unreachable_target_says_so():
    with pytest.raises(BenchError, match=r"entry\.match: unet_ddpm cannot reach params .*±3%"):
        match_capacity("unet_ddpm", {}, 5e6, where="entry.match", **{**DIMS, "image_size": 32})


def test_bad_requests_are_bench_errors(monkeypatch):
    with pytest.raises(BenchError, match="choose from flops, params"):
        match_capacity("unet_tiny", {}, 1e5, kind="flop", **DIMS)
    with pytest.raises(BenchError, match="^unknown architecture .unet_dpm."):
        match_capacity("unet_tiny", {}, "unet_dpm", **DIMS)
    with pytest.raises(BenchError, match="positive number"):
        match_capacity("unet_tiny", {}, -1, **DIMS)
    monkeypatch.delitem(architectures._WIDTH_KWARG, "unet_tiny")
    with pytest.raises(BenchError, match="no width keyword"):
        match_capacity("unet_tiny", {}, 1e5, **DIMS)
