"""Training throughput (img/s) and peak memory of a denoiser: the harness's own loop against a bare
PyTorch loop over the same model, and the harness's overhead as the ratio of the two.

(a) harness: `bench.run.runner.build_run` + `bench.train.loop.train`, exactly what `bench run` does minus the
    evaluation: a `steps` budget, AdamW, cosine LR with a linear warm-up, grad-norm clipping, EMA,
    `DeviceBatches` (on-device sampling and flips), bf16 autocast and channels_last on CUDA.
(b) bare: the loop of Ho et al. 2020 Algorithm 1 as one would write it by hand: a random batch of
    the same resident images, t and ε drawn, MSE on ε, AdamW with the same settings (fused on CUDA
    as the harness), same autocast and memory format; no EMA, clipping, LR schedule or bookkeeping.

Both run `--warmup` untimed steps, then `--steps` timed ones; img/s = images / seconds of
synchronized wall time over the timed steps. The harness's own `train_seconds` count (what
result.json reports) is recorded too. Data are the synthetic shapes (content does not change speed).

    python benchmarks/train_throughput.py                  # unet_ddpm, batch 128 on CUDA / 8 on CPU
    python benchmarks/train_throughput.py --threads 1 --repeats 2 --steps 3
"""
from __future__ import annotations

import argparse

import common
import torch
import torch.nn.functional as F

from architectures import create
from bench.config.suite import parse_suite
from bench.data import load_dataset
from bench.device import autocast, precision_flags
from bench.diffusion import Diffusion
from bench.run.build import build_run
from bench.train.loop import train

OUT = common.ROOT / "benchmarks" / "train_throughput.json"


def parse_args(argv=None) -> tuple[argparse.Namespace, torch.device]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 50 CUDA / 2 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 / 1)")
    args = parser.parse_args(argv)
    device = common.setup(args)
    cuda = device.type == "cuda"
    args.arch = args.arch or "unet_ddpm"
    args.image_size = args.image_size or 32
    args.batch = args.batch or (128 if cuda else 8)
    args.steps = args.steps if args.steps is not None else (50 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    if args.steps < 1:
        parser.error(f"--steps: must be at least 1, got {args.steps}")
    if args.warmup < 1:
        parser.error("--warmup: at least 1 step (the first steps allocate optimizer state)")
    args.out = args.out or OUT
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
                     "lr_schedule": "cosine", "warmup_kimg": total * args.batch / 2000},
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


def run_bare(spec, dataset, device: torch.device, warmup: int, steps: int) -> dict:
    """Ho et al. Algorithm 1 written by hand over the same model, data and optimizer settings."""
    cfg, cuda = spec.train, device.type == "cuda"
    torch.manual_seed(spec.seed)
    model = create(spec.entry.arch, in_channels=spec.data.channels, out_channels=spec.data.channels,
                   image_size=spec.data.image_size, **spec.entry.kwargs).to(device)
    if cfg.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                            weight_decay=cfg.weight_decay, fused=cuda or None)
    images = dataset.train.to(device)
    ab = Diffusion(spec.diffusion.schedule, spec.diffusion.timesteps).alphas_cumprod.float().to(device)
    gen = torch.Generator(device).manual_seed(spec.seed)
    amp = "none" if not cuda else cfg.amp
    b = cfg.batch_size

    def step() -> torch.Tensor:
        x0 = images[torch.randint(len(images), (b,), generator=gen, device=device)].float() / 127.5 - 1
        t = torch.randint(0, len(ab), (b,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        a = ab[t].view(-1, 1, 1, 1)
        with autocast(device, amp):
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).float(), eps)
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
    return {"loop": "bare", "steps": steps, "seconds": seconds, "img_per_s": steps * b / seconds,
            "reported_img_per_s": None, "final_loss": loss.item(),
            **common.peak_memory(device, window)}


COLUMNS = [("loop", "loop", "s"), ("img_per_s", "img/s", ".2f"), ("ms_per_step", "ms/step", ".0f"),
           ("reported_img_per_s", "harness-reported img/s", ".2f"), ("peak_mem_mb", "peak GPU MiB", ".0f"),
           ("peak_rss_mb", "peak RSS MiB", ".0f"), ("rss_start_mb", "RSS at start MiB", ".0f")]


def main(argv=None) -> dict:
    args, device = parse_args(argv)
    spec = harness_spec(args, device)
    flags = precision_flags(device, spec.train)  # TF32 as the harness sets it; applies to both loops
    dataset = load_dataset(spec.data)
    info = common.machine(device)
    runs = []
    for repeat in range(args.repeats):  # alternate the loops so load changes hit both
        for loop in ("harness", "bare"):
            row = (run_harness(spec, dataset, device, args.warmup) if loop == "harness"
                   else run_bare(spec, dataset, device, args.warmup, args.steps))
            row.update(repeat=repeat, ms_per_step=1000 * row["seconds"] / row["steps"])
            runs.append(row)
            common.release(device)
            print(f"  repeat {repeat}: {loop:7s} {row['img_per_s']:.2f} img/s", flush=True)
    top = [common.best([r for r in runs if r["loop"] == loop], "img_per_s") for loop in ("harness", "bare")]
    ratio = top[1]["img_per_s"] / top[0]["img_per_s"]
    print(f"\n{args.arch} training, batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats}, "
          f"{device.type} (amp {flags['amp']}, channels_last {flags['channels_last']})")
    print(common.describe(info))
    print(common.table(top, COLUMNS))
    print(f"harness overhead: bare img/s / harness img/s = {ratio:.3f}")
    payload = {"benchmark": "train_throughput", "machine": info,
               "model": common.model_info(args.arch, args.kwargs, spec.data.channels, args.image_size),
               "settings": {"batch": args.batch, "image_size": args.image_size, "steps": args.steps,
                            "warmup": args.warmup, "repeats": args.repeats, **flags,
                            "harness_train": spec.config()["train"]},
               "best": {r["loop"]: r for r in top}, "overhead_ratio": ratio, "runs": runs}
    common.save(args.out, payload)
    return payload


if __name__ == "__main__":
    common.cli(main)
