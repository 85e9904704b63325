"""Sampling a denoiser under the suite's evaluation protocol: the fixed-noise grid (the same x_T for
every entry of a suite, study 001's figures), batched sampling in eval mode, and sampling cost
(img/s, peak GPU memory). Used by the runner (grid, cost) and the quality hooks (FID samples).

Precision: under bf16 autocast only the network runs in bf16; its output is cast to fp32 by every
sampler and x_t is accumulated in fp32 (autocast leaves the samplers' elementwise updates in
fp32). Measured on the CPU twin (tests/test_sampling_precision.py): DDIM samples from bf16 and
fp32 networks agree to 0.02 max abs (about 2.5 uint8 levels) for a smooth denoiser, and to 5e-3
mean abs for a random-weight U-Net, whose DDIM trajectories are chaotic near the clip bounds.
`eval.cuda_graphs` replays the network call from a CUDA graph (bench/metrics/cuda_graphs.py).

Noise: image i of a stream with seed s draws all its noise from its own generator
(`bench.noise.ImageNoise`, EDM's per-image seeds), so `sample(..., n, start=k)` returns images
k..k+n-1 of the stream, bit for bit the same whatever the batch size or the rank that draws them.
"""
from __future__ import annotations

import time

import torch

from bench.device import autocast
from bench.metrics.cuda_graphs import maybe_graphed
from bench.noise import ImageNoise, grid_noise
from bench.samplers import SAMPLERS

__all__ = ["grid_noise", "sample", "sampling_cost"]  # grid_noise: the grid's fixed x_T (bench.noise)


@torch.no_grad()
def sample(model, diffusion, eval_cfg, n: int, shape, *, noise=None, seed: int = 0,
           amp: str = "none", device="cpu", start: int = 0) -> torch.Tensor:
    """Images [start, start + n) of the stream `seed` with the suite's sampler (float in [-1, 1]),
    in eval mode; `noise` (x_T of those images) replaces the stream's own first draw."""
    was_training = model.training
    model.eval()
    gen = ImageNoise(seed, range(start, start + n), device)
    net = maybe_graphed(model, getattr(eval_cfg, "cuda_graphs", False), device)
    with autocast(torch.device(device), amp):
        out = SAMPLERS[eval_cfg.sampler](net, diffusion, (n, *shape), steps=eval_cfg.steps,
                                         generator=gen, device=device, noise=noise,
                                         **eval_cfg.sampler_opts)
    model.train(was_training)
    return out.float()


def sampling_cost(model, diffusion, eval_cfg, shape, *, amp: str, device) -> dict:
    """Sampling throughput (img/s over one batch of `eval.sample_batch`) and its peak GPU memory."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    sample(model, diffusion, eval_cfg, eval_cfg.sample_batch, shape, seed=1, amp=amp, device=device)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"sample_img_per_s": eval_cfg.sample_batch / seconds, "sample_seconds": seconds,
            "peak_mem_sample_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}
