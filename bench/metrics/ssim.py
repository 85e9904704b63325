"""Paired reconstruction metrics vs t: SSIM and PSNR of one-step x̂_0 and of a DDIM round trip.

Sources: Wang et al. 2004 (SSIM) and PSNR via torchmetrics, both with data_range = 1.0 on images in
[0, 1]. Two SSIM variants (`eval.ssim`), both with an 11x11 Gaussian window, sigma 1.5, K = (0.01,
0.03) and population (co)variances:
  wang          the SSIM map over the valid interior only (no padding), averaged over pixels and
                channels: Wang et al.'s reference code and scikit-image's `structural_similarity(
                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` (tested to 1e-5);
  torchmetrics  `structural_similarity_index_measure` as installed: since torchmetrics dropped its
                border crop (late 2024) the map is averaged over the whole reflect-padded image;
                measured on 100 CIFAR-10 test JPEGs at 32x32 with sigma = 0.2 noise (torchmetrics
                1.9.0): mean 0.393 (wang) vs 0.334, up to 0.19 apart per image. For old runs only.
Study 003
(Table 1) scores one-step reconstructions x̂_0 = f(x_t) of held-out images at t = 50, 100, ..., 1000;
x_t follows Ho et al. 2020 eq. 4, x̂_0 the model's target (ε, x_0 or v; `Diffusion.predict_x0`).
Formulation edm (bench.edm) scores the same x_t: x̂_0 = D(x_t/√ᾱ_t; σ), σ = √((1-ᾱ_t)/ᾱ_t), the
EDM denoiser at the noise level of that t (same SNR), so the curves of both formulations line up.
The round trip encodes x_0 -> x_t with deterministic DDIM inversion and decodes back (Song et al. 2021).

Timesteps: the grid is in the report's 1-based units (t = 1000 is the last step), mapped to the index
t - 1. x̂_0 is clamped to [-1, 1] before scoring, as an image would be. Every t reuses the same noise ε
per image (drawn on the CPU, so it does not depend on the device; with `noise_seed`, image i's from
its own generator seeded by (noise_seed, i), `bench.noise`, so it does not depend on the batch size
either), so the curve vs t changes only t. std is over images (population std).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as nnf
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from bench.errors import BenchError
from bench.noise import ImageNoise
from bench.samplers import ddim, ddim_encode


def default_t_grid(T: int) -> list[int]:
    """Twenty evenly spaced 1-based timesteps ending at T: 50, 100, ..., 1000 for T = 1000."""
    return sorted({max(1, T * k // 20) for k in range(1, 21)})


def check_t_grid(t_grid, T: int) -> list[int]:
    grid = default_t_grid(T) if t_grid is None else [int(t) for t in t_grid]
    bad = [t for t in grid if not 1 <= t <= T]
    if bad or not grid:
        raise BenchError(f"reconstruction t grid: {bad or 'empty'} out of range; choose 1..{T} "
                         "(1-based: t = T is the last step, index T - 1)")
    return grid


SSIM_VARIANTS = ("wang", "torchmetrics")
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _gaussian_window(channels: int) -> torch.Tensor:
    """[C, 1, 11, 11] normalised Gaussian (sigma 1.5), one depthwise filter per channel."""
    x = torch.arange(_WINDOW, dtype=torch.float64) - (_WINDOW - 1) / 2
    g = torch.exp(-x**2 / (2 * _SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, _WINDOW, _WINDOW).contiguous()


def ssim_wang(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) averaged over the valid region of the map; [N, C, H, W]."""
    if min(pred.shape[-2:]) < _WINDOW:
        raise BenchError(f"eval.ssim: 'wang' needs images of at least {_WINDOW}x{_WINDOW} px, got "
                         f"{list(pred.shape[-2:])}; use eval.ssim: torchmetrics for smaller images")
    x, y = pred.double(), target.double()
    w = _gaussian_window(x.shape[1]).to(x.device)
    blur = lambda z: nnf.conv2d(z, w, groups=x.shape[1])  # noqa: E731  valid region only
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return smap.mean(dim=(1, 2, 3))


