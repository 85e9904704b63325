"""The GPU cost a suite's precision is shown with (`bench.device.precision_cost`): NVIDIA's H100/H200
datasheet peaks, dense (67 FP32, 494.7 TF32, 989.4 BF16/FP16 TFLOPS), as ratios to bf16."""
from __future__ import annotations

import pytest

from bench.config.schema import TrainConfig
from bench.device import PEAK_TFLOPS, compute_precision, precision_cost


@pytest.mark.parametrize("amp, tf32, mode, text", [
    ("none", False, "fp32", "fp32, TF32 off: up to ~15x the time of bf16"),
    ("none", True, "tf32", "fp32 with TF32 tensor cores: up to ~2x the time of bf16"),
    ("bf16", False, "bf16", "bf16 autocast: the fast path (989.4 TFLOPS"),
    ("fp16", True, "fp16", "fp16 autocast + GradScaler: the fast path"),
])
def test_precision_cost_is_the_datasheet_peak_ratio_to_bf16(amp, tf32, mode, text):
    cfg = TrainConfig(amp=amp, tf32=tf32)
    assert compute_precision(cfg) == mode and precision_cost(cfg).startswith(text)
    assert PEAK_TFLOPS["bf16"] / PEAK_TFLOPS["fp32"] == pytest.approx(14.77, abs=0.01)
