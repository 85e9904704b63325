"""bench.diffusion: schedules against closed forms and diffusers, forward process, targets, losses."""
import math

import pytest
import torch

from bench.diffusion import SCHEDULES, TARGETS, Diffusion
from bench.errors import BenchError

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2", "quadratic": "scaled_linear",
                  "sigmoid": "sigmoid"}


def _image(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g) * 1.8 - 0.9


# -- schedules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [100, 1000])
def test_schedule_shape_dtype_and_monotone_alpha_bar(name, T):
    betas = SCHEDULES[name](T)
    assert betas.shape == (T,) and betas.dtype == torch.float64
    ab = Diffusion(name, T).alphas_cumprod
    assert ((ab > 0) & (ab < 1)).all()
    assert (ab[1:] < ab[:-1]).all()


def test_linear_endpoints_exact_at_T1000_and_scaled_for_other_T():
    b = SCHEDULES["linear"](1000)
    assert b[0].item() == 1e-4 and b[-1].item() == 0.02
    b = SCHEDULES["linear"](250)
    assert b[0].item() == pytest.approx(4e-4, rel=1e-12) and b[-1].item() == pytest.approx(0.08, rel=1e-12)
    assert torch.allclose(b[1:] - b[:-1], torch.full((249,), (0.08 - 4e-4) / 249, dtype=torch.float64))


def test_cosine_alpha_bar_matches_closed_form_before_clipping():
    T, s = 1000, 0.008
    betas = SCHEDULES["cosine"](T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    unclipped = betas < 0.999
    assert unclipped[:-1].all() and betas[-1].item() == 0.999   # only the last β is clipped at T=1000
    assert torch.allclose(ab[:-1], expected[:-1], rtol=1e-10, atol=0)


def test_quadratic_and_sigmoid_endpoints():
    q = SCHEDULES["quadratic"](1000)
    assert q[0].item() == pytest.approx(1e-4, rel=1e-12) and q[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(q.sqrt()[1:] - q.sqrt()[:-1], (q.sqrt()[1] - q.sqrt()[0]).expand(999))
    sg = SCHEDULES["sigmoid"](1000)
    sig6 = 1 / (1 + math.exp(6))
    assert sg[0].item() == pytest.approx(1e-4 + sig6 * (0.02 - 1e-4), rel=1e-10)
    assert sg[-1].item() == pytest.approx(1e-4 + (1 - sig6) * (0.02 - 1e-4), rel=1e-10)
    assert sg[500].item() == pytest.approx(1e-4 + 0.5 * (0.02 - 1e-4), rel=1e-2)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [100, 1000])
def test_betas_match_diffusers(name, T):
    from diffusers import DDPMScheduler

    scale = 1000 / T
    ref = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4 * scale, beta_end=0.02 * scale,
                        beta_schedule=DIFFUSERS_NAME[name]).betas.double()
    assert torch.allclose(SCHEDULES[name](T), ref, rtol=1e-5, atol=1e-8)


def test_unknown_schedule_and_target_teach():
    with pytest.raises(BenchError, match=r"unknown schedule 'cosin'.*; choose from cosine, linear, quadratic"):
        Diffusion("cosin")
    with pytest.raises(BenchError, match=r"unknown target 'epsilon'.*choose from eps, v, x0"):
        Diffusion(target="epsilon")


# -- forward process, targets --------------------------------------------------------------------

def test_add_noise_statistics():
    d = Diffusion("linear", 100)
    x0 = _image(1)
    n = 20000
    g = torch.Generator().manual_seed(1)
    for t_val in (3, 40, 90):
        t = torch.full((n,), t_val)
        xt = d.add_noise(x0.expand(n, -1, -1, -1), torch.randn(n, 3, 8, 8, generator=g), t)
        ab = d.alphas_cumprod[t_val].item()
        se = math.sqrt((1 - ab) / n)
        assert (xt.mean(0) - math.sqrt(ab) * x0[0]).abs().max() < 5 * se
        assert (xt.var(0) / (1 - ab) - 1).abs().max() < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("target", TARGETS)
def test_predict_x0_and_eps_invert_the_target(target):
    d = Diffusion("cosine", 100, target=target)
    x0, eps = _image(4), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 10, 50, 90])   # at t=99 √ᾱ ≈ 1e-4: x̂0 from ε̂ is float32 noise there
    xt = d.add_noise(x0, eps, t)
    out = d.training_target(x0, eps, t)
    assert torch.allclose(d.predict_x0(out, xt, t), x0, atol=1e-4)
    assert torch.allclose(d.predict_eps(out, xt, t), eps, atol=2e-4)


def test_v_target_identity_and_diffusers_velocity():
    from diffusers import DDPMScheduler

    d = Diffusion("linear", 100, target="v")
    x0, eps = _image(3), torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([5, 50, 95])
    ab = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    v = d.training_target(x0, eps, t)
    assert torch.allclose(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-6)
    # x_t and v are a rotation of (x0, ε): their norms agree
    xt = d.add_noise(x0, eps, t)
    assert torch.allclose(xt.square() + v.square(), x0.square() + eps.square(), atol=1e-5)
    ref = DDPMScheduler(num_train_timesteps=100, beta_start=1e-3, beta_end=0.2)
    assert torch.allclose(v, ref.get_velocity(x0, eps, t), atol=1e-5)


# -- loss ------------------------------------------------------------------------------------------

