"""bench.samplers: exact results with oracle / Gaussian denoisers, diffusers loops, determinism
(option and step validation: test_sampler_options.py).

For data x_0 ~ N(0, S² I) the optimal denoiser is linear, E[x_0 | x_t] = √ᾱ S² x_t / (ᾱ S² + 1 - ᾱ),
so every sampler is a linear map (plus independent noise) whose variance is computable in closed form.
"""
import math

import numpy as np
import pytest
import torch

from bench.diffusion import TARGETS, Diffusion
from bench.errors import BenchError
from bench.samplers import (
    SAMPLERS,
    ddim,
    ddim_encode,
    ddpm,
    respaced,
    shortened,
    shortened_betas,
    timestep_subset,
)

S = 0.25


class Gaussian(torch.nn.Module):
    """The exact denoiser for x_0 ~ N(mu, S² I), in the diffusion's own target."""

    def __init__(self, diffusion, mu=0.0):
        super().__init__()
        self.d, self.mu, self.calls = diffusion, mu, []

    def forward(self, x, t):
        self.calls.append(int(t[0]))
        ab = self.d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * S * S + 1 - ab)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return self.d.training_target(x0, eps, t)


class Oracle(torch.nn.Module):
    """Knows x_0: returns the true target for any x_t (ε = (x_t - √ᾱ x_0)/√(1-ᾱ))."""

    def __init__(self, diffusion, x0):
        super().__init__()
        self.d, self.x0 = diffusion, x0

    def forward(self, x, t):
        ab = self.d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        return self.d.training_target(self.x0, eps, t)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _k(ab):
    """x̂_0 = k x_t for the zero-mean Gaussian denoiser."""
    return math.sqrt(ab) * S * S / (ab * S * S + 1 - ab)


def _ancestral_variance(ab_chain, sigma2):
    """Var of x_0 after ancestral sampling along a chain with ᾱ_i (ascending), from Var(x_T) = 1."""
    var = 1.0
    for i in range(len(ab_chain) - 1, -1, -1):
        ab, ab_prev = ab_chain[i], ab_chain[i - 1] if i > 0 else 1.0
        beta = 1 - ab / ab_prev
        gain = beta * math.sqrt(ab_prev) / (1 - ab) * _k(ab) + (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)
        var = gain**2 * var + (sigma2[i] if i > 0 else 0.0)
    return var


# -- timestep subsets ----------------------------------------------------------------------------

def test_timestep_subset_matches_ddim_repo():
    assert timestep_subset(1000, 50, "uniform").tolist() == list(range(0, 1000, 20))[::-1]
    repo = (np.linspace(0, np.sqrt(1000 * 0.8), 50) ** 2).astype(int)      # repeats 0 at the start
    assert repo[:4].tolist() == [0, 0, 1, 2]
    quad = timestep_subset(1000, 50, "quadratic").flip(0).tolist()
    assert quad[:4] == [0, 1, 2, 3] and quad[4:] == repo[4:].tolist()
    for steps in (10, 90, 100):                                             # always distinct, in range
        ts = timestep_subset(100, steps, "quadratic")
        assert ts.unique().numel() == steps and ts.max() <= 99 and (ts[:-1] > ts[1:]).all()
    assert timestep_subset(100, 100, "uniform").tolist() == list(range(99, -1, -1))
    assert len(timestep_subset(1000, 300, "uniform")) == 300


@pytest.mark.parametrize("args,match", [((100, 0, "uniform"), "choose 1..100"),
                                        ((100, 101, "uniform"), "choose 1..100"),
                                        ((100, 10, "log"), "choose from quadratic, uniform")])
def test_timestep_subset_errors(args, match):
    with pytest.raises(BenchError, match=match):
        timestep_subset(*args)


