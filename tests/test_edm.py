"""The EDM formulation (bench.edm, issue 11 item 5): Karras et al. 2022 Table 1's closed forms, the
σ schedule and preconditioning against diffusers' EDMEulerScheduler, the Heun sampler against
diffusers' HeunDiscreteScheduler run on the same σ, the Euler sampler against EDMEulerScheduler, and
the Gaussian-data case whose exact denoiser makes the ODE solvable in closed form.

k-diffusion is not the reference: `pip install k-diffusion` would downgrade numpy (to 1.26) and
bring wandb, clean-fid, kornia and accelerate into the environment; diffusers (the dev extra) has
both schedulers, and the closed-form case needs no library."""
import math

import pytest
import torch
from diffusers import EDMEulerScheduler, HeunDiscreteScheduler

from bench.diffusion import Diffusion
from bench.edm import (
    EDM,
    euler,
    heun,
    karras_sigmas,
    loss_weight,
    preconditioning,
    solve,
    vp_sigmas,
)

SIGMAS = torch.tensor([0.002, 0.05, 0.5, 1.0, 7.0, 80.0], dtype=torch.float64)


class Zero(torch.nn.Module):
    """F = 0: the preconditioned D is then exactly x σd²/(σ²+σd²), the denoiser of N(0, σd²) data."""

    def forward(self, x, t):
        assert t.dtype == torch.long and t.shape == x.shape[:1]
        return torch.zeros_like(x)