def ssim_scores(pred: torch.Tensor, target: torch.Tensor, variant: str = "wang") -> torch.Tensor:
    """Per-image SSIM of images in [0, 1] under `variant` (one of SSIM_VARIANTS)."""
    if variant == "wang":
        return ssim_wang(pred, target)
    if variant == "torchmetrics":
        return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    raise BenchError(f"eval.ssim: unknown SSIM variant {variant!r}; choose one of {', '.join(SSIM_VARIANTS)}")


def pair_scores(x0_hat: torch.Tensor, x0_uint8: torch.Tensor,
                ssim: str = "wang") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (SSIM, PSNR) of x̂_0 in [-1, 1] (clamped) against uint8 images, both taken to [0, 1]."""
    pred = (x0_hat.float().clamp(-1, 1) + 1) / 2
    target = x0_uint8.to(pred.device).float() / 255
    score = ssim_scores(pred, target, ssim)
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return score.double().cpu(), psnr.double().cpu()


def summarize(ssim: list[torch.Tensor], psnr: list[torch.Tensor]) -> dict:
    s, p = torch.cat(ssim), torch.cat(psnr)
    return {"ssim_mean": s.mean().item(), "ssim_std": s.std(correction=0).item(),
            "psnr_mean": p.mean().item(), "psnr_std": p.std(correction=0).item()}


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _to_x0(batch: torch.Tensor, device) -> torch.Tensor:
    if batch.dtype != torch.uint8 or batch.ndim != 4:
        raise BenchError(f"reconstruction metrics: expected uint8 [N, C, H, W], got {batch.dtype} "
                         f"{list(batch.shape)}")
    return batch.to(device).float() / 127.5 - 1


@torch.no_grad()
def reconstruction_metrics(model, diffusion, images_uint8: torch.Tensor, t_grid=None, *,
                           generator: torch.Generator | None = None, batch_size: int = 64,
                           device="cpu", ssim: str = "wang", noise_seed: int | None = None) -> dict:
    """{t: {ssim_mean, ssim_std, psnr_mean, psnr_std}} of one-step x̂_0 from x_t, t 1-based; ε per
    image from (noise_seed, image index) when given, else drawn batch by batch from `generator`."""
    grid = check_t_grid(t_grid, diffusion.T)
    scores = {t: ([], []) for t in grid}
    with _eval_mode(model):
        for start, batch in zip(range(0, len(images_uint8), batch_size), images_uint8.split(batch_size)):
            x0 = _to_x0(batch, device)
            if noise_seed is not None:
                noise = ImageNoise(noise_seed, range(start, start + len(x0)), "cpu", "recon").randn(
                    x0.shape, device)
            else:
                noise = torch.randn(x0.shape, generator=generator, device=generator.device
                                    if generator is not None else "cpu").to(device)
            for t in grid:
                tt = torch.full((len(x0),), t - 1, device=x0.device, dtype=torch.long)
                x_t = diffusion.add_noise(x0, noise, tt)
                x0_hat = diffusion.denoise(model, x_t, tt)
                for acc, value in zip(scores[t], pair_scores(x0_hat, batch, ssim)):
                    acc.append(value)
    return {t: summarize(*scores[t]) for t in grid}


@torch.no_grad()
def roundtrip_metrics(model, diffusion, images_uint8: torch.Tensor, t_grid=None, *, steps: int = 50,
                      batch_size: int = 64, device="cpu", spacing: str = "uniform",
                      clip: bool = True, ssim: str = "wang") -> dict:
    """{t: {ssim_mean, ...}} of a DDIM round trip x_0 -> x_t -> x̂_0 (η = 0, deterministic).

    Each direction takes min(steps, t) DDIM steps over [0, t - 1]; `clip` clamps x̂_0 while decoding.
    """

    grid = check_t_grid(t_grid, diffusion.T)
    scores = {t: ([], []) for t in grid}
    with _eval_mode(model):
        for batch in images_uint8.split(batch_size):
            x0 = _to_x0(batch, device)
            for t in grid:
                n = min(steps, t)
                x_t = ddim_encode(model, diffusion, x0, t_end=t - 1, steps=n, spacing=spacing)
                x0_hat = ddim(model, diffusion, x0.shape, steps=n, device=device, noise=x_t,
                              t_start=t - 1, eta=0.0, spacing=spacing, clip=clip)
                for acc, value in zip(scores[t], pair_scores(x0_hat, batch, ssim)):
                    acc.append(value)
    return {t: summarize(*scores[t]) for t in grid}
