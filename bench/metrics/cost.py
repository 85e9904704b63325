"""Cost metrics of a denoiser: parameters and forward FLOPs (`torch.utils.flop_counter`, which counts
a multiply-add as 2 FLOPs, as fvcore/DeepSpeed do). FLOPs come from a batch-1 forward with attention
forced to the math SDPA kernel, so attention matmuls are counted on every device (PyTorch's CPU
flash-attention op has no FLOP formula and would count as zero). Throughput and peak memory are
measured where the work happens (`bench.train.loop` for training img/s,
`bench.metrics.sampling.sampling_cost` for sampling).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bench.images import hw


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, in_channels: int, image_size) -> int:
    """FLOPs (2 per multiply-add) of one forward of one image and its timestep.

    `in_channels` is what the model reads (image plus any conditioning channels). Works for models
    on any device, meta included; the model's train/eval mode is restored afterwards.
    """
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.zeros(1, in_channels, *hw(image_size), device=device, dtype=dtype)  # S or (H, W)
    t = torch.zeros(1, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x, t)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_cost(model: torch.nn.Module, in_channels: int, image_size) -> dict:
    """{params, gflops}: parameter count and GFLOPs of one forward pass of one image."""
    return {"params": count_params(model),
            "gflops": forward_flops(model, in_channels, image_size) / 1e9}
