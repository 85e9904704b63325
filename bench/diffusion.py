"""Noise schedules, the forward process, training targets and losses, and the true posterior.

Sources: Ho et al. 2020 (DDPM: eqs. 4, 6-7, 14), Nichol & Dhariwal 2021 (improved DDPM: cosine
schedule eq. 17, timestep respacing as improved-diffusion `respace.py`), Salimans & Ho 2022 (the v
target), Hang et al. 2023 (Min-SNR-γ loss weighting). Verbs follow diffusers (`add_noise`).

Conventions: an integer timestep t in {0, ..., T-1} indexes `betas[t]`, the β of step t+1 in Ho et
al.'s 1-based notation (as diffusers and improved-diffusion). Schedule tables are float64 on the
CPU; per-example coefficients are gathered from them and handed to the caller as float32 on the
device of `t`'s tensors.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from bench.errors import choices_error

TARGETS = ("eps", "x0", "v")


BETA_START, BETA_END = 1e-4, 0.02   # Ho et al. 2020 §4, at T = 1000
ENDPOINT_SCHEDULES = ("linear", "quadratic", "sigmoid")   # the schedules β_start/β_end shape


def _linear_endpoints(T: int, start: float = BETA_START, end: float = BETA_END) -> tuple[float, float]:
    """β_1 and β_T given at T=1000 (Ho et al.: 1e-4, 0.02), scaled by 1000/T (improved-diffusion).

    At T = 1000 they are diffusers' `DDPMScheduler(beta_start=..., beta_end=...)` endpoints.
    """
    scale = 1000.0 / T
    return start * scale, end * scale


def linear_betas(T: int, start: float = BETA_START, end: float = BETA_END) -> torch.Tensor:
    """Ho et al. 2020 §4: β linear from 1e-4 to 0.02 (for T=1000), or from the given endpoints."""
    start, end = _linear_endpoints(T, start, end)
    return torch.linspace(start, end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021 eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1+s)·π/2), β ≤ 0.999."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def quadratic_betas(T: int, start: float = BETA_START, end: float = BETA_END) -> torch.Tensor:
    """√β linear between the linear schedule's endpoints, squared (diffusers 'scaled_linear')."""
    start, end = _linear_endpoints(T, start, end)
    return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2


def sigmoid_betas(T: int, start: float = BETA_START, end: float = BETA_END) -> torch.Tensor:
    """GeoDiff (Xu et al. 2022) / diffusers 'sigmoid': sigmoid(linspace(-6, 6)) mapped onto [β_1, β_T]."""
    start, end = _linear_endpoints(T, start, end)
    return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (end - start) + start


SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "quadratic": quadratic_betas,
    "sigmoid": sigmoid_betas,
}


# ----------------------------------------------------------------------------------------------
# Gaussian diffusion of Ho et al. 2020: q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)   (eq. 4),
# with ε, x_0 or v (Salimans & Ho 2022) as the network's target, optionally Min-SNR-γ weighted.

