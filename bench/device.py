"""Device choice, precision, the fast-path switches and eval mode, shared by training, evaluation and benchmarks.

Mixed precision follows PyTorch's AMP recipe: bf16 autocast on CUDA (no loss scaling needed),
fp16 with a GradScaler when asked; CPU runs in fp32 unless `train.cpu_amp` asks for CPU autocast
(the CPU twin of the CUDA path, for tests). TF32 is PyTorch's documented switch; channels_last is
PyTorch's memory-format recipe; `torch.compile` modes are the documented ones. Peak-memory hooks
return null off CUDA (no allocator statistics there). Every switch in effect is returned by
`precision_flags` and recorded in each result's environment.
"""
from __future__ import annotations

import contextlib

import torch

from bench.errors import BenchError


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available else cpu; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"train.device: {name!r} asked for, but no CUDA device is available; "
                         f"use auto or cpu")
    return device


def amp_in_effect(device: torch.device, cfg) -> str:
    """The autocast dtype a run uses: `amp` on CUDA (and on CPU with cpu_amp), else none."""
    cpu_amp = getattr(cfg, "cpu_amp", False)
    if device.type == "cuda" or (device.type == "cpu" and cpu_amp and cfg.amp == "bf16"):
        return cfg.amp
    return "none"


def precision_flags(device: torch.device, cfg) -> dict:
    """Apply TF32 and return the precision and fast-path flags in effect (recorded in every result)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    return {"amp": amp_in_effect(device, cfg), "tf32": cfg.tf32 if cuda else False,
            "channels_last": uses_channels_last(device, cfg), "compile": cfg.compile,
            "optimizer_impl": optimizer_impl(device, getattr(cfg, "optimizer_impl", "auto")),
            "ema_impl": getattr(cfg, "ema_impl", "foreach")}


def uses_channels_last(device: torch.device, cfg) -> bool:
    """channels_last on CUDA when asked (on CPU only with `cpu_amp`-style twin tests, see tests)."""
    return bool(cfg.channels_last) and device.type == "cuda"


def to_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The model in channels_last (NHWC) memory format when asked; weights and outputs unchanged."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def optimizer_impl(device: torch.device, impl: str) -> str:
    """`auto` -> fused on CUDA, torch's single-tensor loop elsewhere (the historical CPU path)."""
    if impl != "auto":
        return impl
    return "fused" if device.type == "cuda" else "for_loop"


def compiled(module, mode, backend: str = "inductor"):
    """`torch.compile(module)` for `train.compile` true / "max-autotune"; the module when false.

    `backend` is torch's (inductor by default; tests use aot_eager, which traces forward and
    backward the same way without generating C++/Triton kernels, minutes faster on a CPU)."""
    if mode is False or mode is None:
        return module
    return torch.compile(module, backend=backend, mode=None if mode is True else mode)


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA, bf16 CPU autocast when amp is bf16 on a CPU (only passed on
    when a run asked for cpu_amp: see `amp_in_effect`); a no-op context with amp 'none'."""
    device = torch.device(device)
    if amp == "none" or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    if device.type == "cpu":
        if amp != "bf16":
            raise BenchError(f"train.amp: CPU autocast supports bf16 only, got {amp!r}")
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """`model.eval()` inside the block; its train/eval mode restored after (even on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def reset_peak_memory(device: torch.device) -> None:
    """Start a peak-memory window (CUDA allocator statistics; nothing to reset elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated MiB since the last reset on CUDA; None on devices without allocator stats."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
