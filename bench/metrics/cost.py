"""Cost metrics of a denoiser: parameters and forward FLOPs (`torch.utils.flop_counter`, which counts
a multiply-add as 2 FLOPs, as fvcore/DeepSpeed do). Throughput and peak memory are measured where the
work happens (`bench.train` for training img/s, `bench.evaluate.sampling_cost` for sampling).
"""
from __future__ import annotations

import torch

from bench.capacity import count_params, forward_flops


def model_cost(model: torch.nn.Module, in_channels: int, image_size: int) -> dict:
    """{params, gflops}: parameter count and GFLOPs of one forward pass of one image."""
    return {"params": count_params(model),
            "gflops": forward_flops(model, in_channels, image_size) / 1e9}
