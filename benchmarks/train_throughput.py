"""Training throughput (img/s), TFLOP/s, % of the measured matmul ceiling and peak memory: the
harness's own loop, a bare PyTorch loop over the same model, and diffusers' `UNet2DModel` at Ho et
al.'s CIFAR-10 configuration (35 746 307 parameters, exactly `unet_ddpm`'s count), in one process,
interleaved (harness, bare, diffusers, then again for each repeat) so load changes hit all three.

(a) harness: `bench.run.build.build_run` + `bench.train.loop.train`, exactly what `bench run` does minus the
    evaluation: a `steps` budget, AdamW, cosine LR with a linear warm-up, grad-norm clipping, EMA,
    `DeviceBatches` (on-device sampling and flips), the fast-path keys in effect (bf16 autocast,
    channels_last, fused AdamW, foreach EMA on CUDA; `--compile` for train.compile).
(b) bare: the loop of Ho et al. 2020 Algorithm 1 as one would write it by hand: a random batch of
    the same resident images, t and ε drawn, MSE on ε, AdamW with the same settings (fused on CUDA
    as the harness), same autocast and memory format; no EMA, clipping, LR schedule or bookkeeping.
(c) diffusers: the same bare loop around `diffusers.UNet2DModel` (block_out_channels 128/256/256/256,
    2 layers per block, attention at 16x16 and in the middle, one head, dropout 0.1), diffusers'
    default attention processor (SDPA).

All run `--warmup` untimed steps, then `--steps` timed ones; img/s = images / seconds of
synchronized wall time over the timed steps. TFLOP/s = img/s x 3 x forward FLOPs per image
(forward + backward ~ 3 forwards, the usual rule; FLOPs counted by torch.utils.flop_counter with
the math attention kernel). The ceiling is the best of a few square matmuls (bf16 on CUDA with
amp bf16, fp32 otherwise) measured in the same process. Data are the synthetic shapes.

    python benchmarks/train_throughput.py                  # unet_ddpm, batch 128 on CUDA / 2 on CPU
    python benchmarks/train_throughput.py --threads 1 --repeats 2 --steps 3
"""
from __future__ import annotations

import argparse

import common
import torch
import torch.nn as nn
import torch.nn.functional as F

from architectures import create
from bench.config.suite import parse_suite
from bench.data import load_dataset
from bench.device import amp_in_effect, autocast, compiled, precision_flags
from bench.diffusion import Diffusion
from bench.metrics.cost import count_params, forward_flops
from bench.run.build import build_run
from bench.train.loop import train
from bench.train.optim import make_optimizer

OUT = common.ROOT / "benchmarks" / "train_throughput.json"
LOOPS = ("harness", "bare", "diffusers")


def parse_args(argv=None) -> tuple[argparse.Namespace, torch.device]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 50 CUDA / 2 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 / 1)")
    parser.add_argument("--compile", default="false", choices=("false", "true", "max-autotune"),
                        help="train.compile of the harness (and torch.compile of the other loops)")
    parser.add_argument("--loops", default="harness,bare,diffusers",
                        help="comma-separated subset of harness, bare, diffusers")
    parser.add_argument("--matmul-size", type=int, default=None, help="N of the N x N ceiling matmul")
    args = parser.parse_args(argv)
    device = common.setup(args)
    cuda = device.type == "cuda"
    args.arch = args.arch or "unet_ddpm"
    args.image_size = args.image_size or 32
    args.batch = args.batch or (128 if cuda else 2)
    args.steps = args.steps if args.steps is not None else (50 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    if args.steps < 1:
        parser.error(f"--steps: must be at least 1, got {args.steps}")
    if args.warmup < 1:
        parser.error("--warmup: at least 1 step (the first steps allocate optimizer state)")
    args.out = args.out or OUT
    args.compile = {"false": False, "true": True}.get(args.compile, args.compile)
    args.loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    if not args.loops or set(args.loops) - set(LOOPS):
        parser.error(f"--loops: choose from {', '.join(LOOPS)}, got {args.loops}")
    args.matmul_size = args.matmul_size or (8192 if cuda else 1024)
    return args, device


def harness_spec(args, device: torch.device):
    """A one-run suite, validated like any suite file: the harness's defaults plus the budget."""
    total = args.warmup + args.steps
    raw = {"name": "train_throughput",
           "data": {"dataset": "synthetic", "image_size": args.image_size,
                    "num_images": max(4 * args.batch, 64)},
           "diffusion": {"schedule": "linear", "timesteps": 1000, "target": "eps"},
           "budget": {"steps": total},
           "train": {"batch_size": args.batch, "device": str(device), "amp": args.amp,
                     "lr_schedule": "cosine", "warmup_kimg": total * args.batch / 2000,
                     "compile": args.compile},
           "eval": {"every_kimg": args.warmup * args.batch / 1000},  # a no-op hook: marks the clock
           "models": [{"arch": args.arch, "kwargs": args.kwargs}], "seeds": [0]}
    return parse_suite(raw, "benchmarks/train_throughput.py").runs[0]


def run_harness(spec, dataset, device: torch.device, warmup: int) -> dict:
    """`bench.train.loop.train` as `bench run` calls it; the hook only reads the clock."""
    ctx = build_run(spec, dataset, device)
    marks: dict[int, tuple[float, float]] = {}

    def on_eval(state: dict) -> None:  # after step `warmup` (periodic) and after the last step
        marks.setdefault(state["step"], (common.clock(device), state["train_seconds"]))

    window = common.reset_peak(device)
    state = train(ctx.model, ctx.diffusion, ctx.batches, spec.train, spec.budget,
                  generator=ctx.noise_gen, every_kimg=spec.eval.every_kimg, on_eval=on_eval,
                  progress=False)
    memory = common.peak_memory(device, window)
    (wall0, train0), (wall1, train1) = marks[warmup], marks[state["step"]]
    images = (state["step"] - warmup) * spec.train.batch_size
    return {"loop": "harness", "steps": state["step"] - warmup, "seconds": wall1 - wall0,
            "img_per_s": images / (wall1 - wall0), "reported_img_per_s": images / (train1 - train0),
            "final_loss": state["losses"][-1], **memory}


class DiffusersDenoiser(nn.Module):
    """`UNet2DModel` behind the registry's contract model(x, t) -> tensor."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def diffusers_unet(image_size: int, channels: int) -> nn.Module:
    """Ho et al.'s CIFAR-10 U-Net in diffusers (the config of google/ddpm-cifar10-32)."""
    # deferred: diffusers is a dev-only (benchmark) dependency
    from diffusers import UNet2DModel
    return DiffusersDenoiser(UNet2DModel(
        sample_size=image_size, in_channels=channels, out_channels=channels, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256), dropout=0.1, attention_head_dim=None,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32,
        flip_sin_to_cos=False, freq_shift=1))


