"""CPU twins of the CUDA fast path (issue 12 item 5, issue 13 item 2): bf16 autocast, channels_last,
fused/foreach/single-tensor AdamW, foreach EMA, torch.compile, peak-memory hooks, suite keys, and
device placement of every registered architecture (a meta-device mismatch check)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from architectures import create, list_architectures
from bench.config.schema import TrainConfig, build
from bench.device import (
    amp_in_effect,
    autocast,
    compiled,
    peak_memory_mb,
    precision_flags,
    reset_peak_memory,
    to_memory_format,
)
from bench.diffusion import Diffusion
from bench.edm import EDM
from bench.edm import SAMPLERS as EDM_SAMPLERS
from bench.errors import BenchError
from bench.samplers import SAMPLERS
from bench.train.optim import ForeachEMA, make_ema, make_optimizer, update_ema

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create("unet_tiny", in_channels=3, out_channels=3, image_size=8, base_channels=8)


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 100, (4,), generator=g)


def step_grads(model, x, t, amp="none"):
    model.zero_grad(set_to_none=True)
    with autocast(CPU, amp):
        loss = (model(x, t).float() - x).pow(2).mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_cpu_bf16_autocast_runs_convs_in_bf16_and_stays_close_to_fp32():
    model, (x, t) = tiny(), batch()
    with autocast(CPU, "bf16"):
        assert model.conv_in(x).dtype == torch.bfloat16 if hasattr(model, "conv_in") else True
        out = model(x, t)
    assert out.dtype == torch.bfloat16
    ref = model(x, t)
    assert torch.allclose(out.float(), ref, atol=0.05 * ref.abs().max().item() + 1e-3)
    l16, g16 = step_grads(model, x, t, "bf16")
    l32, g32 = step_grads(model, x, t)
    assert abs(l16.item() - l32.item()) <= 0.02 * l32.item()
    cos = [torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
           for a, b in zip(g16, g32) if b.abs().sum() > 0]
    assert min(c.item() for c in cos) > 0.95


def test_amp_in_effect_is_fp32_on_cpu_unless_cpu_amp():
    assert amp_in_effect(CPU, TrainConfig()) == "none"
    assert amp_in_effect(CPU, TrainConfig(cpu_amp=True)) == "bf16"
    assert amp_in_effect(CPU, TrainConfig(cpu_amp=True, amp="fp16")) == "none"  # no CPU fp16 AMP
    assert amp_in_effect(torch.device("cuda"), TrainConfig(amp="fp16")) == "fp16"
    with pytest.raises(BenchError, match="bf16 only"):
        autocast(CPU, "fp16")


def test_channels_last_gives_the_same_outputs_and_gradients():
    a, b = tiny(), to_memory_format(tiny(), True)
    assert b.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x, t = batch()
    la, ga = step_grads(a, x, t)
    lb, gb = step_grads(b, x.to(memory_format=torch.channels_last), t)
    assert torch.allclose(la, lb, rtol=1e-5)
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_adamw_implementations_agree_with_the_single_tensor_loop(impl):
    """A plain conv net (the U-Nets' zero-initialised output layers give gradients at the scale of
    Adam's eps, where g / (sqrt(v) + eps) turns rounding differences into visible ones)."""
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    params = {}
    for name in ("for_loop", impl):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
        init = [p.detach().clone() for p in model.parameters()]
        cfg = SimpleNamespace(**{**vars(TrainConfig(lr=1e-2, weight_decay=0.1)), "optimizer_impl": name})
        opt = make_optimizer(model, cfg)
        assert bool(opt.defaults["fused"]) == (name == "fused")
        assert bool(opt.defaults["foreach"]) == (name == "foreach")
        for _ in range(5):
            opt.zero_grad()
            (model(x) - x).pow(2).mean().backward()
            opt.step()
        params[name] = [p.detach().clone() for p in model.parameters()]
    assert max((u - p).abs().max().item() for u, p in zip(params[impl], init)) > 1e-2  # it trained
    for u, v in zip(params["for_loop"], params[impl]):
        assert torch.allclose(u, v, rtol=1e-5, atol=1e-6)


def test_optimizer_impl_auto_is_single_tensor_on_cpu():
    opt = make_optimizer(tiny(), TrainConfig())
    assert opt.defaults["foreach"] is False and not opt.defaults["fused"]


class BNNet(nn.Module):
    """Parameters, float buffers (running stats) and an integer buffer (num_batches_tracked)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def _drive(ema, model, steps: int, start: int):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(3)
    for step in range(steps):
        model(torch.randn(2, 3, 6, 6, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        update_ema(ema, model, step, start)
    return ema


@pytest.mark.parametrize("warmup,start", [(True, 0), (False, 3), (True, 2)])
def test_foreach_ema_equals_the_averaged_model_path(warmup, start):
    torch.manual_seed(0)
    base = BNNet()
    fast = _drive(make_ema(base, 0.9, warmup, "foreach"), copy.deepcopy(base), 7, start)
    stock = _drive(make_ema(base, 0.9, warmup, "averaged_model"), copy.deepcopy(base), 7, start)
    assert isinstance(fast, ForeachEMA) and not isinstance(stock, ForeachEMA)
    a, b = fast.state_dict(), stock.state_dict()
    assert a.keys() == b.keys() and int(a["n_averaged"]) == int(b["n_averaged"]) == 7 - start + (start > 0)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_foreach_ema_keeps_its_count_on_the_host_and_reloads_it():
    torch.manual_seed(0)
    model = BNNet()
    ema = make_ema(model, 0.9, True)
    ema.update_parameters(model)
    ema.update_parameters(model)
    ema.n_averaged.fill_(999)  # not read again: the host count (2) sets the next warm-up decay
    with torch.no_grad():
        model.conv.weight.add_(1.0)
    ref = make_ema(model, 0.9, True, "averaged_model")
    ref.load_state_dict({**ema.state_dict(), "n_averaged": torch.tensor(2)})
    ema.update_parameters(model)
    ref.update_parameters(model)
    assert torch.equal(ema.module.conv.weight, ref.module.conv.weight)
    resumed = make_ema(model, 0.9, True)
    resumed.load_state_dict(ema.state_dict())  # the count comes back from the state dict
    resumed.update_parameters(model)
    ref.update_parameters(model)
    assert torch.equal(resumed.module.conv.weight, ref.module.conv.weight)


def test_compiled_train_step_matches_eager():
    """torch.compile traces forward and backward (aot_eager: the same graphs, no C++ codegen)."""
    eager, comp = tiny(), tiny()
    x, t = batch()
    le, ge = step_grads(eager, x, t)
    lc, gc = step_grads(compiled(comp, True, backend="aot_eager"), x, t)
    assert torch.allclose(le, lc, rtol=1e-5)
    for u, v in zip(ge, gc):
        assert torch.allclose(u, v, rtol=1e-4, atol=1e-6)
    assert compiled(eager, False) is eager


@pytest.mark.slow
def test_inductor_compile_matches_eager_on_a_tiny_net():
    """The real inductor backend (gcc-built C++ kernels on CPU): minutes on 2 busy cores."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 3, 1))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(compiled(net, "max-autotune")(x), net(x), atol=1e-5)


def test_compile_key_accepts_the_modes_and_refuses_others():
    assert build(TrainConfig, {"compile": "max-autotune"}, "s.yaml", "train").compile == "max-autotune"
    assert build(TrainConfig, {"compile": True}, "s.yaml", "train").compile is True
    with pytest.raises(BenchError, match="train.compile"):
        build(TrainConfig, {"compile": "fastest"}, "s.yaml", "train")
    with pytest.raises(BenchError, match="train.optimizer_impl"):
        build(TrainConfig, {"optimizer_impl": "apex"}, "s.yaml", "train")


def test_precision_flags_record_every_fast_path_switch_on_cpu():
    flags = precision_flags(CPU, TrainConfig(compile="max-autotune"))
    assert flags == {"amp": "none", "tf32": False, "channels_last": False, "compile": "max-autotune",
                     "optimizer_impl": "for_loop", "ema_impl": "foreach"}
    assert precision_flags(CPU, TrainConfig(cpu_amp=True))["amp"] == "bf16"


def test_peak_memory_hooks_are_null_off_cuda():
    reset_peak_memory(CPU)
    assert peak_memory_mb(CPU) is None
    assert peak_memory_mb("meta") is None


@pytest.mark.cuda
def test_peak_memory_hooks_measure_an_allocation_on_cuda():
    dev = torch.device("cuda")
    reset_peak_memory(dev)
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev)
    assert peak_memory_mb(dev) >= 64
    del x


