"""Registry-driven denoiser contract tests (timm style): every registered name, at a tiny width.

Each architecture is built at the smallest width it accepts from (8, 12, 16, 24, 32) and at 16x16
(or its down-sampling factor, if larger). Zero-initialised output layers (DDPM, ADM, DiT adaLN-Zero)
make an untrained network ignore its input, so the gradient and timestep tests first perturb every
parameter; the wiring is what is under test. Parameter counts are pinned on the meta device.
"""
from __future__ import annotations

import functools
import inspect

import pytest
import torch

from architectures import create, list_architectures, width_kwarg
from bench.errors import BenchError

NAMES = list_architectures()
ISSUE_NAMES = [
    "unet_ddpm", "unet_ddpm_noattn", "unet_tiny",
    "s001_baseline", "s001_addreslink", "s001_rdn", "s001_deep", "s001_convnext", "s001_antialias",
    "s001_4dc", "s001_biggan", "s001_biggan_noattn",
    "s000_mini", "s000_simple", "s000_mega", "s000_giga", "s000_mega_channels",
    "s002_unet", "s003_unet", "s004_unet", "s004_cbam", "dit_s2", "dit_b2",
]
COND = 2          # conditioning channels used where an architecture supports them


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_kwargs(name: str) -> dict:
    """Harness keywords plus the smallest accepted width and a size its down-sampling divides."""
    return dict(_tiny_kwargs(name))


@functools.lru_cache(maxsize=None)
def _tiny_kwargs(name: str) -> tuple:
    key = width_kwarg(name)
    for width in (8, 12, 16, 24, 32):
        kw = {key: width} if key else {}
        try:
            with torch.device("meta"):
                model = create(name, in_channels=3, out_channels=3, image_size=32, **kw)
            break
        except (BenchError, ValueError, AssertionError):
            continue
    size = max(16, model.downsample_factor)
    return tuple(dict(in_channels=3, out_channels=3, image_size=size, **kw).items())


def supports_cond(model: torch.nn.Module) -> bool:
    return "cond_channels" in inspect.signature(type(model).__init__).parameters


def build(name: str, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create(name, **{**tiny_kwargs(name), **extra})


def perturb_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Add N(0, 0.05^2) to every parameter so zero-initialised layers pass signal and gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def inputs(model, kw, batch: int = 2, cond: int = 0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    s = kw["image_size"]
    x = torch.randn(batch, kw["in_channels"] + cond, s, s, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    return x, t


def test_issue_names_are_registered():
    assert sorted(set(ISSUE_NAMES) - set(NAMES)) == []


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_finite(name):
    kw = tiny_kwargs(name)
    model = build(name)
    x, t = inputs(model, kw)
    y = model(x, t)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    if supports_cond(model):
        model = build(name, cond_channels=COND)
        x, t = inputs(model, kw, cond=COND)
        y = model(x, t)
        assert y.shape == (x.shape[0], kw["out_channels"], *x.shape[2:])
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name):
    kw = tiny_kwargs(name)
    model = perturb_(build(name))
    x, t = inputs(model, kw, batch=3)
    model(x, t).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_output_depends_on_t(name):
    kw = tiny_kwargs(name)
    model = perturb_(build(name)).eval()
    x, _ = inputs(model, kw)
    with torch.no_grad():
        a = model(x, torch.tensor([10, 500]))
        b = model(x, torch.tensor([900, 3]))
    assert (a - b).abs().amax(dim=(1, 2, 3)).min() > 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_construction_is_deterministic_under_a_seed(name):
    first, again, other = build(name, seed=3).state_dict(), build(name, seed=3).state_dict(), build(name, seed=4)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], v) for k, v in other.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_downsample_factor_divides_and_bad_sizes_fail(name):
    kw = tiny_kwargs(name)
    model = build(name)
    factor = model.downsample_factor
    assert isinstance(factor, int) and factor >= 1
    assert kw["image_size"] % factor == 0
    if factor > 1:
        with pytest.raises(BenchError, match="divisible"), torch.device("meta"):
            create(name, **{**kw, "image_size": factor + factor // 2})


def meta_params(name: str, image_size: int) -> int:
    with torch.device("meta"):
        model = create(name, in_channels=3, out_channels=3, image_size=image_size)
    return sum(p.numel() for p in model.parameters())


def test_unet_ddpm_matches_ho_et_al():
    n = meta_params("unet_ddpm", 32)
    assert n == pytest.approx(35.75e6, rel=0.01)
    assert n == 35_746_307                      # the published CIFAR-10 checkpoint's count


@pytest.mark.parametrize("name, table_i", [("s000_mini", 10e6), ("s000_simple", 49e6),
                                           ("s000_mega", 74e6), ("s000_mega_channels", 74e6),
                                           ("s000_giga", 85e6)])
def test_s000_presets_match_table_i(name, table_i):
    assert meta_params(name, 64) == pytest.approx(table_i, rel=0.15)


def test_s000_layouts_differ_only_in_attention_axis():
    kw = dict(in_channels=3, out_channels=3, image_size=16, base_channels=8)
    torch.manual_seed(0)
    tokens = create("s000_mini", **kw).eval()
    channels = create("s000_mini", **{**kw, "attn_layout": "channels"}).eval()
    channels.load_state_dict(tokens.state_dict())            # same parameters, same names
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 700])
    with torch.no_grad():
        assert not torch.allclose(tokens(x, t), channels(x, t), atol=1e-4)


def test_s004_spatial_gate_stays_in_half_to_one():
    from architectures.s004 import SpatialGate

    gate = SpatialGate()
    with torch.no_grad():
        gate.conv.weight.mul_(100)                            # saturate the sigmoid both ways
    x = torch.randn(2, 4, 8, 8)
    x = x.sign() * (x.abs() + 1.0)                            # |x| >= 1: the ratio below is exact
    ratio = gate(x) / x
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.0 + 1e-6
    assert ratio.min() < 0.51 and ratio.max() > 0.99


def test_unknown_block_names_are_teaching_errors():
    with pytest.raises(BenchError, match="choose from"):
        create("s001_baseline", in_channels=3, out_channels=3, image_size=32, block="resnet")
    with pytest.raises(BenchError, match="choose from"):
        create("s000_mini", in_channels=3, out_channels=3, image_size=32, attn_layout="pixels")


@pytest.mark.parametrize("knobs", [dict(resblock_updown=True), dict(scale_shift_norm=True),
                                   dict(conv_resample=False), dict(skip_rescale=True),
                                   dict(num_heads=4), dict(num_head_channels=8)])
def test_unet_adm_knobs_change_the_network_and_keep_the_contract(knobs):
    kw = dict(in_channels=3, out_channels=3, image_size=16)
    plain = perturb_(build("unet_tiny", **kw))
    model = perturb_(build("unet_tiny", **kw, **knobs))
    x, t = inputs(model, kw, batch=3)
    y = model(x, t)
    y.square().mean().backward()
    assert y.shape == x.shape
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    if shapes == {k: v.shape for k, v in model.state_dict().items()}:   # weight-free knob: new output
        model.load_state_dict(plain.state_dict())
        with torch.no_grad():
            assert not torch.allclose(plain.eval()(x, t), model.eval()(x, t), atol=1e-5)
    else:
        assert count(plain) != count(model)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_s000_learned_time_table():
    kw = dict(in_channels=3, out_channels=3, image_size=16, base_channels=8)
    model = perturb_(create("s000_mini", **kw, time_embedding="learned", num_timesteps=50)).eval()
    assert model.table.weight.shape == (50, 128)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([3])), model(x, torch.tensor([4])))
