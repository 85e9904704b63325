"""Validation loss of a run (overall and per quarter of t) on fixed held-out triples.

The validation set is a fixed list of (held-out image, timestep, noise) triples: the images are the
first N of the `eval.val_split` in the seeded `eval.subset` order, timesteps and noise are drawn from
a generator with a constant seed, with timesteps stratified over [0, T): every model, seed and
evaluation sees the very same triples, so validation losses are comparable across a suite (study
000 tracked validation loss; study 003 split by t). Formulation edm (bench.edm) reads a triple's t
as stratum t of T of its training σ distribution (σ at the (t + ½)/T quantile of the log-normal) and
scores its loss λ(σ)‖D − x_0‖² there, so its q1..q4 are the quartiles of p_train(σ), smallest σ
first; its losses are on EDM's scale, not comparable with the DDPM losses. The grid noise depends only on `eval.grid_seed`
and the image shape (`bench.metrics.sampling`), so `samples.png` grids are comparable across models.
"""
from __future__ import annotations

import torch

from bench.device import autocast, eval_mode
from bench.images import to_float
from bench.task import UNCONDITIONAL, Task

VAL_SEED = 20_240_601  # constant: the validation triples are the same for every run


def validation_triples(heldout: torch.Tensor, n_images: int, t_per_image: int, T: int, device):
    """Fixed (x0 in [-1,1], t, noise): the first `n_images` of the held-out images (already in the
    seeded `eval.subset` order, `bench.run.build.ScoredImages`) × stratified timesteps."""
    gen = torch.Generator().manual_seed(VAL_SEED)
    n = min(n_images, len(heldout))
    x0 = to_float(heldout[:n]).repeat_interleave(t_per_image, 0)
    k = n * t_per_image
    strata = (torch.arange(k) + torch.rand(k, generator=gen, dtype=torch.float64)) / k
    t = (strata * T).long().clamp(max=T - 1)[torch.randperm(k, generator=gen)]
    noise = torch.randn(x0.shape, generator=gen)
    return x0.to(device), t.to(device), noise.to(device)


@torch.no_grad()
def validation_loss(model, diffusion, triples, batch_size: int, amp: str = "none",
                    task: Task = UNCONDITIONAL) -> dict:
    """Mean loss over the fixed triples, and per quarter of the timestep range (q1 = smallest t)."""
    x0, t, noise = triples
    losses = []
    with eval_mode(model), autocast(x0.device, amp):
        for i in range(0, len(x0), batch_size):
            sl = slice(i, i + batch_size)
            net = task.denoiser(model, x0[sl])
            losses.append(diffusion.loss(net, x0[sl], t=t[sl], noise=noise[sl],
                                         mask=task.loss_mask(x0[sl]))[0].float())
    loss = torch.cat(losses)
    quarter = (t * 4 // diffusion.T).clamp(max=3)
    result = {"val_loss": loss.mean().item()}
    for q in range(4):
        chosen = loss[quarter == q]
        result[f"val_loss_q{q + 1}"] = chosen.mean().item() if len(chosen) else None
    return result
