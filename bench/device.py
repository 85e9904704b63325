"""Device choice, precision, the fast-path switches and eval mode, shared by training, evaluation and benchmarks.

Mixed precision follows PyTorch's AMP recipe: bf16 autocast on CUDA (no loss scaling needed),
fp16 with a GradScaler when asked; CPU runs in fp32 unless `train.cpu_amp` asks for CPU autocast
(the CPU twin of the CUDA path, for tests). TF32 is PyTorch's documented switch; channels_last is
PyTorch's memory-format recipe; `torch.compile` modes are the documented ones. Peak-memory hooks
return null off CUDA (no allocator statistics there). Every switch in effect is returned by
`precision_flags` and recorded in each result's environment. `precision_cost` states what a
precision costs on a GPU from NVIDIA's published H100/H200 peaks (a datasheet figure, not measured).
"""
from __future__ import annotations

import contextlib

import torch

from bench.errors import BenchError

# Dense peak throughput in TFLOPS of an H100 SXM (the H200 has the same), NVIDIA's H100 datasheet:
# FP32 67 (CUDA cores), TF32 / BF16 / FP16 tensor cores 494.7 / 989.4 / 989.4 (the 989 / 1 979 /
# 1 979 the sheet prints are with 2:4 sparsity).
PEAK_TFLOPS = {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}
_LABEL = {"fp32": "fp32, TF32 off", "tf32": "fp32 with TF32 tensor cores", "bf16": "bf16 autocast",
          "fp16": "fp16 autocast + GradScaler"}


def compute_precision(cfg) -> str:
    """The arithmetic a CUDA run's matmuls and convolutions use: bf16 | fp16 | tf32 | fp32."""
    return cfg.amp if cfg.amp != "none" else "tf32" if cfg.tf32 else "fp32"


def precision_cost(cfg) -> str:
    """`label: cost` of the run's CUDA precision against bf16, from the datasheet peaks."""
    mode = compute_precision(cfg)
    ratio = PEAK_TFLOPS["bf16"] / PEAK_TFLOPS[mode]
    if ratio == 1:
        return f"{_LABEL[mode]}: the fast path ({PEAK_TFLOPS[mode]:g} TFLOPS dense peak on an H100/H200)"
    return (f"{_LABEL[mode]}: up to ~{ratio:.0f}x the time of bf16 on an H100/H200 ({PEAK_TFLOPS[mode]:g} "
            f"vs {PEAK_TFLOPS['bf16']:g} TFLOPS dense peak, NVIDIA datasheet; less where a step is "
            "memory- or launch-bound)")


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