class Diffusion:
    def __init__(
        self,
        schedule: str = "linear",     # a key of SCHEDULES
        timesteps: int = 1000,        # T
        target: str = "eps",          # what the network predicts: eps | x0 | v
        min_snr_gamma: float | None = None,  # Min-SNR-γ weight (Hang et al. 2023); None = plain MSE
        beta_start: float = BETA_START,  # β_1 at T = 1000 (linear, quadratic, sigmoid)
        beta_end: float = BETA_END,      # β_T at T = 1000
    ):
        if schedule not in SCHEDULES:
            raise choices_error("diffusion.schedule", "schedule", schedule, SCHEDULES)
        if schedule in ENDPOINT_SCHEDULES:
            betas = SCHEDULES[schedule](int(timesteps), beta_start, beta_end)
        elif (beta_start, beta_end) != (BETA_START, BETA_END):
            raise ValueError(f"beta_start/beta_end do not apply to schedule {schedule!r}; they shape "
                             f"only {', '.join(ENDPOINT_SCHEDULES)}")
        else:
            betas = SCHEDULES[schedule](int(timesteps))
        self._setup(betas, schedule, target, min_snr_gamma)

    @classmethod
    def from_config(cls, cfg) -> "Diffusion":
        """From a suite's `diffusion:` section (bench.config.schema.DiffusionConfig): every key."""
        return cls(cfg.schedule, cfg.timesteps, cfg.target, cfg.min_snr_gamma, cfg.beta_start,
                   cfg.beta_end)

    @classmethod
    def from_betas(cls, betas: torch.Tensor, target: str = "eps", name: str = "custom") -> "Diffusion":
        """A diffusion over an explicit β table (respaced / shortened sampling chains)."""
        self = cls.__new__(cls)
        self._setup(betas.detach().to("cpu", torch.float64), name, target, None)
        return self

    def _setup(self, betas, schedule, target, min_snr_gamma):
        if target not in TARGETS:
            raise choices_error("diffusion.target", "target", target, TARGETS)
        if not (betas.ndim == 1 and len(betas) >= 1 and (betas > 0).all() and (betas < 1).all()):
            raise ValueError("betas must be a 1-d table with values in (0, 1)")
        self.schedule, self.target, self.min_snr_gamma = schedule, target, min_snr_gamma
        self.betas = betas
        self.T = len(betas)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        # Ho et al. eq. 7: β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)  (zero at t = 0)
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"Diffusion(schedule={self.schedule!r}, T={self.T}, target={self.target!r})"

    # -- coefficient gathering ------------------------------------------------------------------
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        """A derived float64 table, cast to float32 once per device."""
        key = (name, str(device))
        if key not in self._cache:
            ab, ab_prev = self.alphas_cumprod, self.alphas_cumprod_prev
            table = {
                "sqrt_ab": ab.sqrt(), "sqrt_1m_ab": (1 - ab).sqrt(), "snr": ab / (1 - ab),
                "post_c0": self.betas * ab_prev.sqrt() / (1 - ab),
                "post_ct": (1 - ab_prev) * (1 - self.betas).sqrt() / (1 - ab),
                "post_var": self.posterior_variance, "betas": self.betas, "ab": ab,
            }[name]
            self._cache[key] = table.to(torch.float32).to(device)
        return self._cache[key]

    def _at(self, name: str, t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
        """Per-example coefficient `name` at timesteps t [B], shaped [B, 1, ..., 1] for broadcasting."""
        values = self._table(name, t.device)[t.long()]
        return values.view(-1, *([1] * (ndim - 1)))

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), float32 [B]."""
        return self._table("snr", t.device)[t.long()]

    # -- forward process and targets -----------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Ho et al. eq. 4: x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε."""
        return self._at("sqrt_ab", t, x0.ndim) * x0 + self._at("sqrt_1m_ab", t, x0.ndim) * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε, x_0, or v = √ᾱ_t ε - √(1 - ᾱ_t) x_0 (Salimans & Ho 2022 §4)."""
        if self.target == "eps":
            return noise
        if self.target == "x0":
            return x0
        return self._at("sqrt_ab", t, x0.ndim) * noise - self._at("sqrt_1m_ab", t, x0.ndim) * x0

    def predict_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """x̂_0 from the network output: (x_t - √(1-ᾱ) ε̂)/√ᾱ, x̂_0 itself, or √ᾱ x_t - √(1-ᾱ) v̂."""
        a, s = self._at("sqrt_ab", t, x_t.ndim), self._at("sqrt_1m_ab", t, x_t.ndim)
        if self.target == "eps":
            return (x_t - s * model_output) / a
        if self.target == "x0":
            return model_output
        return a * x_t - s * model_output

    def predict_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """ε̂ from the network output: ε̂ itself, (x_t - √ᾱ x̂_0)/√(1-ᾱ), or √(1-ᾱ) x_t + √ᾱ v̂."""
        a, s = self._at("sqrt_ab", t, x_t.ndim), self._at("sqrt_1m_ab", t, x_t.ndim)
        if self.target == "eps":
            return model_output
        if self.target == "x0":
            return (x_t - a * model_output) / s
        return s * x_t + a * model_output

    def denoise(self, model, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One-step x̂_0 of the network at (x_t, t) (the formulation-neutral verb; bench.edm.EDM too)."""
        return self.predict_x0(model(x_t, t).float(), x_t, t)

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε implied by x_t and a (possibly clipped) x̂_0: (x_t - √ᾱ x̂_0)/√(1-ᾱ)."""
        a, s = self._at("sqrt_ab", t, x_t.ndim), self._at("sqrt_1m_ab", t, x_t.ndim)
        return (x_t - a * x0) / s

    # -- loss ------------------------------------------------------------------------------------
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-γ weight (Hang et al. 2023 §3.4) for the configured target, float32 [B]; 1 if off."""
        if self.min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device)
        snr = self.snr(t)
        clipped = snr.clamp(max=float(self.min_snr_gamma))
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.target]

    def loss(self, model, x0: torch.Tensor, *, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             mask: torch.Tensor | None = None):
        """Ho et al. eq. 14 (L_simple) for the configured target -> (per-example loss [B], t [B]).

        t ~ U{0..T-1} and ε ~ N(0, I) are drawn with `generator` on x0's device unless given; the
        loss is the mean over C, H, W of the squared error, times the Min-SNR-γ weight if set.
        `mask` ([B or 1, 1, H, W], 1 = scored): the mean over those pixels only (study 002's loss on
        the generated half: `F.mse_loss(eps, eps_model(...))` of the bottom half alone).
        """
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.T, (b,), generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.add_noise(x0, noise, t)
        out = model(x_t, t)
        err = (out.float() - self.training_target(x0, noise, t).float()) ** 2
        dims = tuple(range(1, x0.ndim))
        if mask is None:
            return err.mean(dim=dims) * self.loss_weight(t), t
        mask = mask.to(err.dtype).expand_as(err)
        return (err * mask).sum(dim=dims) / mask.sum(dim=dims) * self.loss_weight(t), t

    # -- posterior and respacing -----------------------------------------------------------------
    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Ho et al. eqs. 6-7: q(x_{t-1} | x_t, x_0) = N(μ̃, β̃_t I) -> (mean, variance [B,1,1,1])."""
        mean = self._at("post_c0", t, x_t.ndim) * x0 + self._at("post_ct", t, x_t.ndim) * x_t
        return mean, self._at("post_var", t, x_t.ndim)

    def respace(self, timesteps: torch.Tensor) -> torch.Tensor:
        """β of the chain restricted to `timesteps` (improved-diffusion `respace.py`), float64.

        With the kept timesteps sorted ascending, β'_i = 1 - ᾱ_{t_i} / ᾱ_{t_{i-1}} (ᾱ_{t_{-1}} = 1), so
        the new chain has exactly the original ᾱ at every kept timestep.
        """
        ts = torch.as_tensor(timesteps, dtype=torch.long).cpu().sort().values
        if len(ts) == 0 or ts.unique().numel() != ts.numel() or ts[0] < 0 or ts[-1] >= self.T:
            raise ValueError(f"respace needs distinct timesteps in [0, {self.T - 1}], got {ts.tolist()}")
        ab = self.alphas_cumprod[ts]
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return 1 - ab / ab_prev