class _Zero(torch.nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


def test_loss_draws_with_generator_and_matches_closed_form():
    d = Diffusion("linear", 100)
    x0 = _image(8)
    l1, t1 = d.loss(_Zero(), x0, generator=torch.Generator().manual_seed(5))
    l2, t2 = d.loss(_Zero(), x0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(l1, l2) and torch.equal(t1, t2) and l1.shape == (8,)
    assert ((t1 >= 0) & (t1 < 100)).all() and t1.dtype == torch.long
    noise = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    t = torch.arange(8) * 12
    loss, t_out = d.loss(_Zero(), x0, t=t, noise=noise)
    assert torch.equal(t_out, t)
    assert torch.allclose(loss, noise.square().mean(dim=(1, 2, 3)), atol=1e-6)
    dx = Diffusion("linear", 100, target="x0")
    assert torch.allclose(dx.loss(_Zero(), x0, t=t, noise=noise)[0], x0.square().mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("target", TARGETS)
def test_min_snr_weights_closed_form(target):
    gamma = 5.0
    d = Diffusion("cosine", 100, target=target, min_snr_gamma=gamma)
    t = torch.arange(100)
    ab = d.alphas_cumprod
    snr = ab / (1 - ab)
    expected = {"eps": snr.clamp(max=gamma) / snr, "x0": snr.clamp(max=gamma),
                "v": snr.clamp(max=gamma) / (snr + 1)}[target]
    assert torch.allclose(d.loss_weight(t).double(), expected, rtol=1e-5)
    assert torch.allclose(Diffusion("cosine", 100, target=target).loss_weight(t), torch.ones(100))


def test_min_snr_weighted_losses_agree_across_targets():
    """w·‖ε-ε̂‖² = w·‖v-v̂‖² = min(snr, γ)‖x0-x̂0‖² for one and the same prediction (Hang et al. §3.4)."""
    base = {k: Diffusion("linear", 100, target=k, min_snr_gamma=5.0) for k in TARGETS}
    x0, noise = _image(6), torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([0, 3, 10, 30, 60, 99])
    xt = base["eps"].add_noise(x0, noise, t)
    eps_hat = noise + 0.3 * torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    x0_hat = base["eps"].predict_x0(eps_hat, xt, t)
    outputs = {"eps": eps_hat, "x0": x0_hat,
               "v": base["v"].training_target(x0_hat, eps_hat, t)}
    losses = {k: base[k].loss(lambda x, tt, k=k: outputs[k], x0, t=t, noise=noise)[0] for k in TARGETS}
    assert torch.allclose(losses["eps"], losses["x0"], rtol=1e-3)
    assert torch.allclose(losses["v"], losses["x0"], rtol=1e-3)


# -- posterior, respacing --------------------------------------------------------------------------

@pytest.mark.parametrize("target,pred", [("eps", "epsilon"), ("x0", "sample"), ("v", "v_prediction")])
def test_posterior_matches_diffusers_ddpm_step(target, pred):
    from diffusers import DDPMScheduler

    d = Diffusion("linear", 100, target=target)
    ref = DDPMScheduler(num_train_timesteps=100, beta_start=1e-3, beta_end=0.2, clip_sample=False,
                        variance_type="fixed_small", prediction_type=pred)
    xt = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    out = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    for t_val in (1, 17, 99):
        t = torch.full((2,), t_val)
        mean, var = d.q_posterior(d.predict_x0(out, xt, t), xt, t)
        step = ref.step(out, t_val, xt, generator=torch.Generator().manual_seed(11)).prev_sample
        z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(11))
        assert torch.allclose(mean + var.sqrt() * z, step, atol=1e-5)
        assert var.flatten()[0].item() == pytest.approx(ref._get_variance(t_val).item(), rel=1e-4)
    mean0, var0 = d.q_posterior(d.predict_x0(out, xt, torch.zeros(2, dtype=torch.long)), xt,
                                torch.zeros(2, dtype=torch.long))
    assert torch.allclose(mean0, ref.step(out, 0, xt).prev_sample, atol=1e-5) and (var0 == 0).all()


def test_q_posterior_closed_form_and_snr():
    d = Diffusion("quadratic", 100)
    t = torch.tensor([0, 1, 50, 99])
    b, ab = d.betas[t], d.alphas_cumprod[t]
    ab_prev = torch.where(t > 0, d.alphas_cumprod[(t - 1).clamp(min=0)], torch.tensor(1.0, dtype=torch.float64))
    x0, xt = _image(4), _image(4, seed=1)
    mean, var = d.q_posterior(x0, xt, t)
    c0 = (b * ab_prev.sqrt() / (1 - ab)).float().view(-1, 1, 1, 1)
    ct = ((1 - ab_prev) * (1 - b).sqrt() / (1 - ab)).float().view(-1, 1, 1, 1)
    assert torch.allclose(mean, c0 * x0 + ct * xt, atol=1e-6)
    assert torch.allclose(var.flatten().double(), b * (1 - ab_prev) / (1 - ab), rtol=1e-6)
    assert torch.allclose(d.snr(t).double(), ab / (1 - ab), rtol=1e-6)


def test_respace_betas_closed_form():
    d = Diffusion("cosine", 100)
    kept = torch.tensor([90, 0, 30, 60])          # any order: sorted internally
    betas = d.respace(kept)
    ab = d.alphas_cumprod[torch.tensor([0, 30, 60, 90])]
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1 - ab[0].item(), rel=1e-12)
    assert torch.allclose(betas[1:], 1 - ab[1:] / ab[:-1], rtol=1e-12)
    assert torch.allclose(torch.cumprod(1 - betas, 0), ab, rtol=1e-12)
    assert torch.allclose(d.respace(torch.arange(100)), d.betas, rtol=1e-10)
    with pytest.raises(ValueError):
        d.respace(torch.tensor([0, 0, 5]))
