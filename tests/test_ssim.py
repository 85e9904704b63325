"""bench.metrics.ssim: t-grid mapping, perfect reconstructions, PSNR against its closed form."""
import math

import pytest
import torch

from bench.diffusion import Diffusion
from bench.errors import BenchError
from bench.metrics.ssim import (
    SSIM_VARIANTS,
    default_t_grid,
    reconstruction_metrics,
    roundtrip_metrics,
    ssim_scores,
    ssim_wang,
)


def _images(n=6, lo=0, hi=256, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, 3, size, size), generator=g, dtype=torch.uint8)


class PointMassOracle(torch.nn.Module):
    """The exact ε-predictor when the data is the single batch x0: ε = (x_t - √ᾱ x0) / √(1 - ᾱ)."""

    def __init__(self, diffusion, images):
        super().__init__()
        self.ab = diffusion.alphas_cumprod.float()
        self.x0 = images.float() / 127.5 - 1

    def forward(self, x, t):
        a = self.ab[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


class Recorder(torch.nn.Module):
    """Outputs zeros and records the timestep indices and train/eval mode it was called with."""

    def __init__(self):
        super().__init__()
        self.seen, self.modes = [], []

    def forward(self, x, t):
        self.seen += t.tolist()
        self.modes.append(self.training)
        return torch.zeros_like(x)


def test_default_grid_is_50_to_1000_and_scales_with_T():
    assert default_t_grid(1000) == list(range(50, 1001, 50))
    assert default_t_grid(500) == list(range(25, 501, 25))


def test_grid_is_one_based_and_maps_to_index_t_minus_1_in_eval_mode():
    model = Recorder().train()
    out = reconstruction_metrics(model, Diffusion("linear", 1000), _images(2), [50, 100, 1000],
                                 generator=torch.Generator().manual_seed(0))
    assert sorted(out) == [50, 100, 1000]
    assert sorted(set(model.seen)) == [49, 99, 999]
    assert model.modes == [False, False, False] and model.training   # eval inside, restored after


@pytest.mark.parametrize("bad", [[0], [1001], []])
def test_grid_out_of_range_raises(bad):
    with pytest.raises(BenchError, match="1..1000"):
        reconstruction_metrics(Recorder(), Diffusion("linear", 1000), _images(2), bad)


def test_perfect_reconstruction_gives_ssim_one_at_every_t():
    diffusion, images = Diffusion("linear", 1000), _images(6)
    out = reconstruction_metrics(PointMassOracle(diffusion, images), diffusion, images, None,
                                 generator=torch.Generator().manual_seed(1), batch_size=6)
    assert len(out) == 20
    for row in out.values():
        assert row["ssim_mean"] == pytest.approx(1.0, abs=1e-4) and row["ssim_std"] < 1e-4
        assert row["psnr_mean"] > 80


def test_psnr_matches_closed_form_for_the_zero_eps_model():
    # ε̂ = 0  =>  x̂0 = x_t / √ᾱ = x0 + (√(1-ᾱ)/√ᾱ) ε; in [0, 1] units the error is half that.
    diffusion, images = Diffusion("linear", 1000), _images(8, lo=64, hi=192)   # never clamped
    grid, seed = [1, 2, 5], 3
    out = reconstruction_metrics(Recorder(), diffusion, images, grid,
                                 generator=torch.Generator().manual_seed(seed), batch_size=8)
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    for t in grid:
        ab = diffusion.alphas_cumprod[t - 1].item()
        scale = math.sqrt((1 - ab) / ab) / 2
        psnr = -10 * torch.log10(scale**2 * eps.double().pow(2).mean(dim=(1, 2, 3)))
        assert out[t]["psnr_mean"] == pytest.approx(psnr.mean().item(), rel=1e-4)
        assert out[t]["psnr_std"] == pytest.approx(psnr.std(correction=0).item(), rel=1e-3)


def test_ssim_falls_with_t_for_an_uninformed_model():
    diffusion, images = Diffusion("linear", 1000), _images(4)
    out = reconstruction_metrics(Recorder(), diffusion, images, [10, 100, 400, 1000],
                                 generator=torch.Generator().manual_seed(0))
    ssim = [out[t]["ssim_mean"] for t in (10, 100, 400, 1000)]
    assert ssim == sorted(ssim, reverse=True) and ssim[0] > 0.9 and ssim[-1] < 0.1


def test_ddim_round_trip_is_exact_for_the_oracle_and_not_for_a_wrong_one():
    diffusion, images = Diffusion("linear", 1000), _images(4)
    exact = roundtrip_metrics(PointMassOracle(diffusion, images), diffusion, images, [5, 50, 1000],
                              steps=10, batch_size=4)
    for row in exact.values():
        assert row["ssim_mean"] == pytest.approx(1.0, abs=1e-3) and row["psnr_mean"] > 50
    wrong = roundtrip_metrics(PointMassOracle(diffusion, _images(4, seed=9)), diffusion, images, [1000],
                              steps=10, batch_size=4)
    assert wrong[1000]["ssim_mean"] < 0.2


# ---------------------------------------------------------------- SSIM variants vs scikit-image

def _pair(seed=0, size=32, n=3, sigma=0.2):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, size, size, generator=g, dtype=torch.float64)
    noisy = (clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return noisy, clean


@pytest.mark.parametrize("size,sigma", [(32, 0.2), (16, 0.05), (23, 0.5)])
def test_wang_ssim_matches_scikit_image(size, sigma):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    pred, target = _pair(size=size, sigma=sigma)
    ours = ssim_wang(pred, target, data_range=1.0)
    for i in range(len(pred)):
        ref = skimage_metrics.structural_similarity(
            pred[i].numpy(), target[i].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


def test_variants_differ_on_small_images_and_are_both_one_on_identity():
    pred, target = _pair(size=32, sigma=0.2)
    wang, tm = ssim_scores(pred.float(), target.float(), "wang"), ssim_scores(pred.float(), target.float(),
                                                                               "torchmetrics")
    assert (wang - tm).abs().max() > 1e-3          # the border average is not the valid-region mean
    for variant in SSIM_VARIANTS:
        assert ssim_scores(target.float(), target.float(), variant) == pytest.approx(torch.ones(3))


def test_wang_refuses_images_smaller_than_the_window_and_unknown_variants():
    pred, target = _pair(size=8)
    with pytest.raises(BenchError, match="at least 11x11"):
        ssim_scores(pred, target, "wang")
    with pytest.raises(BenchError, match="wang, torchmetrics"):
        ssim_scores(pred, target, "gauss")


def test_reconstruction_metrics_use_the_requested_variant():
    diffusion, images = Diffusion("linear", 1000), _images(4)
    gen = lambda: torch.Generator().manual_seed(0)   # noqa: E731
    a = reconstruction_metrics(Recorder(), diffusion, images, [100], generator=gen(), ssim="wang")
    b = reconstruction_metrics(Recorder(), diffusion, images, [100], generator=gen(), ssim="torchmetrics")
    assert a[100]["psnr_mean"] == b[100]["psnr_mean"] and a[100]["ssim_mean"] != b[100]["ssim_mean"]
