"""β endpoints (`diffusion.beta_start` / `beta_end`, issue 11 item 1) against diffusers' DDPMScheduler."""
import pytest
import torch
from diffusers import DDPMScheduler

from bench.diffusion import Diffusion

DIFFUSERS_NAME = {"linear": "linear", "quadratic": "scaled_linear", "sigmoid": "sigmoid"}


@pytest.mark.parametrize("schedule", sorted(DIFFUSERS_NAME))
@pytest.mark.parametrize("start,end", [(1e-3, 0.02), (1e-4, 0.02), (5e-4, 0.01)])
def test_endpoints_match_diffusers_at_T1000(schedule, start, end):
    ours = Diffusion(schedule, 1000, beta_start=start, beta_end=end)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=start, beta_end=end,
                        beta_schedule=DIFFUSERS_NAME[schedule])
    assert torch.allclose(ours.betas, ref.betas.double(), atol=1e-6, rtol=0)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod.double(), atol=1e-6, rtol=0)
    if schedule != "sigmoid":    # sigmoid(±6) stops short of its endpoints, as diffusers'
        assert ours.betas[0].item() == pytest.approx(start, rel=1e-6)
        assert ours.betas[-1].item() == pytest.approx(end, rel=1e-6)


def test_endpoints_scale_by_1000_over_T_as_diffusers_with_scaled_endpoints():
    ours = Diffusion("linear", 250, beta_start=1e-3, beta_end=0.02)
    ref = DDPMScheduler(num_train_timesteps=250, beta_start=4e-3, beta_end=0.08)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod.double(), atol=1e-6, rtol=0)


def test_study_003_endpoints_change_snr_by_the_issues_factor():
    """Issue 11's 1.4-2.5x at t = 50..950: the default's SNR over 003's (1e-3 -> 0.02 adds noise)."""
    seed, ho = Diffusion(beta_start=1e-3), Diffusion()
    t = torch.arange(49, 1000, 50)     # 1-based t = 50, 100, ..., 950
    ratio = ho.snr(t) / seed.snr(t)
    assert ratio.max().item() == pytest.approx(2.55, abs=0.01)   # at t = 50
    assert ratio.min().item() == pytest.approx(1.42, abs=0.01)   # around t = 350-400


def test_default_endpoints_are_ho_et_al():
    d = Diffusion("linear", 1000)
    assert d.betas[0].item() == 1e-4 and d.betas[-1].item() == 0.02


def test_endpoints_refused_for_cosine():
    with pytest.raises(ValueError, match="do not apply to schedule 'cosine'"):
        Diffusion("cosine", 1000, beta_start=1e-3)