def _meta_copy(arch: str, **kw):
    model = create(arch, in_channels=3, out_channels=3, image_size=16, **kw)
    return model.to("meta")


@pytest.mark.parametrize("arch", list_architectures())
def test_every_architecture_keeps_every_tensor_on_the_input_device(arch):
    """Weights moved to `meta`, inputs on `meta`, no default device: a tensor created on the CPU
    in forward/backward (a hard-coded device, an unregistered buffer) raises a device mismatch."""
    if arch.startswith("s004"):
        model = create(arch, in_channels=3, out_channels=3, image_size=32, base_channels=8).to("meta")
        size = 32
    else:
        model, size = _meta_copy(arch), 16
    x = torch.zeros(2, 3, size, size, device="meta")
    t = torch.tensor([1, 500], device="meta")
    out = model(x, t)
    assert out.device.type == "meta" and out.shape == x.shape
    out.float().pow(2).mean().backward()
    assert all(p.grad is None or p.grad.device.type == "meta" for p in model.parameters())


def test_diffusion_loss_and_samplers_keep_tensors_on_the_model_device():

    model = _meta_copy("unet_tiny")
    diffusion = Diffusion(timesteps=100)
    x0 = torch.zeros(2, 3, 16, 16, device="meta")
    loss, t = diffusion.loss(model, x0, t=torch.tensor([0, 19], device="meta"),
                             noise=torch.zeros_like(x0))
    assert loss.device.type == "meta"
    edm = EDM(diffusion)
    for name, fn in SAMPLERS.items():
        formulation = edm if name in EDM_SAMPLERS else diffusion
        out = fn(model, formulation, x0.shape, steps=None if name == "ddpm" else 4, device="meta",
                 noise=torch.zeros_like(x0))
        assert out.device.type == "meta", name
