"""Time of FID-50k end to end: DDIM sampling of N images at a large batch, Inception pool3
features of them in fp32 (the protocol's default) and bf16, and the Fréchet distance.

The Inception network is pytorch-fid's FID Inception (the architecture `bench` scores with) with
RANDOM weights: the real weights are not carried to benchmark machines, and speed does not depend
on the weight values; the FID value printed by this script is therefore meaningless and is not
reported, only its time. The denoiser has its untrained initialization too (same speed). With
`--n` below 50 000 the 50k figure is extrapolated linearly from the measured rate, and says so.

    python benchmarks/fid50k_timing.py                        # CUDA: unet_ddpm, N=50 000, batch 1000
    python benchmarks/fid50k_timing.py --n 5000               # CUDA: measure 5k, extrapolate to 50k
    python benchmarks/fid50k_timing.py --threads 1            # CPU: unet_tiny 32x32, N=32, batch 16
"""
from __future__ import annotations

import argparse
from unittest import mock

import common
import numpy as np
import torch
from pytorch_fid import inception as pt_inception

from architectures import create
from bench.config.schema import EvalConfig
from bench.data import to_uint8
from bench.diffusion import Diffusion
from bench.metrics.fid import feature_stats, frechet_distance
from bench.metrics.inception import extract_features
from bench.metrics.sampling import sample

OUT = common.ROOT / "benchmarks" / "fid50k_timing.json"


def random_inception(device: torch.device):
    """pytorch-fid's InceptionV3([pool3]) with torchvision's random initialization (no download)."""
    torch.manual_seed(0)
    with mock.patch.object(pt_inception, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None):
        module = pt_inception.InceptionV3([pt_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return module.eval().to(device)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--n", type=int, default=None, help="images (default 50000 CUDA / 32 CPU)")
    parser.add_argument("--steps", type=int, default=100, help="DDIM steps (default 100)")
    parser.add_argument("--inception-batch", type=int, default=None, help="default 500 CUDA / 16 CPU")
    parser.add_argument("--dtypes", default="fp32,bf16", help="Inception precisions to time")
    parser.add_argument("--cuda-graphs", action="store_true", help="eval.cuda_graphs for sampling")
    args = parser.parse_args(argv)
    device = common.setup(args)
    cuda = device.type == "cuda"
    args.arch = args.arch or ("unet_ddpm" if cuda else "unet_tiny")
    args.image_size = args.image_size or 32
    args.batch = args.batch or (1000 if cuda else 16)
    args.n = args.n or (50_000 if cuda else 32)
    args.inception_batch = args.inception_batch or (500 if cuda else 16)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    args.out = args.out or OUT
    return args, device


def time_sampling(model, args, device, amp: str) -> tuple[torch.Tensor, float]:
    """All N samples as uint8 (on the device) and the synchronized seconds they took."""
    cfg = EvalConfig(sampler="ddim", steps=args.steps, cuda_graphs=args.cuda_graphs)
    shape = (3, args.image_size, args.image_size)
    sample(model, Diffusion(), EvalConfig(sampler="ddim", steps=2), min(args.batch, args.n), shape,
           amp=amp, device=device)  # warm-up (kernel selection)
    chunks, start = [], common.clock(device)
    for i, first in enumerate(range(0, args.n, args.batch)):
        b = min(args.batch, args.n - first)
        chunks.append(to_uint8(sample(model, Diffusion(), cfg, b, shape, seed=i, amp=amp, device=device)))
    return torch.cat(chunks), common.clock(device) - start


def time_features(module, images, args, device, dtype: str) -> tuple[np.ndarray, float]:
    extract_features(module, images[: args.inception_batch], args.inception_batch, device, dtype)
    start = common.clock(device)
    feats = extract_features(module, images, args.inception_batch, device, dtype)
    return feats, common.clock(device) - start


def main(argv=None) -> dict:
    args, device = parse_args(argv)
    cuda = device.type == "cuda"
    amp = args.amp if cuda else "none"
    torch.manual_seed(0)
    model = create(args.arch, in_channels=3, out_channels=3, image_size=args.image_size,
                   **args.kwargs).to(device).eval()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        model = model.to(memory_format=torch.channels_last)
    window = common.reset_peak(device)
    images, sample_s = time_sampling(model, args, device, amp)
    rows = [{"stage": f"sampling DDIM-{args.steps} ({amp})", "seconds": sample_s,
             "img_per_s": args.n / sample_s}]
    module = random_inception(device)
    for dtype in args.dtypes:
        feats, seconds = time_features(module, images, args, device, dtype)
        rows.append({"stage": f"inception {dtype} (random weights)", "seconds": seconds,
                     "img_per_s": args.n / seconds})
    start = common.clock(device)
    half = len(feats) // 2
    frechet_distance(*feature_stats(feats[:half]), *feature_stats(feats[half:]))  # value not used
    rows.append({"stage": "frechet distance (2048-d stats)", "seconds": common.clock(device) - start,
                 "img_per_s": None})
    scale = 50_000 / args.n
    total = sample_s + rows[1]["seconds"] + rows[-1]["seconds"]
    for row in rows:
        row["seconds_at_50k"] = row["seconds"] * (scale if row["img_per_s"] else 1.0)
    info = common.machine(device)
    print(f"\nFID-50k timing: {args.arch}, N={args.n} at batch {args.batch}, {args.image_size}x"
          f"{args.image_size}, {device.type}; cuda_graphs {args.cuda_graphs}")
    print(common.describe(info))
    print(common.table(rows, [("stage", "stage", "s"), ("seconds", "s measured", ".2f"),
                              ("img_per_s", "img/s", ".1f"), ("seconds_at_50k", "s at 50k", ".1f")]))
    at50k = sample_s * scale + rows[1]["seconds"] * scale + rows[-1]["seconds"]
    note = "measured" if args.n >= 50_000 else f"extrapolated linearly from N={args.n}"
    print(f"sampling + {args.dtypes[0]} features + distance: {total:.1f} s measured; "
          f"{at50k:.1f} s for 50k ({note})")
    payload = {"benchmark": "fid50k_timing", "machine": info, "rows": rows,
               "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "amp": amp},
               "inception_weights": "random (same network as pytorch-fid's FID Inception)",
               "total_seconds_measured": total, "seconds_at_50k": at50k, "at_50k": note,
               **common.peak_memory(device, window)}
    common.save(args.out, payload)
    return payload


if __name__ == "__main__":
    common.cli(main)
