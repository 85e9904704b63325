"""Sampling throughput (img/s) and peak memory of a denoiser under the harness's samplers: ancestral
DDPM over all T steps (Ho et al. 2020, Algorithm 2), DDIM (Song et al. 2021) and respaced DDPM
(Nichol & Dhariwal 2021) at 10/20/50/100 steps.

Each measurement is one call of `bench.metrics.sampling.sample` (what `bench run` uses for its grid and its
`sample_img_per_s`): eval mode, `torch.no_grad`, bf16 autocast and channels_last on CUDA. A warm-up
call (`--warmup` DDIM steps) runs first and is not timed; clocks are read after synchronizing the
device. Weights are the untrained initialization (speed does not depend on them).

    python benchmarks/sampling_throughput.py                  # unet_ddpm at batch 128 on CUDA
    python benchmarks/sampling_throughput.py --threads 1      # on a CPU: unet_tiny, 16x16, batch 8
    python benchmarks/sampling_throughput.py --arch unet_ddpm --image-size 32 --batch 1 \\
        --samplers ddim,respaced --steps 10,20                # the full model, few steps, on a CPU
"""
from __future__ import annotations

import argparse

import common
import torch

from architectures import create
from bench.config.schema import EvalConfig
from bench.diffusion import Diffusion
from bench.metrics.sampling import sample
from bench.samplers import resolve_steps

OUT = common.ROOT / "benchmarks" / "sampling_throughput.json"
SAMPLER_CHOICES = ("ddpm", "ddim", "respaced")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv=None) -> tuple[argparse.Namespace, torch.device]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--samplers", default=",".join(SAMPLER_CHOICES),
                        help="comma-separated, from ddpm, ddim, respaced (default all three)")
    parser.add_argument("--steps", type=_ints, default=[10, 20, 50, 100],
                        help="step counts for ddim and respaced (ddpm always runs T)")
    parser.add_argument("--timesteps", type=int, default=1000, help="T of the linear schedule")
    parser.add_argument("--warmup", type=int, default=None, help="untimed DDIM steps first (default 5 / 2)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="eval.cuda_graphs: replay each step's network call from a CUDA graph")
    args = parser.parse_args(argv)
    device = common.setup(args)
    cuda = device.type == "cuda"
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    unknown = [s for s in args.samplers if s not in SAMPLER_CHOICES]
    if unknown or not args.samplers:
        parser.error(f"--samplers: unknown {unknown}; choose from {', '.join(SAMPLER_CHOICES)}")
    args.arch = args.arch or ("unet_ddpm" if cuda else "unet_tiny")
    args.image_size = args.image_size or (32 if cuda else 16)
    args.batch = args.batch or (128 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    for steps in args.steps:
        resolve_steps("ddim", steps, args.timesteps, "--steps")  # 1..T, else a one-line error
    args.out = args.out or OUT
    return args, device


def plan(args) -> list[tuple[str, int]]:
    """(sampler, steps) pairs: ddpm once at T, the others at every requested step count."""
    return [(name, args.timesteps if name == "ddpm" else n)
            for name in args.samplers for n in ([args.timesteps] if name == "ddpm" else args.steps)]


def measure(model, diffusion, sampler: str, steps: int, args, device, amp: str) -> dict:
    """Time one `sample` call of `args.batch` images; img/s, ms per network call, peak memory."""
    cfg = EvalConfig(sampler=sampler, steps=steps, cuda_graphs=args.cuda_graphs)
    shape = (3, args.image_size, args.image_size)
    window = common.reset_peak(device)
    start = common.clock(device)
    sample(model, diffusion, cfg, args.batch, shape, seed=1, amp=amp, device=device)
    seconds = common.clock(device) - start
    return {"sampler": sampler, "steps": steps, "seconds": seconds,
            "img_per_s": args.batch / seconds, "ms_per_step": 1000 * seconds / steps,
            **common.peak_memory(device, window)}


COLUMNS = [("sampler", "sampler", "s"), ("steps", "steps", "d"), ("img_per_s", "img/s", ".3f"),
           ("seconds", "s/batch", ".2f"), ("ms_per_step", "ms/step", ".1f"),
           ("peak_mem_mb", "peak GPU MiB", ".0f"), ("peak_rss_mb", "peak RSS MiB", ".0f")]


def main(argv=None) -> dict:
    args, device = parse_args(argv)
    cuda = device.type == "cuda"
    amp = args.amp if cuda else "none"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as the harness
    torch.manual_seed(0)
    model = create(args.arch, in_channels=3, out_channels=3, image_size=args.image_size,
                   **args.kwargs).to(device).eval()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    diffusion = Diffusion("linear", args.timesteps)
    info = common.machine(device)
    sample(model, diffusion, EvalConfig(sampler="ddim", steps=min(args.warmup, args.timesteps)),
           args.batch, (3, args.image_size, args.image_size), amp=amp, device=device)  # warm-up
    runs = []
    for repeat in range(args.repeats):
        for sampler, steps in plan(args):
            row = {**measure(model, diffusion, sampler, steps, args, device, amp), "repeat": repeat}
            runs.append(row)
            print(f"  repeat {repeat}: {sampler} {steps:4d} steps {row['img_per_s']:.3f} img/s", flush=True)
    top = [common.best([r for r in runs if (r["sampler"], r["steps"]) == key], "img_per_s")
           for key in plan(args)]
    print(f"\n{args.arch} sampling, batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"T={args.timesteps}, best of {args.repeats}, {device.type} (amp {amp}, "
          f"cuda_graphs {args.cuda_graphs and cuda})")
    print(common.describe(info))
    print(common.table(top, COLUMNS))
    payload = {"benchmark": "sampling_throughput", "machine": info,
               "model": common.model_info(args.arch, args.kwargs, 3, args.image_size),
               "settings": {"batch": args.batch, "image_size": args.image_size,
                            "timesteps": args.timesteps, "warmup_steps": args.warmup,
                            "repeats": args.repeats, "amp": amp, "channels_last": cuda,
                            "cuda_graphs": args.cuda_graphs and cuda,
                            "tf32": cuda},
               "best": top, "runs": runs}
    common.save(args.out, payload)
    return payload


if __name__ == "__main__":
    common.cli(main)