# -- oracle: the chains end at the training image ------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name,kw", [("ddpm", {}), ("ddim", {"steps": 50}), ("respaced", {"steps": 20})])
def test_oracle_recovers_training_image(target, name, kw):
    d = Diffusion("linear", 100, target=target)
    x0 = torch.rand(2, 3, 8, 8, generator=_gen(0)) * 1.8 - 0.9
    xt = d.add_noise(x0, torch.randn(2, 3, 8, 8, generator=_gen(1)), torch.full((2,), 99))
    out = SAMPLERS[name](Oracle(d, x0), d, x0.shape, noise=xt, generator=_gen(2), **kw)
    assert out.dtype == torch.float32 and (out - x0).abs().max() < 1e-3


# -- Gaussian data: samplers against closed forms ------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_ddim_eta0_is_the_exact_linear_map(target):
    d = Diffusion("cosine", 100, target=target)
    ts = timestep_subset(100, 20, "uniform").tolist() + [None]
    gain = 1.0
    for t, t_prev in zip(ts[:-1], ts[1:]):
        ab, ab_prev = d.alphas_cumprod[t].item(), 1.0 if t_prev is None else d.alphas_cumprod[t_prev].item()
        gain *= (math.sqrt(ab_prev * ab) * S * S + math.sqrt((1 - ab_prev) * (1 - ab))) / (ab * S * S + 1 - ab)
    xT = torch.randn(4, 1, 16, 16, generator=_gen(3))
    out = ddim(Gaussian(d), d, xT.shape, steps=20, noise=xT, clip=False)
    assert torch.allclose(out, (gain * xT).clamp(-1, 1), atol=1e-5)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_and_respaced_variance_match_closed_form(variance):
    d = Diffusion("linear", 100)
    shape, n = (16, 1, 64, 64), 16 * 64 * 64
    for name, steps in (("ddpm", None), ("respaced", 10)):
        kept = timestep_subset(100, steps or 100, "uniform").flip(0)
        chain = Diffusion.from_betas(d.respace(kept))
        sigma2 = (chain.posterior_variance if variance == "fixed_small" else chain.betas).tolist()
        expected = _ancestral_variance(chain.alphas_cumprod.tolist(), sigma2)
        x = SAMPLERS[name](Gaussian(d), d, shape, steps=steps, generator=_gen(4),
                           variance=variance, clip=False)
        assert abs(x.var().item() / expected - 1) < 5 * math.sqrt(2 / n), (name, x.var().item(), expected)
        assert abs(x.mean().item()) < 5 * math.sqrt(expected / n)


def test_ddim_eta1_all_steps_equals_ddpm_fixed_small():
    d = Diffusion("linear", 100, target="v")
    a = ddim(Gaussian(d, mu=0.1), d, (2, 3, 8, 8), steps=100, eta=1.0, generator=_gen(5))
    b = ddpm(Gaussian(d, mu=0.1), d, (2, 3, 8, 8), variance="fixed_small", generator=_gen(5))
    assert torch.allclose(a, b, atol=1e-4)


def test_ddim_encode_decode_round_trip():
    d = Diffusion("linear", 1000)
    x0 = 0.1 + S * torch.randn(2, 1, 16, 16, generator=_gen(6))
    errors = []
    for steps in (50, 500):
        model = Gaussian(d, mu=0.1)
        xe = ddim_encode(model, d, x0, t_end=499, steps=steps)
        assert model.calls[-1] == 499
        model.calls.clear()
        xd = ddim(model, d, x0.shape, noise=xe, t_start=499, steps=steps, clip=False)
        assert model.calls[0] == 499 and model.calls[-1] == 0
        errors.append((xd - x0).abs().max().item())
    assert errors[1] < 0.01 and errors[1] < errors[0] / 5


# -- against diffusers' scheduler loops ------------------------------------------------------------