class Small(torch.nn.Module):
    """A fixed random network with a learned timestep table (floats would not index it)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.table = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Embedding(1000, 3)

    def forward(self, x, t):
        return 0.3 * torch.tanh(self.conv(x)) + 0.1 * self.table(t)[:, :, None, None]


def edm(**kw) -> EDM:
    return EDM(Diffusion("linear", 1000), **kw)


def test_table1_at_sigma_equal_sigma_data():
    c_skip, c_out, c_in, c_noise = preconditioning(torch.tensor([0.5], dtype=torch.float64))
    assert c_skip.item() == pytest.approx(0.5, abs=1e-12)
    assert c_out.item() == pytest.approx(0.25 / math.sqrt(0.5), abs=1e-12)   # 0.353553
    assert c_in.item() == pytest.approx(math.sqrt(2), abs=1e-12)
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4, abs=1e-12)     # -0.173287
    assert loss_weight(torch.tensor([0.5])).item() == pytest.approx(8.0, rel=1e-6)


def test_table1_closed_forms_and_their_unit_variance_design():
    s, d = SIGMAS, 0.5
    c_skip, c_out, c_in, c_noise = preconditioning(s, d)
    assert torch.allclose(c_skip, d**2 / (s**2 + d**2), atol=0, rtol=1e-12)
    assert torch.allclose(c_out, s * d / (s**2 + d**2).sqrt(), atol=0, rtol=1e-12)
    assert torch.allclose(c_in, 1 / (d**2 + s**2).sqrt(), atol=0, rtol=1e-12)
    assert torch.allclose(c_noise, s.log() / 4, atol=0, rtol=1e-12)
    assert torch.allclose(c_in**2 * (d**2 + s**2), torch.ones(6, dtype=torch.float64))   # unit input
    target_var = ((1 - c_skip) ** 2 * d**2 + c_skip**2 * s**2) / c_out**2              # unit target
    assert torch.allclose(target_var, torch.ones(6, dtype=torch.float64))
    assert torch.allclose(loss_weight(s, d) * c_out**2, torch.ones(6, dtype=torch.float64))
    assert loss_weight(torch.tensor([0.002]), 0.5).item() == pytest.approx(250_004.0, rel=1e-6)


@pytest.mark.parametrize("n", [1, 2, 18, 40])
def test_sigma_schedule_ends(n):
    s = karras_sigmas(n)
    assert len(s) == n + 1 and s[0].item() == pytest.approx(80.0, rel=1e-12) and s[-1].item() == 0.0
    assert s[n - 1].item() == pytest.approx(80.0 if n == 1 else 0.002, rel=1e-12)
    assert (s[:-1].diff() < 0).all()
    if n == 18:   # i = 9 of eq. 5 by hand: (80^(1/7) + 9/17 (0.002^(1/7) - 80^(1/7)))^7
        mid = (80 ** (1 / 7) + 9 / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
        assert s[9].item() == pytest.approx(mid, rel=1e-12) and s[9].item() == pytest.approx(1.9233, abs=1e-4)


@pytest.mark.parametrize("n,lo,hi,rho", [(2, 0.002, 80.0, 7.0), (18, 0.002, 80.0, 7.0),
                                         (40, 0.002, 80.0, 7.0), (25, 0.01, 50.0, 3.0)])
def test_sigmas_match_diffusers_edm_euler(n, lo, hi, rho):
    ref = EDMEulerScheduler(sigma_min=lo, sigma_max=hi, rho=rho)
    ref.set_timesteps(n)
    ours = edm(sigma_min=lo, sigma_max=hi, rho=rho).sigmas(n)
    assert torch.allclose(ours, ref.sigmas.float(), atol=1e-5, rtol=1e-6)
    assert torch.allclose(preconditioning(ours[:-1])[3], ref.timesteps, atol=1e-5)   # c_noise


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_preconditioning_matches_diffusers(sigma_data):
    ref = EDMEulerScheduler(sigma_data=sigma_data)
    x, f = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    s = SIGMAS.float().view(-1, 1, 1, 1)
    c_skip, c_out, c_in, _ = preconditioning(s, sigma_data)
    assert torch.allclose(c_in * x, ref.precondition_inputs(x, s), atol=1e-5)
    assert torch.allclose(c_skip * x + c_out * f, ref.precondition_outputs(x, f, s), atol=1e-5)


def _diffusers_heun(D, x, sigmas):
    """Drive HeunDiscreteScheduler (prediction_type "sample": the model output is x̂0) over our σ."""
    sched = HeunDiscreteScheduler(prediction_type="sample")
    sched.set_timesteps(len(sigmas) - 1)
    sched.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
    sched.set_begin_index(0)
    for i, t in enumerate(sched.timesteps):   # its first- and second-order calls alternate
        x = sched.step(D(x, sched.sigmas[i] * torch.ones(len(x))), t, x).prev_sample
    return x


@pytest.mark.parametrize("n", [2, 5, 18])
def test_heun_matches_diffusers_heun_on_the_same_sigmas(n):
    e, net = edm(), Small()
    sigmas = e.sigmas(n)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    with torch.no_grad():
        ref = _diffusers_heun(e.denoiser(net), x, sigmas)
    ours = solve(net, e, x, sigmas)
    assert (ref.abs() > 1e-2).float().mean() > 0.5   # a nonzero end point to compare
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)
    noise = x / sigmas[0]
    assert torch.allclose(heun(net, e, x.shape, steps=n, noise=noise), ref.clamp(-1, 1), atol=1e-5)


@pytest.mark.parametrize("n", [3, 18])
def test_euler_matches_diffusers_edm_euler(n):
    e, net = edm(), Small()
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    sched = EDMEulerScheduler()
    sched.set_timesteps(n)
    x = noise * sched.sigmas[0]
    D = e.denoiser(net)
    for i, t in enumerate(sched.timesteps):   # its model output is F, preconditioned by the scheduler
        with torch.no_grad():
            x = sched.step(D.raw(x, sched.sigmas[i] * torch.ones(2)), t, x).prev_sample
    assert torch.allclose(euler(net, e, noise.shape, steps=n, noise=noise), x.clamp(-1, 1), atol=1e-5)


def test_heun_solves_the_gaussian_ode_to_second_order():
    """Data N(0, σd²): D is exact and x(σ) = x(σ_0) √((σ²+σd²)/(σ_0²+σd²)); Heun's error falls ~4x
    per halving of the step (measured 0.278, 0.0553, 0.0122, 0.00288 at N = 9, 18, 36, 72)."""
    e = edm()
    x0 = torch.randn(1000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    errors = []
    for n in (9, 18, 36, 72):
        s = e.sigmas(n)
        x = x0 * s[0]
        exact = x * math.sqrt((s[-2] ** 2 + 0.25) / (s[0] ** 2 + 0.25))
        errors.append(((solve(Zero(), e, x, s[:-1]) - exact).abs().max() / exact.abs().max()).item())
        full = solve(Zero(), e, x, s)   # + the last Euler step to σ = 0: D(x; σ_min)
        exact0 = x * 0.5 / math.sqrt(s[0] ** 2 + 0.25)
        assert ((full - exact0).abs().max() / exact0.abs().max()).item() == pytest.approx(errors[-1], abs=1e-4)
    assert errors == pytest.approx([0.2782, 0.0553, 0.0122, 0.00288], rel=0.02)
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(3.9 < r < 5.2 for r in ratios) and ratios[-1] < ratios[0]   # -> 4: second order
    euler_err = (solve(Zero(), e, x0 * e.sigmas(72)[0], e.sigmas(72)[:-1], second_order=False)
                 - x0 * e.sigmas(72)[0] * math.sqrt((0.002**2 + 0.25) / (80**2 + 0.25))).abs().max()
    assert euler_err.item() > 10 * errors[-1]


def test_network_timestep_is_the_nearest_vp_level_in_log_sigma():
    d = Diffusion("linear", 1000)
    e = EDM(d)
    t = torch.arange(1000)
    assert torch.equal(e.timestep(vp_sigmas(d).float()), t)          # σ_vp(t) maps back to t
    assert e.timestep(torch.tensor([1e-5, 0.002, 200.0, 1e4])).tolist() == [0, 0, 999, 999]
    s = torch.logspace(-3, 2.5, 2000)
    mapped = e.timestep(s)
    assert mapped.dtype == torch.long and (mapped.diff() >= 0).all()
    gap = (e.sigma_of(mapped).log() - s.log()).abs()
    inside = (s > 0.0101) & (s < 157)
    half = vp_sigmas(d).log().diff() / 2                              # half a grid step in ln σ
    assert gap[inside].max().item() <= half.max().item() + 1e-5
    assert half[0].item() == pytest.approx(0.197, abs=1e-3) and half[499].item() == pytest.approx(0.0027, abs=1e-4)
    assert e.sigma_of(torch.tensor([0, 999])).tolist() == pytest.approx([0.0100, 157.41], rel=1e-3)


def test_loss_is_lambda_weighted_denoising_error():
    e, net = edm(), Small()
    x0 = torch.rand(8, 3, 8, 8) * 2 - 1
    noise = torch.randn(8, 3, 8, 8)
    t = torch.arange(0, 1000, 125)
    loss, t_out = e.loss(net, x0, t=t, noise=noise)
    sigma = e.stratum_sigma(t)
    with torch.no_grad():
        D = e.denoiser(net)(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma)
    naive = loss_weight(sigma) * ((D - x0) ** 2).mean(dim=(1, 2, 3))
    assert torch.equal(t_out, t)
    assert torch.allclose(loss.detach(), naive, rtol=1e-4)


def test_training_sigmas_are_log_normal_and_validation_strata_its_quantiles():
    e = edm()
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    log_s = e.train_sigma(z).log()
    assert log_s.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_s.std().item() == pytest.approx(1.2, abs=0.01)
    strata = e.stratum_sigma(torch.arange(1000))
    assert (strata.diff() > 0).all()
    assert strata[499:501].log().mean().item() == pytest.approx(-1.2, abs=1e-3)     # the median
    assert strata[0].item() == pytest.approx(math.exp(-1.2 - 1.2 * 3.2905), rel=1e-3)  # Φ⁻¹(5e-4)
    loss, t = e.loss(Small(), torch.zeros(4, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    assert loss.shape == (4,) and t.dtype == torch.long


def test_recon_view_uses_the_ddpm_x_t_at_its_noise_level():
    """EDM.add_noise is DDPM's x_t; EDM.denoise scores it at σ = √((1 − ᾱ)/ᾱ): for the Gaussian
    denoiser x̂0 = x_t/√ᾱ · σd²/(σ² + σd²)."""
    d = Diffusion("linear", 1000)
    e = EDM(d)
    x0, noise = torch.rand(3, 3, 8, 8) * 2 - 1, torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 499, 999])
    x_t = e.add_noise(x0, noise, t)
    assert torch.equal(x_t, d.add_noise(x0, noise, t))
    ab = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    sigma2 = (1 - ab) / ab
    expected = x_t / ab.sqrt() * 0.25 / (sigma2 + 0.25)
    assert torch.allclose(e.denoise(Zero(), x_t, t), expected, rtol=1e-4, atol=1e-6)


def test_masked_loss_is_the_mean_over_the_scored_pixels():
    e, net = edm(), Small()
    x0, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([10, 300, 600, 990])
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, :] = 1                                    # the bottom half (task.loss_on: hole)
    full, _ = e.loss(net, x0, t=t, noise=noise)
    half, _ = e.loss(net, x0, t=t, noise=noise, mask=mask)
    ones, _ = e.loss(net, x0, t=t, noise=noise, mask=torch.ones(1, 1, 8, 8))
    sigma = e.stratum_sigma(t)
    with torch.no_grad():
        D = e.denoiser(net)(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma)
    bottom = loss_weight(sigma) * ((D - x0)[..., 4:, :] ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(ones, full) and torch.allclose(half.detach(), bottom, rtol=1e-4)


def test_heun_draws_x_T_per_image_whatever_the_batch():
    """With bench.noise.ImageNoise, image i of the stream is the same alone or in a batch."""
    from bench.noise import ImageNoise
    e, net = edm(), Small()
    both = heun(net, e, (2, 3, 8, 8), steps=3, generator=ImageNoise(7, [0, 1]))
    second = heun(net, e, (1, 3, 8, 8), steps=3, generator=ImageNoise(7, [1]))
    assert torch.allclose(both[1:], second, atol=1e-6) and not torch.allclose(both[0], both[1])


def test_bf16_autocast_keeps_the_preconditioning_in_fp32():
    """The CPU twin of CUDA's bf16 path: only the network runs in bf16; loss and D stay fp32."""
    e, net = edm(), Small()
    x0, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 333, 666, 999])
    fp32, _ = e.loss(net, x0, t=t, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16, _ = e.loss(net, x0, t=t, noise=noise)
        sample = heun(net, e, (2, 3, 8, 8), steps=4, generator=torch.Generator().manual_seed(0))
    assert bf16.dtype == torch.float32 and sample.dtype == torch.float32
    assert torch.allclose(bf16, fp32, rtol=1e-3)          # measured 6e-5
    ref = heun(net, e, (2, 3, 8, 8), steps=4, generator=torch.Generator().manual_seed(0))
    assert (sample - ref).abs().max().item() < 0.02       # measured 0.0036
