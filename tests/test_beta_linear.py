"""Study 004's sampler variance σ_t = β_t (`variance: beta_linear`, issue 11 item 4) and `clip: false`."""
import math

import pytest
import torch

from bench.diffusion import Diffusion
from bench.errors import BenchError
from bench.samplers import VARIANCES, ddpm, sampling_sigma


@pytest.mark.parametrize("t", [0, 1, 99, 250, 499])
def test_sigma_closed_forms_on_the_cosine_T500_schedule(t):
    d = Diffusion("cosine", 500)
    b, ab = d.betas[t].item(), d.alphas_cumprod[t].item()
    ab_prev = d.alphas_cumprod[t - 1].item() if t > 0 else 1.0
    assert sampling_sigma(d, "beta_linear")[t].item() == pytest.approx(b, rel=1e-12)
    assert sampling_sigma(d, "fixed_large")[t].item() == pytest.approx(math.sqrt(b), rel=1e-12)
    tilde = b * (1 - ab_prev) / (1 - ab)
    assert sampling_sigma(d, "fixed_small")[t].item() == pytest.approx(math.sqrt(tilde), rel=1e-12)


def test_beta_linear_is_5_to_107x_below_sqrt_beta_for_t_below_450():
    """σ = √β over σ = β is 1/√β_t: 107x at t=0 down to 5.1x at t=449 on cosine T=500."""
    d = Diffusion("cosine", 500)
    ratio = sampling_sigma(d, "fixed_large")[:450] / sampling_sigma(d, "beta_linear")[:450]
    assert ratio.max().item() == pytest.approx(106.95, abs=0.01)
    assert ratio.min().item() == pytest.approx(5.095, abs=0.001)
    assert torch.allclose(ratio, 1 / d.betas[:450].sqrt())


class Const:
    """ε̂ = c everywhere (a fixed toy denoiser), so one step is computable by hand."""
    def __init__(self, c):
        self.c = c

    def __call__(self, x, t):
        return torch.full_like(x, self.c)


@pytest.mark.parametrize("clip", [True, False])
def test_one_step_chain_against_a_hand_computed_update(clip):
    """T = 2 chain: step t=1 with noise z, then the deterministic t=0 step, by hand."""
    d = Diffusion.from_betas(torch.tensor([0.1, 0.5], dtype=torch.float64))
    x_T, c = torch.full((1, 1, 1, 1), 0.3), -2.0   # x̂_0 = 2.65 at t=1: clip bites
    g = torch.Generator().manual_seed(7)
    z = torch.randn((1, 1, 1, 1), generator=torch.Generator().manual_seed(7)).item()
    out = ddpm(Const(c), d, x_T.shape, noise=x_T, generator=g, variance="beta_linear", clip=clip)
    ab1, ab0 = 0.9 * 0.5, 0.9
    x = 0.3
    for b, ab, ab_prev, noise in [(0.5, ab1, ab0, z), (0.1, ab0, 1.0, 0.0)]:   # t = 1, then t = 0
        x0 = (x - math.sqrt(1 - ab) * c) / math.sqrt(ab)
        x0 = max(-1.0, min(1.0, x0)) if clip else x0
        mean = b * math.sqrt(ab_prev) / (1 - ab) * x0 + (1 - ab_prev) * math.sqrt(1 - b) / (1 - ab) * x
        x = mean + b * noise                               # σ_t = β_t, no noise at the last step
    assert out.item() == pytest.approx(max(-1.0, min(1.0, x)), abs=1e-6)


def test_unknown_variance_names_the_choices():
    assert "beta_linear" in VARIANCES
    with pytest.raises(BenchError, match="beta_linear"):
        sampling_sigma(Diffusion("linear", 100), "beta_lin")
