"""bench.samplers' option and step validation: each sampler's options, the steps it accepts, and
the one-line errors that teach the valid choices."""
import pytest
import torch

from bench.diffusion import Diffusion
from bench.errors import BenchError
from bench.samplers import (
    SAMPLER_OPTIONS,
    SAMPLERS,
    check_sampler_opts,
    ddim,
    ddpm,
    resolve_steps,
    respaced,
    shortened,
)


def zero(x, t):
    """A denoiser that predicts 0 (the refusals below happen before any call)."""
    return torch.zeros_like(x)


def test_sampler_options_cover_the_samplers():
    assert set(SAMPLER_OPTIONS) == set(SAMPLERS)
    assert SAMPLER_OPTIONS["ddim"]["spacing"] == ("uniform", "quadratic")


@pytest.mark.parametrize("name,opts,match", [
    ("ddim", {"etaa": 0.5}, r"unknown ddim option 'etaa'.*choose from clip, eta, spacing, t_start"),
    ("ddim", {"spacing": "log"}, r"x.yaml: eval.sampler_opts.spacing: unknown spacing 'log'; "
                                 r"choose from quadratic, uniform"),
    ("ddim", {"eta": "one"}, r"eval.sampler_opts.eta: expected float, got 'one'"),
    ("ddpm", {"clip": 1}, r"clip: expected bool"),
    ("respaced", {"variance": "learned"}, r"choose from beta_linear, fixed_large, fixed_small"),
    ("ddmi", {}, r"unknown sampler 'ddmi' \(did you mean ddpm, ddim\?\); choose from ddim, ddpm, euler, heun, respaced"),
])
def test_check_sampler_opts_teaches(name, opts, match):
    with pytest.raises(BenchError, match=match):
        check_sampler_opts(name, opts, "x.yaml: eval.sampler_opts")


def test_resolve_steps_defaults_and_errors():
    assert resolve_steps("ddim", None, 1000) == 50 and resolve_steps("ddim", None, 20) == 20
    assert resolve_steps("ddpm", None, 100) == 100 == resolve_steps("ddpm", 100, 100)
    assert resolve_steps("respaced", None, 100) == 100 and resolve_steps("shortened", 25, 100) == 25
    for bad in (0, 101, 2.5, True):
        with pytest.raises(BenchError, match=r"x.yaml: eval.steps: .* choose an integer in 1\.\.100"):
            resolve_steps("ddim", bad, 100, "x.yaml: eval.steps")
    with pytest.raises(BenchError, match=r"x.yaml: eval.steps: ddpm runs the full chain"):
        resolve_steps("ddpm", 50, 100, "x.yaml: eval.steps")


def test_check_sampler_opts_accepts_valid():
    check_sampler_opts("ddim", {"eta": 1, "spacing": "quadratic", "clip": False, "t_start": 10}, "w")
    check_sampler_opts("shortened", {"variance": "fixed_small"}, "w")


def test_samplers_refuse_bad_steps_and_opts():
    d = Diffusion("linear", 100)
    m = zero   # every call below is refused before the model runs
    with pytest.raises(BenchError, match="ddpm runs the full chain; use 100 or null"):
        ddpm(m, d, (1, 1, 4, 4), steps=50)
    with pytest.raises(BenchError, match=r"sampler.steps: 200 is out of range; choose an integer in 1\.\.100"):
        ddim(m, d, (1, 1, 4, 4), steps=200)
    with pytest.raises(BenchError, match=r"choose an integer in 1\.\.100"):
        shortened(m, d, (1, 1, 4, 4), steps=0)
    with pytest.raises(BenchError, match=r"sampler_opts: unknown respaced option 'eta'; choose from clip"):
        respaced(m, d, (1, 1, 4, 4), steps=10, eta=0.0)
    with pytest.raises(BenchError, match=r"t_start: 100 is out of range; choose 0\.\.99"):
        ddim(m, d, (1, 1, 4, 4), steps=10, t_start=100)
    with pytest.raises(BenchError, match=r"eta: must be >= 0"):
        ddim(m, d, (1, 1, 4, 4), steps=10, eta=-1.0)
