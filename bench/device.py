"""Device choice, precision flags and eval mode, shared by training, evaluation and benchmarks.

Mixed precision follows PyTorch's AMP recipe: bf16 autocast on CUDA (no loss scaling needed),
fp16 with a GradScaler when asked; CPU runs in fp32. TF32 is PyTorch's documented switch.
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


def precision_flags(device: torch.device, cfg) -> dict:
    """Apply TF32 and return the precision flags in effect (recorded in every result)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    return {"amp": cfg.amp if cuda else "none", "tf32": cfg.tf32 if cuda else False,
            "channels_last": cfg.channels_last and cuda, "compile": cfg.compile}


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA; a no-op context on other devices or with amp 'none'."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
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