def build_model(loop: str, spec, device: torch.device) -> nn.Module:
    """The bare loop's model (the suite entry) or diffusers' at the same init seed."""
    torch.manual_seed(spec.seed)
    if loop == "diffusers":
        return diffusers_unet(spec.data.image_size, spec.data.channels).to(device)
    return create(spec.entry.arch, in_channels=spec.data.channels, out_channels=spec.data.channels,
                  image_size=spec.data.image_size, **spec.entry.kwargs).to(device)


def run_bare(loop: str, spec, dataset, device: torch.device, warmup: int, steps: int) -> dict:
    """Ho et al. Algorithm 1 written by hand over the given model, same data and optimizer settings."""
    cfg, flags = spec.train, precision_flags(device, spec.train)
    model = build_model(loop, spec, device)
    if flags["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)  # same AdamW implementation as the harness (fused on CUDA)
    net = compiled(model, cfg.compile)
    images = dataset.train.to(device)
    ab = Diffusion.from_config(spec.diffusion).alphas_cumprod.float().to(device)
    gen = torch.Generator(device).manual_seed(spec.seed)
    amp, b = amp_in_effect(device, cfg), cfg.batch_size

    def step() -> torch.Tensor:
        x0 = images[torch.randint(len(images), (b,), generator=gen, device=device)].float() / 127.5 - 1
        t = torch.randint(0, len(ab), (b,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        a = ab[t].view(-1, 1, 1, 1)
        with autocast(device, amp):
            loss = F.mse_loss(net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    window = common.reset_peak(device)
    for _ in range(warmup):
        step()
    start = common.clock(device)
    for _ in range(steps):
        loss = step()
    seconds = common.clock(device) - start
    return {"loop": loop, "steps": steps, "seconds": seconds, "img_per_s": steps * b / seconds,
            "reported_img_per_s": None, "final_loss": loss.item(),
            **common.peak_memory(device, window)}


def matmul_ceiling(device: torch.device, amp: str, n: int, repeats: int = 5) -> dict:
    """Best TFLOP/s of an n x n x n matmul (2 n^3 FLOPs) in the dtype the training runs in."""
    dtype = torch.bfloat16 if amp == "bf16" and device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (kernel selection)
    inner = 20 if device.type == "cuda" else 2
    best = 0.0
    for _ in range(repeats):
        start = common.clock(device)
        for _ in range(inner):
            a @ b
        best = max(best, 2 * n**3 * inner / (common.clock(device) - start) / 1e12)
    return {"matmul_tflops": best, "matmul_n": n, "matmul_dtype": str(dtype).replace("torch.", "")}


def flops_per_image(loop: str, spec) -> dict:
    """Parameters and forward FLOPs per image of a loop's model (built on the meta device)."""
    with torch.device("meta"):
        model = build_model(loop, spec, torch.device("meta"))
    return {"params": count_params(model),
            "train_gflops_per_image": 3 * forward_flops(model, spec.data.channels, spec.data.image_size) / 1e9}


COLUMNS = [("loop", "loop", "s"), ("params", "params", ",d"), ("img_per_s", "img/s", ".2f"),
           ("ms_per_step", "ms/step", ".0f"), ("tflops", "TFLOP/s", ".3f"),
           ("pct_ceiling", "% ceiling", ".2f"), ("vs_diffusers", "x diffusers", ".3f"),
           ("reported_img_per_s", "harness-reported img/s", ".2f"), ("peak_mem_mb", "peak GPU MiB", ".0f"),
           ("peak_rss_mb", "peak RSS MiB", ".0f")]


def measure(loop: str, spec, dataset, device, args) -> dict:
    if loop == "harness":
        return run_harness(spec, dataset, device, args.warmup)
    return run_bare(loop, spec, dataset, device, args.warmup, args.steps)


def summarize(runs: list[dict], loops: list[str], costs: dict, ceiling: float) -> list[dict]:
    """Best repeat per loop, with TFLOP/s, % of the matmul ceiling and the ratio to diffusers."""
    top = [dict(common.best([r for r in runs if r["loop"] == loop], "img_per_s")) for loop in loops]
    ref = next((r["img_per_s"] for r in top if r["loop"] == "diffusers"), None)
    for row in top:
        cost = costs[row["loop"]]
        row.update(params=cost["params"], tflops=row["img_per_s"] * cost["train_gflops_per_image"] / 1e3)
        row["pct_ceiling"] = 100 * row["tflops"] / ceiling
        row["vs_diffusers"] = row["img_per_s"] / ref if ref else None
    return top


def ratios(top: list[dict]) -> dict:
    """harness / diffusers (target >= 2) and bare / harness (the harness's overhead, target <= 1.03)."""
    by = {r["loop"]: r["img_per_s"] for r in top}
    return {"harness_over_diffusers": by["harness"] / by["diffusers"] if {"harness", "diffusers"} <= by.keys() else None,
            "bare_over_harness": by["bare"] / by["harness"] if {"harness", "bare"} <= by.keys() else None,
            "bare_over_diffusers": by["bare"] / by["diffusers"] if {"bare", "diffusers"} <= by.keys() else None}


def main(argv=None) -> dict:
    args, device = parse_args(argv)
    spec = harness_spec(args, device)
    flags = precision_flags(device, spec.train)  # TF32 as the harness sets it; applies to every loop
    dataset = load_dataset(spec.data)
    info = common.machine(device)
    ceiling = matmul_ceiling(device, flags["amp"], args.matmul_size)
    costs = {loop: flops_per_image(loop, spec) for loop in args.loops}
    runs = []
    for repeat in range(args.repeats):  # interleave the loops so load changes hit all of them
        for loop in args.loops:
            row = measure(loop, spec, dataset, device, args)
            row.update(repeat=repeat, ms_per_step=1000 * row["seconds"] / row["steps"])
            runs.append(row)
            common.release(device)
            print(f"  repeat {repeat}: {loop:9s} {row['img_per_s']:.2f} img/s", flush=True)
    top = summarize(runs, args.loops, costs, ceiling["matmul_tflops"])
    found = ratios(top)
    print(f"\n{args.arch} training, batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats}, "
          f"{device.type} (amp {flags['amp']}, channels_last {flags['channels_last']}, "
          f"compile {flags['compile']}, adamw {flags['optimizer_impl']}, ema {flags['ema_impl']})")
    print(common.describe(info))
    print(f"matmul ceiling: {ceiling['matmul_tflops']:.3f} TFLOP/s ({ceiling['matmul_dtype']}, "
          f"n={ceiling['matmul_n']}); training FLOPs/image = 3 x forward "
          f"({costs[args.loops[0]]['train_gflops_per_image']:.2f} GFLOP for {args.loops[0]})")
    print(common.table(top, COLUMNS))
    print("ratios: " + ", ".join(f"{k} = {v:.3f}" for k, v in found.items() if v is not None))
    payload = {"benchmark": "train_throughput", "machine": info,
               "model": common.model_info(args.arch, args.kwargs, spec.data.channels, args.image_size),
               "costs": costs, "ceiling": ceiling,
               "settings": {"batch": args.batch, "image_size": args.image_size, "steps": args.steps,
                            "warmup": args.warmup, "repeats": args.repeats, "loops": args.loops,
                            **flags, "harness_train": spec.config()["train"]},
               "best": {r["loop"]: r for r in top}, "ratios": found,
               "overhead_ratio": found["bare_over_harness"], "runs": runs}
    common.save(args.out, payload)
    return payload


if __name__ == "__main__":
    common.cli(main)
