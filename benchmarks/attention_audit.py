"""Which attention kernel every attention block of every registered architecture can use.

Every self-attention block in architectures/ calls `F.scaled_dot_product_attention` (timm's
`Attention` with fused attention on, s000's channel layout and s002's SAGAN block directly); this
script records each call of one forward (q, k, v shapes, scale, mask) by wrapping that function,
and says per call whether the flash kernel applies under bf16 autocast. On CUDA the answer is
PyTorch's own: the call is re-run with only `SDPBackend.FLASH_ATTENTION` (then only
EFFICIENT_ATTENTION) allowed and the first kernel that runs is reported. Off CUDA the documented
flash constraints are checked instead (fp16/bf16 inputs, no explicit mask, q/k/v with one head dim,
head dim <= 256 and a multiple of 8); those rows say `rule` in the `how` column.

    python benchmarks/attention_audit.py                   # every architecture at 32x32
    python benchmarks/attention_audit.py --device cuda     # PyTorch's kernel choice on a GPU
"""
from __future__ import annotations

import argparse

import common
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from architectures import create, list_architectures

OUT = common.ROOT / "benchmarks" / "attention_audit.json"
CASES = [(a, {}) for a in list_architectures()] + [("s000_mini", {"attn_layout": "channels"})]


def record_calls(arch: str, kwargs: dict, size: int, device: torch.device) -> list[dict]:
    """One forward at batch 2 with SDPA wrapped; the (q, k, v) of every call."""
    torch.manual_seed(0)
    model = create(arch, in_channels=3, out_channels=3, image_size=size, **kwargs).to(device).eval()
    calls, real = [], F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        calls.append({"q": q, "k": k, "v": v, "mask": attn_mask is not None, "scale": scale})
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model(torch.zeros(2, 3, size, size, device=device), torch.tensor([1, 500], device=device))
    finally:
        F.scaled_dot_product_attention = real
    return calls


def by_rule(call: dict) -> str:
    """The flash constraints of PyTorch's sdp_utils (head dim, mask, q/k/v dims) under bf16."""
    dq, dk, dv = (call[n].shape[-1] for n in "qkv")
    if call["mask"]:
        return "math/efficient (explicit mask)"
    if not dq == dk == dv:
        return f"efficient/math (v head dim {dv} != q/k {dq})"
    if dq > 256 or dq % 8:
        return f"efficient/math (head dim {dq})"
    return "flash"


def by_kernel(call: dict) -> str:
    """PyTorch's answer on CUDA: the first of flash, efficient that runs these bf16 inputs."""
    q, k, v = (call[n].to(torch.bfloat16) for n in "qkv")
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v, scale=call["scale"])
            return name
        except RuntimeError:
            continue
    return "math"


def audit(device: torch.device, size: int) -> list[dict]:
    rows = []
    for arch, kwargs in CASES:
        for i, call in enumerate(record_calls(arch, kwargs, size, device)):
            b, heads, tokens, dim = call["q"].shape
            rows.append({"arch": arch + (f" {kwargs}" if kwargs else ""), "call": i, "heads": heads,
                         "tokens": tokens, "head_dim": dim, "v_dim": call["v"].shape[-1],
                         "kernel": by_kernel(call) if device.type == "cuda" else by_rule(call),
                         "how": "pytorch" if device.type == "cuda" else "rule"})
    return rows


COLUMNS = [("arch", "architecture", "s"), ("call", "call", "d"), ("heads", "heads", "d"),
           ("tokens", "tokens", "d"), ("head_dim", "q/k dim", "d"), ("v_dim", "v dim", "d"),
           ("kernel", "bf16 kernel", "s"), ("how", "how", "s")]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda (default cpu: the rule check)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = common.resolve_device(args.device)
    rows = audit(device, args.image_size)
    print(common.table(rows, COLUMNS))
    payload = {"benchmark": "attention_audit", "machine": common.machine(device),
               "image_size": args.image_size, "calls": rows}
    common.save(args.out or OUT, payload)
    return payload


if __name__ == "__main__":
    common.cli(main)
