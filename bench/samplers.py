"""Samplers: ancestral DDPM, DDIM, respaced DDPM, and study 002's shortened schedule.

Sources: Ho et al. 2020 Algorithm 2 (ancestral sampling, σ²_t = β_t or β̃_t); Song et al. 2021
(DDIM eq. 12, η; uniform / quadratic timestep spacing as the DDIM repo `runners/diffusion.py`);
Nichol & Dhariwal 2021 (respacing: β re-derived from ᾱ on a subset, improved-diffusion
`respace.py`; x̂_0 clipping and ε re-derived from the clipped x̂_0, improved-diffusion
`gaussian_diffusion.py`).

Every sampler has the one signature

    sample(model, diffusion, shape, *, steps=None, generator=None, device="cpu", noise=None,
           progress=False, **opts) -> x_0 float32 in [-1, 1]

`noise` is x_T (else drawn with `generator` on `device`); every per-step noise is drawn with the same
generator, so a fixed seed gives identical samples. `generator` is a `torch.Generator` or a
`bench.noise.ImageNoise` (one generator per image, EDM's per-image seeds: each sample is then a
function of its own seed alone, whatever the batch). The model is called under `torch.no_grad()` with
integer timesteps of the training grid, in whatever train/eval mode the caller left it. The EDM
samplers `heun` / `euler` (bench.edm) share the signature and are registered here too.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from bench import edm
from bench.diffusion import SCHEDULES, Diffusion
from bench.errors import BenchError, choices_error
from bench.noise import randn

VARIANCES = ("fixed_large", "fixed_small", "beta_linear")
SPACINGS = ("uniform", "quadratic")


def timestep_subset(T: int, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """`steps` distinct timesteps of {0..T-1}, descending, spaced as the DDIM repo.

    uniform: 0, k, 2k, ... with k = T // steps (first `steps` of them);
    quadratic: int(linspace(0, √(0.8 T), steps)²), which stops at 0.8 T as in the DDIM repo, except
    that a timestep the truncation repeats (the repo runs 0 twice at T=1000, 50 steps) is moved up to
    the previous one + 1, so there are always `steps` distinct timesteps.
    """
    if spacing not in SPACINGS:
        raise choices_error("sampler.spacing", "spacing", spacing, SPACINGS)
    if not 1 <= steps <= T:
        raise BenchError(f"sampler.steps: {steps} is out of range; choose 1..{T}")
    if spacing == "uniform":
        ts = torch.arange(steps, dtype=torch.long) * (T // steps)
    else:
        ts = (torch.linspace(0, (0.8 * T) ** 0.5, steps, dtype=torch.float64) ** 2).long()
        for i in range(1, steps):
            ts[i] = max(int(ts[i]), int(ts[i - 1]) + 1)
    return ts.flip(0)


# ----------------------------------------------------------------------------------------------
# Ho et al. 2020 Algorithm 2 (ancestral sampling), run on any β table whose step i the model
# sees as training timestep model_t[i]: the full chain, a respaced one, or the seed's shortened one.

def _start(shape, noise, generator, device) -> torch.Tensor:
    if noise is not None:
        return noise.to(device, torch.float32)
    return randn(shape, generator, device)


def _ancestral(model, chain: Diffusion, model_t: torch.Tensor, x: torch.Tensor, *,
               variance: str, clip: bool, generator, progress: bool) -> torch.Tensor:
    """x_{t-1} = μ̃(x̂_0, x_t) + σ_t z for t = n-1 .. 0 (Ho et al. eqs. 6-7, 11); no noise at t = 0.

    σ²_t = β̃_t (fixed_small), β_t (fixed_large), or σ_t = β_t (beta_linear: study 004 §3's final
    sampler, σ² = β²). improved-diffusion stores β̃_1 in place of β_0 for fixed_large's
    log-variance; it only matters for likelihoods, since no noise is added at t = 0, so here σ²_0
    is never used.
    """
    model_t = model_t.to(x.device)
    sigma = sampling_sigma(chain, variance).to(torch.float32).to(x.device)
    for i in tqdm(range(chain.T - 1, -1, -1), disable=not progress, desc="ddpm"):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        with torch.no_grad():
            out = model(x, model_t[t]).float()
        x0 = chain.predict_x0(out, x, t)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = chain.q_posterior(x0, x, t)
        if i > 0:
            z = randn(x.shape, generator, x.device)
            x = mean + sigma[i] * z
        else:
            x = mean
    return x.clamp(-1, 1)


def sampling_sigma(chain: Diffusion, variance: str) -> torch.Tensor:
    """σ_t of the ancestral step, float64 [T]: √β̃_t, √β_t, or β_t (beta_linear)."""
    if variance not in VARIANCES:
        raise choices_error("sampler_opts.variance", "variance", variance, VARIANCES)
    if variance == "beta_linear":
        return chain.betas.clone()
    return (chain.posterior_variance if variance == "fixed_small" else chain.betas).sqrt()


def ddpm(model, diffusion: Diffusion, shape, *, steps=None, generator=None, device="cpu",
         noise=None, progress=False, variance="fixed_large", clip=True, **opts) -> torch.Tensor:
    """Ho et al. Algorithm 2 over all T steps; σ²_t = β_t (fixed_large), β̃_t (fixed_small), β_t² (beta_linear)."""
    check_sampler_opts("ddpm", {"variance": variance, "clip": clip, **opts}, "sampler_opts")
    resolve_steps("ddpm", steps, diffusion.T)
    x = _start(shape, noise, generator, device)
    return _ancestral(model, diffusion, torch.arange(diffusion.T), x, variance=variance,
                      clip=clip, generator=generator, progress=progress)


def respaced(model, diffusion: Diffusion, shape, *, steps=None, generator=None, device="cpu",
             noise=None, progress=False, variance="fixed_large", spacing="uniform", clip=True,
             **opts) -> torch.Tensor:
    """Nichol & Dhariwal 2021 §4: ancestral DDPM on `steps` kept timesteps, β re-derived from ᾱ.

    The respaced chain has the training ᾱ at every kept timestep, and the model is called with the
    original timestep indices.
    """
    check_sampler_opts("respaced", {"variance": variance, "spacing": spacing, "clip": clip, **opts},
                       "sampler_opts")
    kept = timestep_subset(diffusion.T, resolve_steps("respaced", steps, diffusion.T), spacing).flip(0)  # ascending
    chain = Diffusion.from_betas(diffusion.respace(kept), target=diffusion.target)
    x = _start(shape, noise, generator, device)
    return _ancestral(model, chain, kept, x, variance=variance, clip=clip,
                      generator=generator, progress=progress)


def shortened_betas(diffusion: Diffusion, steps: int) -> torch.Tensor:
    """Study 002's fresh `steps`-step schedule (float64), kept for comparison with `respaced`.

    Linear: β'_1 = β_1 and β'_end = β_1 + (β_T - β_1)·T/steps, linear in between (the seed's rule,
    §3.2.1). Other schedules: the schedule's own T=steps table (SCHEDULES[name](steps)).
    """
    if diffusion.schedule == "linear":
        b = diffusion.betas
        end = b[0] + (b[-1] - b[0]) * diffusion.T / steps
        return torch.linspace(float(b[0]), float(end), steps, dtype=torch.float64).clamp(max=0.999)
    if diffusion.schedule not in SCHEDULES:
        raise BenchError(f"sampler: shortened needs a named schedule; got {diffusion.schedule!r}")
    return SCHEDULES[diffusion.schedule](steps)


def shortened(model, diffusion: Diffusion, shape, *, steps=None, generator=None, device="cpu",
              noise=None, progress=False, variance="fixed_large", clip=True, **opts) -> torch.Tensor:
    """Study 002's method (inferior to `respaced`): a fresh short β schedule (`shortened_betas`).

    Step i of the short chain (0-based) is shown to the model as training timestep
    round((i + 1)·T/steps) - 1, the seed's normalised time (i + 1)/steps mapped onto the training
    grid. Its ᾱ only approximates the training ᾱ there, which is the seed's error; `respaced` is exact.
    """
    check_sampler_opts("shortened", {"variance": variance, "clip": clip, **opts}, "sampler_opts")
    steps = resolve_steps("shortened", steps, diffusion.T)
    chain = Diffusion.from_betas(shortened_betas(diffusion, steps), target=diffusion.target)
    i = torch.arange(1, steps + 1, dtype=torch.float64)
    model_t = (i * diffusion.T / steps).round().long() - 1
    x = _start(shape, noise, generator, device)
    return _ancestral(model, chain, model_t, x, variance=variance, clip=clip,
                      generator=generator, progress=progress)


# ----------------------------------------------------------------------------------------------
# Song et al. 2021 (DDIM) eq. 12: x_{t'} = √ᾱ_{t'} x̂_0 + √(1 - ᾱ_{t'} - σ²) ε̂ + σ z,
# σ = η √((1 - ᾱ_{t'})/(1 - ᾱ_t)) √(1 - ᾱ_t/ᾱ_{t'}); ᾱ after the last step is 1.

def _ddim_chain(T: int, steps: int, spacing: str, t_start: int) -> torch.Tensor:
    """Descending DDIM timesteps: the subset of {0..T-1}, or of {0..t_start} topped by t_start."""
    if not 0 <= t_start <= T - 1:
        raise BenchError(f"sampler.t_start: {t_start} is out of range; choose 0..{T - 1}")
    if t_start == T - 1:
        return timestep_subset(T, steps, spacing)
    if steps > t_start + 1:
        raise BenchError(f"sampler.steps: {steps} exceeds the {t_start + 1} timesteps up to "
                         f"t_start={t_start}; choose 1..{t_start + 1}")
    ts = timestep_subset(t_start + 1, steps, spacing)
    return ts if ts[0] == t_start else torch.cat([ts.new_tensor([t_start]), ts])


def _eps_x0(model, diffusion, x, t, clip):
    with torch.no_grad():
        out = model(x, t).float()
    x0 = diffusion.predict_x0(out, x, t)
    if clip:
        return diffusion.eps_from_x0(x0.clamp(-1, 1), x, t), x0.clamp(-1, 1)
    return diffusion.predict_eps(out, x, t), x0


def ddim(model, diffusion: Diffusion, shape, *, steps=None, generator=None, device="cpu",
         noise=None, progress=False, eta=0.0, spacing="uniform", clip=True, t_start=None,
         **opts) -> torch.Tensor:
    """DDIM (Song et al. eq. 12) over `steps` timesteps (default min(50, T)); η=1 is ancestral (β̃).

    `t_start` (default T-1) decodes from an intermediate x_{t_start} given as `noise`.
    """
    given = {"eta": eta, "spacing": spacing, "clip": clip, **opts}
    if t_start is not None:
        given["t_start"] = t_start
    check_sampler_opts("ddim", given, "sampler_opts")
    if eta < 0:
        raise BenchError(f"ddim.eta: must be >= 0 (0 = deterministic, 1 = ancestral), got {eta}")
    t_start = diffusion.T - 1 if t_start is None else t_start
    ts = _ddim_chain(diffusion.T, resolve_steps("ddim", steps, diffusion.T), spacing, t_start).tolist()
    x = _start(shape, noise, generator, device)
    ab = diffusion.alphas_cumprod.to(torch.float32).to(x.device)
    for i, t_now in enumerate(tqdm(ts, disable=not progress, desc="ddim")):
        t = torch.full((x.shape[0],), t_now, device=x.device, dtype=torch.long)
        eps, x0 = _eps_x0(model, diffusion, x, t, clip)
        a_t = ab[t_now]
        a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a_t)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + sigma * randn(x.shape, generator, x.device)
    return x.clamp(-1, 1)


def ddim_encode(model, diffusion: Diffusion, x0: torch.Tensor, *, t_end: int, steps: int,
                spacing: str = "uniform", clip: bool = False) -> torch.Tensor:
    """Deterministic DDIM inversion (η = 0) of x_0 up to x_{t_end}, for encode -> decode round trips.

    Walks `ddim`'s chain backwards; each step from level t' to t calls the model at (x_{t'}, t), as
    diffusers' DDIMInverseScheduler. Decode with `ddim(..., noise=x_t_end, t_start=t_end)`.
    """
    ts = _ddim_chain(diffusion.T, steps, spacing, t_end).flip(0).tolist()  # ascending
    x = x0.float()
    ab = diffusion.alphas_cumprod.to(torch.float32).to(x.device)
    a_prev = torch.ones_like(ab[0])
    for t_now in ts:
        t = torch.full((x.shape[0],), t_now, device=x.device, dtype=torch.long)
        with torch.no_grad():
            out = model(x, t).float()
        eps = diffusion.predict_eps(out, x, t)
        x0_hat = (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        x = ab[t_now].sqrt() * x0_hat + (1 - ab[t_now]).sqrt() * eps
        a_prev = ab[t_now]
    return x


SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "respaced": respaced, "shortened": shortened,
            "heun": edm.heun, "euler": edm.euler}
FORMULATION_SAMPLERS = {"ddpm": ("ddpm", "ddim", "respaced", "shortened"), "edm": edm.SAMPLERS}
DETERMINISTIC = ("ddim", "heun", "euler")  # their default: no noise after x_T (DDIM's eta = 0)

SAMPLER_OPTIONS: dict[str, dict[str, tuple | type]] = {
    "ddpm": {"variance": VARIANCES, "clip": bool},
    "ddim": {"eta": float, "spacing": SPACINGS, "clip": bool, "t_start": int},
    "respaced": {"variance": VARIANCES, "spacing": SPACINGS, "clip": bool},
    "shortened": {"variance": VARIANCES, "clip": bool}, "heun": {}, "euler": {},
}


def check_formulation(formulation: str, sampler: str, where: str) -> None:
    """A BenchError unless `sampler` samples `formulation` (heun/euler: edm; the rest: ddpm)."""
    if sampler in SAMPLERS and sampler not in FORMULATION_SAMPLERS[formulation]:
        raise BenchError(f"{where}: {sampler!r} is not a sampler of diffusion.formulation {formulation}; "
                         f"choose from {', '.join(FORMULATION_SAMPLERS[formulation])}")


def resolve_steps(name: str, steps, T: int, where: str = "sampler.steps") -> int:
    """The number of steps sampler `name` takes for `steps` (None = its default), or a BenchError.

    ddpm: always T; ddim: default min(50, T); respaced / shortened: default T; any: 1..T;
    heun / euler: N noise levels, default 18, 1..10 000 (bench.edm.resolve_steps).
    """
    if name in edm.SAMPLERS:
        return edm.resolve_steps(steps, where)
    if steps is None:
        return min(50, T) if name == "ddim" else T
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise BenchError(f"{where}: {steps!r} is out of range; choose an integer in 1..{T} (T={T})")
    if name == "ddpm" and steps != T:
        raise BenchError(f"{where}: ddpm runs the full chain; use {T} or null (or the respaced / "
                         f"ddim samplers for fewer steps), got {steps}")
    return steps


def _type_ok(value, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_sampler_opts(name: str, opts: dict, where: str) -> None:
    """Raise BenchError for an unknown sampler, an unknown option, or a bad option value."""
    if name not in SAMPLERS:
        raise choices_error(where, "sampler", name, SAMPLERS)
    allowed = SAMPLER_OPTIONS[name]
    for key, value in opts.items():
        if key not in allowed:
            raise choices_error(where, f"{name} option", key, allowed)
        kind = allowed[key]
        if isinstance(kind, tuple):
            if value not in kind:
                raise choices_error(f"{where}.{key}", key, value, kind)
        elif not _type_ok(value, kind):
            raise BenchError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