def _diffusers_loop(scheduler, model, xT, generator, **step_kw):
    x = xT
    for t in scheduler.timesteps:
        tt = torch.full((x.shape[0],), int(t))
        x = scheduler.step(model(x, tt), int(t), x, generator=generator, **step_kw).prev_sample
    return x


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_matches_diffusers(eta):
    from diffusers import DDIMScheduler

    d = Diffusion("linear", 100)
    ref = DDIMScheduler(num_train_timesteps=100, beta_start=1e-3, beta_end=0.2, clip_sample=True,
                        set_alpha_to_one=True, timestep_spacing="leading", steps_offset=0)
    ref.set_timesteps(10)
    g = _gen(7)
    xT = torch.randn(2, 3, 8, 8, generator=g)
    expected = _diffusers_loop(ref, Gaussian(d, mu=0.3), xT, g, eta=eta, use_clipped_model_output=True)
    g = _gen(7)
    out = ddim(Gaussian(d, mu=0.3), d, xT.shape, steps=10, eta=eta, generator=g)
    assert torch.allclose(out, expected.clamp(-1, 1), atol=1e-5)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("steps", [100, 20])
def test_ddpm_and_respaced_match_diffusers(variance, steps):
    from diffusers import DDPMScheduler

    d = Diffusion("cosine", 100, target="x0")
    ref = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                        variance_type=variance, prediction_type="sample", timestep_spacing="leading")
    ref.set_timesteps(steps)
    g = _gen(8)
    expected = _diffusers_loop(ref, Gaussian(d, mu=0.3), torch.randn(2, 3, 8, 8, generator=g), g)
    sampler = ddpm if steps == 100 else respaced
    out = sampler(Gaussian(d, mu=0.3), d, (2, 3, 8, 8), steps=steps, variance=variance, generator=_gen(8))
    assert torch.allclose(out, expected.clamp(-1, 1), atol=1e-4)


# -- respaced and shortened: timesteps the model sees, β tables ------------------------------------

def test_respaced_calls_model_at_original_timesteps():
    d = Diffusion("linear", 100)
    model = Gaussian(d)
    respaced(model, d, (1, 1, 4, 4), steps=10, spacing="quadratic", generator=_gen(9))
    assert model.calls == timestep_subset(100, 10, "quadratic").tolist()


def test_shortened_is_the_seed_schedule():
    d = Diffusion("linear", 1000)
    b = shortened_betas(d, 50)
    assert len(b) == 50 and b[0].item() == pytest.approx(1e-4)
    assert b[-1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) * 20)
    model = Gaussian(d)
    shortened(model, d, (1, 1, 4, 4), steps=50, generator=_gen(10))
    assert model.calls == [20 * (i + 1) - 1 for i in range(49, -1, -1)]
    # its ᾱ is not the training ᾱ at the timesteps the model sees (the seed's approximation)
    ab_short = torch.cumprod(1 - b, 0)
    ab_train = d.alphas_cumprod[torch.arange(19, 1000, 20)]
    assert not torch.allclose(ab_short, ab_train, rtol=0.05)
    assert torch.allclose(shortened_betas(Diffusion("cosine", 1000), 50), Diffusion("cosine", 50).betas)


# -- determinism ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kw", [("ddpm", {}), ("ddim", {"steps": 10, "eta": 0.5}),
                                     ("respaced", {"steps": 10}), ("shortened", {"steps": 10})])
def test_same_seed_same_samples(name, kw):
    d = Diffusion("linear", 100)
    run = lambda seed: SAMPLERS[name](Gaussian(d, mu=0.2), d, (2, 3, 8, 8), generator=_gen(seed), **kw)
    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1
    assert a.min() >= -1 and a.max() <= 1


def test_given_noise_is_used():
    d = Diffusion("linear", 100)
    xT = torch.randn(2, 3, 8, 8, generator=_gen(13))
    a = ddim(Gaussian(d), d, xT.shape, steps=10, noise=xT, generator=_gen(1))
    b = ddim(Gaussian(d), d, xT.shape, steps=10, noise=xT, generator=_gen(2))
    assert torch.equal(a, b)     # η = 0: x_T fixes the sample, the generator is unused
