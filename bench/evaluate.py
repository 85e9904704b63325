"""Evaluation pieces every run gets: validation loss (overall and per quarter of t), the fixed-noise
sample grid, and sampling cost (img/s, peak GPU memory).

The validation set is a fixed list of (held-out image, timestep, noise) triples drawn from a
generator with a constant seed, with timesteps stratified over [0, T): every model, seed and
evaluation sees the very same triples, so validation losses are comparable across a suite (study
000 tracked validation loss; study 003 split by t). The grid noise depends only on `eval.grid_seed`
and the image shape, so `samples.png` grids are comparable across models (study 001's figures).
"""
from __future__ import annotations

import time

import torch

from bench.device import autocast
from bench.samplers import SAMPLERS
from bench.task import conditioned

VAL_SEED = 20_240_601  # constant: the validation triples are the same for every run


def validation_triples(heldout: torch.Tensor, n_images: int, t_per_image: int, T: int, device):
    """Fixed (x0 in [-1,1], t, noise): `n_images` held-out images × stratified timesteps."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    n = min(n_images, len(heldout))
    pick = torch.randperm(len(heldout), generator=gen)[:n]
    x0 = heldout[pick].float().div(127.5).sub(1).repeat_interleave(t_per_image, 0)
    k = n * t_per_image
    strata = (torch.arange(k) + torch.rand(k, generator=gen, dtype=torch.float64)) / k
    t = (strata * T).long().clamp(max=T - 1)[torch.randperm(k, generator=gen)]
    noise = torch.randn(x0.shape, generator=gen)
    return x0.to(device), t.to(device), noise.to(device)


@torch.no_grad()
def validation_loss(model, diffusion, triples, batch_size: int, amp: str = "none",
                    task=None) -> dict:
    """Mean loss over the fixed triples, and per quarter of the timestep range (q1 = smallest t)."""
    x0, t, noise = triples
    losses = []
    was_training = model.training
    model.eval()
    with autocast(x0.device, amp):
        for i in range(0, len(x0), batch_size):
            sl = slice(i, i + batch_size)
            net = model if task is None else conditioned(model, task, x0[sl])
            losses.append(diffusion.loss(net, x0[sl], t=t[sl], noise=noise[sl])[0].float())
    model.train(was_training)
    loss = torch.cat(losses)
    quarter = (t * 4 // diffusion.T).clamp(max=3)
    result = {"val_loss": loss.mean().item()}
    for q in range(4):
        chosen = loss[quarter == q]
        result[f"val_loss_q{q + 1}"] = chosen.mean().item() if len(chosen) else None
    return result


def grid_noise(n: int, shape: tuple[int, int, int], seed: int, device) -> torch.Tensor:
    """The suite-wide fixed x_T of the sample grid (drawn on the CPU: same on every device)."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def sample(model, diffusion, eval_cfg, n: int, shape, *, noise=None, seed: int = 0,
           amp: str = "none", device="cpu") -> torch.Tensor:
    """`n` samples with the suite's sampler (float in [-1, 1]), in eval mode."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device).manual_seed(seed)
    with autocast(torch.device(device), amp):
        out = SAMPLERS[eval_cfg.sampler](model, diffusion, (n, *shape), steps=eval_cfg.steps,
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
