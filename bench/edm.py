"""The EDM formulation (Karras et al. 2022, "Elucidating the design space of diffusion-based
generative models"): preconditioning, log-normal σ training, the λ(σ) loss, the ρ = 7 σ schedule and
the deterministic Heun / Euler samplers (Algorithm 1). The maths only, no I/O.

Source: the paper's Table 1 (c_skip, c_out, c_in, c_noise, λ, p_train, eq. 5) and Algorithm 1, and
its code (`training/networks.py` EDMPrecond, `training/loss.py` EDMLoss, `generate.py`
edm_sampler): networks and preconditioning apart, so any registered denoiser is wrapped unchanged.

The network's noise input. The denoiser contract (DESIGN.md) is `model(x, t: [B] long)`, and some
denoisers look t up in a learned table, so a float c_noise = ¼ ln σ cannot be fed as it is. The
wrapper feeds the training-grid timestep whose VP noise level is nearest in log σ:
t(σ) = argmin_t |ln σ_vp(t) − ln σ|, σ_vp(t) = √((1 − ᾱ_t)/ᾱ_t) of the run's `diffusion.schedule`
and `timesteps` (an x_t of the VP chain is √ᾱ_t (x_0 + σ_vp(t) ε)). t(σ) is a monotone step function
of c_noise, so the network sees c_noise quantized to the grid (half a grid step in ln σ at most,
e.g. ±0.2 at t = 0 and ±0.003 at t = 500 of the linear T = 1000 grid; σ outside
[σ_vp(0), σ_vp(T−1)] = [0.010, 157] is clamped to the ends). The preconditioning coefficients use
the exact σ. `c_noise` below is the paper's value, kept for the Table 1 tests and the record.

Pixels are in [-1, 1] (bench.images.to_float), so σ_data = 0.5 as in the paper.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from bench.diffusion import Diffusion
from bench.errors import BenchError
from bench.noise import randn

SIGMA_DATA, P_MEAN, P_STD = 0.5, -1.2, 1.2        # Table 1, "ours" column
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0      # eq. 5, Algorithm 1
DEFAULT_STEPS = 18                                # EDM generate.py num_steps (NFE 35 for Heun)


def preconditioning(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """Table 1: (c_skip, c_out, c_in, c_noise) at noise levels σ (any shape, σ's dtype)."""
    s2, d2 = sigma**2, sigma_data**2
    return d2 / (s2 + d2), sigma * sigma_data / (s2 + d2).sqrt(), 1 / (s2 + d2).sqrt(), sigma.log() / 4


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """Table 1: λ(σ) = (σ² + σ_data²) / (σ σ_data)², which is 1 / c_out(σ)²."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """Eq. 5: σ_i = (σ_max^(1/ρ) + i/(N−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i < N, then σ_N = 0 (float64)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(hi + ramp * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def vp_sigmas(diffusion: Diffusion) -> torch.Tensor:
    """σ_vp(t) = √((1 − ᾱ_t)/ᾱ_t) of a DDPM grid, float64 [T], increasing in t."""
    ab = diffusion.alphas_cumprod
    return ((1 - ab) / ab).sqrt()


# ----------------------------------------------------------------------------------------------
# EDM training/networks.py EDMPrecond: D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ)).

class Precond(nn.Module):
    """Any (x, t long) denoiser F as the EDM denoiser D(x; σ), σ a [B] float tensor."""

    def __init__(self, net: nn.Module, edm: "EDM"):
        super().__init__()
        self.net, self.edm = net, edm

    def raw(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """F(c_in x; t(σ)) in float32: the network output before c_skip / c_out."""
        _, _, c_in, _ = preconditioning(sigma.float(), self.edm.sigma_data)
        return self.net(c_in.view(-1, 1, 1, 1) * x, self.edm.timestep(sigma)).float()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        c_skip, c_out, _, _ = preconditioning(sigma.float(), self.edm.sigma_data)
        return c_skip.view(-1, 1, 1, 1) * x.float() + c_out.view(-1, 1, 1, 1) * self.raw(x, sigma)


class EDM:
    """The run's EDM formulation; duck-types `bench.diffusion.Diffusion` where the harness needs it
    (`T`, `loss`, `add_noise`, `denoise`), over the VP grid of `vp` (see the module docstring)."""

    formulation = "edm"

    def __init__(
        self,
        vp: Diffusion,                # the DDPM grid: t(σ) for the network, the VP σ of recon metrics
        sigma_data: float = SIGMA_DATA,  # standard deviation of the data (pixels in [-1, 1])
        p_mean: float = P_MEAN,       # ln σ ~ N(p_mean, p_std²) during training
        p_std: float = P_STD,
        sigma_min: float = SIGMA_MIN,  # sampling schedule (eq. 5)
        sigma_max: float = SIGMA_MAX,
        rho: float = RHO,
    ):
        self.vp, self.T = vp, vp.T
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self._log_vp = vp_sigmas(vp).log()
        self._cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg) -> "EDM":
        """From a suite's `diffusion:` section: schedule/timesteps/β give the VP grid, `edm` the rest."""
        vp = Diffusion(cfg.schedule, cfg.timesteps, "eps", None, cfg.beta_start, cfg.beta_end)
        opts = cfg.edm
        if opts is None:
            return cls(vp)
        return cls(vp, opts.sigma_data, opts.p_mean, opts.p_std, opts.sigma_min, opts.sigma_max,
                   opts.rho)

    def __repr__(self) -> str:
        return (f"EDM(sigma_data={self.sigma_data}, P=({self.p_mean}, {self.p_std}), "
                f"sigma=[{self.sigma_min}, {self.sigma_max}], rho={self.rho}, grid={self.vp!r})")

    def _grid(self, name: str, device) -> torch.Tensor:
        key = f"{name}:{device}"
        if key not in self._cache:
            table = self._log_vp if name == "log_vp" else self.vp.alphas_cumprod.sqrt()
            self._cache[key] = table.to(torch.float32).to(device)
        return self._cache[key]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """t(σ): the grid timestep whose ln σ_vp is nearest ln σ, long [B] (clamped to [0, T−1])."""
        log_vp = self._grid("log_vp", sigma.device)
        log_s = sigma.float().clamp(min=1e-30).log().contiguous()
        hi = torch.searchsorted(log_vp, log_s).clamp(1, self.T - 1) if self.T > 1 else None
        if hi is None:
            return torch.zeros(sigma.shape, dtype=torch.long, device=sigma.device)
        lower_nearer = (log_s - log_vp[hi - 1]) <= (log_vp[hi] - log_s)
        return torch.where(lower_nearer, hi - 1, hi)

    def sigma_of(self, t: torch.Tensor) -> torch.Tensor:
        """σ_vp at grid timesteps t (long [B]), float32 [B]."""
        return self._grid("log_vp", t.device)[t.long()].exp()

    def train_sigma(self, z: torch.Tensor) -> torch.Tensor:
        """σ = exp(P_mean + P_std z): z ~ N(0, 1) gives Table 1's log-normal p_train(σ)."""
        return (self.p_mean + self.p_std * z.float()).exp()

    def stratum_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ at the ((t + ½)/T)-quantile of p_train: stratum t of T (the validation triples' t)."""
        u = (t.double() + 0.5) / self.T
        return self.train_sigma((math.sqrt(2) * torch.erfinv(2 * u - 1)).float())

    def denoiser(self, model) -> Precond:
        return Precond(model, self)

    def loss(self, model, x0: torch.Tensor, *, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             mask: torch.Tensor | None = None):
        """EDM loss λ(σ) ‖D(x_0 + σ n; σ) − x_0‖² (mean over C, H, W) -> (loss [B], t [B]).

        Computed as ‖F − (x_0 − c_skip x)/c_out‖², equal since λ c_out² = 1 (eq. 8), without the
        cancellation of D − x_0 at small σ. σ ~ p_train drawn with `generator` unless `t` is given,
        which then picks σ at stratum t of T (`stratum_sigma`: fixed validation noise levels).
        `mask` ([B or 1, 1, H, W], 1 = scored): the mean over those pixels only (task.loss_on: hole).
        """
        b = x0.shape[0]
        if t is None:
            sigma = self.train_sigma(torch.randn((b,), generator=generator, device=x0.device))
            t = self.timestep(sigma)
        else:
            sigma = self.stratum_sigma(t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        c_skip, c_out, _, _ = (c.view(-1, 1, 1, 1) for c in preconditioning(sigma, self.sigma_data))
        x = x0.float() + sigma.view(-1, 1, 1, 1) * noise.float()
        target = (x0.float() - c_skip * x) / c_out
        err = (self.denoiser(model).raw(x, sigma) - target) ** 2
        dims = tuple(range(1, x0.ndim))
        if mask is None:
            return err.mean(dim=dims), t
        mask = mask.to(err.dtype).expand_as(err)
        return (err * mask).sum(dim=dims) / mask.sum(dim=dims), t

    # -- DDPM-timestep views (recon metrics, x̂0 panels): the VP x_t at grid timestep t -----------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The DDPM x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. eq. 4), the same image as the DDPM runs."""
        return self.vp.add_noise(x0, noise, t)

    def denoise(self, model, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂_0 = D(x_t / √ᾱ_t; σ_vp(t)) of a VP x_t: one-step reconstruction at the same SNR."""
        scale = self._grid("sqrt_ab", t.device)[t.long()].view(-1, 1, 1, 1)
        return self.denoiser(model)(x_t.float() / scale, self.sigma_of(t))

    def sigmas(self, steps: int) -> torch.Tensor:
        """The sampling σ_0 > … > σ_{N−1} > σ_N = 0 (eq. 5), float32 on the host (the sampler loop
        reads them as floats: no device copy-out per step)."""
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho).float()


# ----------------------------------------------------------------------------------------------
# Algorithm 1 (deterministic, S_churn = 0): dx/dσ = (x − D(x; σ))/σ from x_0 = σ_0 n, Heun's
# 2nd-order step except the last (σ_N = 0), which is Euler. `euler` is the 1st-order step only.

SAMPLERS = ("heun", "euler")   # the samplers of formulation edm (bench.samplers.SAMPLERS has them)
MAX_STEPS = 10_000


def resolve_steps(steps, where: str = "sampler.steps") -> int:
    """N, the noise levels of an EDM sampler (None: 18, EDM's default), or a BenchError."""
    if steps is None:
        return DEFAULT_STEPS
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise BenchError(f"{where}: {steps!r} is out of range; choose an integer in 1..{MAX_STEPS} "
                         f"(N, the noise levels of EDM's σ schedule; default {DEFAULT_STEPS})")
    return steps


def _no_opts(name: str, opts: dict) -> None:
    if opts:
        raise BenchError(f"sampler_opts: {name} takes no options (deterministic, σ schedule from "
                         f"diffusion.edm), got {', '.join(map(str, opts))}")


def solve(model, edm: EDM, x: torch.Tensor, sigmas: torch.Tensor, *, second_order: bool = True,
          progress: bool = False, desc: str = "heun") -> torch.Tensor:
    """Algorithm 1's loop from x at σ_0 down the given σ (ending at 0); x_N unclamped."""
    D = edm.denoiser(model)
    ones = torch.ones(x.shape[0], device=x.device)
    levels = sigmas.tolist()   # host floats: no device sync per step
    for i in tqdm(range(len(levels) - 1), disable=not progress, desc=desc):
        s, s_next = levels[i], levels[i + 1]
        with torch.no_grad():
            d = (x - D(x, s * ones)) / s
            x_next = x + (s_next - s) * d
            if second_order and s_next > 0:
                d_next = (x_next - D(x_next, s_next * ones)) / s_next
                x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
    return x


def _ode(model, edm: EDM, shape, steps, generator, device, noise, progress, heun: bool, desc: str):
    sigmas = edm.sigmas(resolve_steps(steps))
    x = noise.to(device, torch.float32) if noise is not None else randn(shape, generator, device)
    return solve(model, edm, x * sigmas[0].item(), sigmas, second_order=heun, progress=progress,
                 desc=desc).clamp(-1, 1)


def heun(model, edm: EDM, shape, *, steps=None, generator=None, device="cpu", noise=None,
         progress=False, **opts) -> torch.Tensor:
    """EDM Algorithm 1 over `steps` = N noise levels (default 18; 2N − 1 network calls).

    `noise` is n ~ N(0, I) (the harness's fixed grid noise), scaled by σ_0 = σ_max here.
    """
    _no_opts("heun", opts)
    return _ode(model, edm, shape, steps, generator, device, noise, progress, True, "heun")


def euler(model, edm: EDM, shape, *, steps=None, generator=None, device="cpu", noise=None,
          progress=False, **opts) -> torch.Tensor:
    """Euler steps on the same ODE and σ schedule (N network calls), as diffusers' EDMEulerScheduler."""
    _no_opts("euler", opts)
    return _ode(model, edm, shape, steps, generator, device, noise, progress, False, "euler")


def make_diffusion(cfg):
    """The run's formulation object from its `diffusion:` section: EDM or the DDPM `Diffusion`."""
    if getattr(cfg, "formulation", "ddpm") == "edm":
        return EDM.from_config(cfg)
    return Diffusion.from_config(cfg)
