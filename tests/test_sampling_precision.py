"""bf16 sampling against fp32 (CPU autocast twin; x_t accumulated in fp32) and the capture-independent
logic of CUDA-graph sampling (`bench.metrics.cuda_graphs`) with a replaying stand-in for the capture."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from architectures import create
from bench.config.schema import EvalConfig
from bench.diffusion import Diffusion
from bench.metrics.cuda_graphs import GraphedDenoiser, maybe_graphed
from bench.metrics.sampling import sample

pytestmark = pytest.mark.usefixtures("one_thread")
DIFFUSION = Diffusion(timesteps=1000)
S2 = 0.25  # data variance of the Gaussian oracle


class GaussianOracle(nn.Module):
    """The exact ε-predictor for data ~ N(0, S2 I): ε̂ = √(1-ᾱ) x_t / (ᾱ S2 + 1 - ᾱ), computed
    through an identity 1x1 conv so that autocast runs it in bf16. Records the input dtypes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.register_buffer("ab", DIFFUSION.alphas_cumprod.float())
        self.seen: set = set()
        self.cache: list = []  # autocast's weight-cast cache on/off at each call

    def forward(self, x, t):
        self.seen.add((x.dtype, self.conv(x).dtype))
        self.cache.append(torch.is_autocast_cache_enabled())
        ab = self.ab[t].view(-1, 1, 1, 1)
        return self.conv(x) * ((1 - ab).sqrt() / (ab * S2 + 1 - ab))


def noise(n=64, size=16, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [10, 50])
def test_bf16_sampling_matches_fp32_for_a_smooth_denoiser(steps):
    model, x_T = GaussianOracle(), noise()
    cfg = EvalConfig(sampler="ddim", steps=steps, sampler_opts={"clip": False})
    ref = sample(model, DIFFUSION, cfg, 64, (3, 16, 16), noise=x_T, amp="none")
    model.seen.clear()
    low = sample(model, DIFFUSION, cfg, 64, (3, 16, 16), noise=x_T, amp="bf16")
    assert model.seen == {(torch.float32, torch.bfloat16)}  # x_t fp32 in, the network in bf16
    diff = (ref - low).abs()
    assert 0 < diff.max() <= 0.02 and diff.mean() <= 2e-3
    assert 0.3 < ref.std() < 0.55  # really samples ~N(0, 0.25) (DDIM with few steps under-disperses)


def test_bf16_sampling_of_a_random_unet_stays_within_the_stated_tolerance():
    torch.manual_seed(0)
    model = create("unet_tiny", in_channels=3, out_channels=3, image_size=16)
    with torch.no_grad():  # untrained U-Nets output zeros (zero-initialised last conv): perturb
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x_T = noise(8)
    for sampler, steps in (("ddim", 10), ("respaced", 20)):
        cfg = EvalConfig(sampler=sampler, steps=steps)
        ref = sample(model, DIFFUSION, cfg, 8, (3, 16, 16), noise=x_T, seed=3, amp="none")
        low = sample(model, DIFFUSION, cfg, 8, (3, 16, 16), noise=x_T, seed=3, amp="bf16")
        diff = (ref - low).abs()
        assert 0 < diff.mean() <= 5e-3, sampler
        levels = ((ref + 1) * 127.5).round() - ((low + 1) * 127.5).round()
        assert (levels.abs() > 2).float().mean() <= 0.05, sampler  # >= 95 % within 2 uint8 levels


class Replay:
    """CPU stand-in for `cuda_capture` with a graph's semantics: replay() recomputes from the static
    input buffers into the one static output buffer; counts captures."""

    def __init__(self):
        self.captures = 0

    def __call__(self, fn, inputs):
        self.captures += 1
        out = fn(*inputs)

        def replay():
            out.copy_(fn(*inputs))

        return out, replay


@pytest.mark.parametrize("sampler,steps", [("ddim", 8), ("respaced", 8)])
def test_graphed_denoiser_gives_the_same_samples_with_one_capture_per_shape(sampler, steps):
    torch.manual_seed(0)
    model = create("unet_tiny", in_channels=3, out_channels=3, image_size=8, base_channels=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = EvalConfig(sampler=sampler, steps=steps)
    capture = Replay()
    graphed = GraphedDenoiser(model, capture)
    for n in (4, 2, 4):
        x_T = noise(n, 8, seed=n)
        ref = sample(model, DIFFUSION, cfg, n, (3, 8, 8), noise=x_T, seed=5)
        got = sample(graphed, DIFFUSION, cfg, n, (3, 8, 8), noise=x_T, seed=5)
        assert torch.equal(ref, got)
    assert capture.captures == 2 and len(graphed.graphs) == 2  # batch 4 captured once, reused


def test_graphed_denoiser_clones_its_output_and_captures_without_the_autocast_cache():
    model, capture = GaussianOracle(), Replay()
    graphed = GraphedDenoiser(model, capture)
    t = torch.full((2,), 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = graphed(noise(2, 4, 1), t)
        kept = first.clone()
        second = graphed(noise(2, 4, 2), t)
        eager = model(noise(2, 4, 1), t)
    assert torch.equal(first, kept) and not torch.equal(first, second)  # not the static buffer
    assert torch.equal(first, eager)
    assert model.cache == [False, False, False, True]  # capture + 2 replays without the cache; eager
    assert (torch.float32, torch.bfloat16) in model.seen  # the captured call ran under autocast
    assert len(graphed.graphs) == 1
    graphed(noise(2, 4, 3), t)  # outside autocast: another (fp32) graph
    assert len(graphed.graphs) == 2


def test_cuda_graphs_are_only_used_on_cuda():
    model = GaussianOracle()
    assert maybe_graphed(model, True, "cpu") is model and maybe_graphed(model, False, "cuda") is model
    assert isinstance(maybe_graphed(model, True, "cuda"), GraphedDenoiser)


@pytest.mark.cuda
def test_cuda_graph_sampling_equals_eager_sampling_on_cuda():
    torch.manual_seed(0)
    model = create("unet_tiny", in_channels=3, out_channels=3, image_size=16).cuda()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_T = noise(16).cuda()
    for amp in ("none", "bf16"):
        plain = sample(model, DIFFUSION, EvalConfig(steps=20), 16, (3, 16, 16), noise=x_T, amp=amp,
                       device="cuda")
        graphed = sample(model, DIFFUSION, EvalConfig(steps=20, cuda_graphs=True), 16, (3, 16, 16),
                         noise=x_T, amp=amp, device="cuda")
        assert (plain - graphed).abs().max() <= (1e-5 if amp == "none" else 2e-2), amp
