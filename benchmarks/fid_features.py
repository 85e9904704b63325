"""Inception feature extraction speed: bench's batched in-memory path vs pytorch-fid's folder path.

Both run the same network (pytorch-fid's InceptionV3, TF-Inception 2015-12-05 weights found as
`bench.metrics.inception.load_inception` finds them) on the same CIFAR-10 test images:
- bench: uint8 tensor already in memory -> `extract_features` (batched, fp32; NHWC on CPU);
- bench-nchw: the same without the NHWC layout;
- pytorch-fid: the images saved as PNGs, read by `pytorch_fid.fid_score.get_activations` (PIL decode,
  ToTensor, DataLoader with its CLI default of min(8, cpus) workers).
The ratio is from one run. Prints a table and writes benchmarks/fid_features.json (git-ignored).

    python benchmarks/fid_features.py [--n 256] [--batch-size 64] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.metrics import inception

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def cifar_test_images(n: int, workdir: Path) -> torch.Tensor:
    """The first ceil(n/10) test images of each class, unpacked from the tarball, as uint8 [n, 3, 32, 32]."""
    digits = len(str(max(0, (n + 9) // 10 - 1)))
    pattern = "test/*/" + "0" * (4 - digits) + "?" * digits + ".jpg"
    subprocess.run(["tar", "-xzf", str(CIFAR), "-C", str(workdir), "--wildcards", pattern], check=True)
    files = sorted(workdir.glob("test/*/*.jpg"), key=lambda f: (f.name, f.parent.name))[:n]   # classes interleaved
    return torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_bench(module, images, batch_size, device) -> float:
    inception.extract_features(module, images[:batch_size], batch_size, device)   # warm-up
    sync(device)
    start = time.perf_counter()
    inception.extract_features(module, images, batch_size, device)
    sync(device)
    return len(images) / (time.perf_counter() - start)


def time_pytorch_fid(state_dict, images, batch_size, device, folder: Path) -> tuple[float, int]:
    from pytorch_fid.fid_score import get_activations

    folder.mkdir()
    files = []
    for i, image in enumerate(images):
        files.append(folder / f"{i:05d}.png")
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(files[-1])
    model = inception.build_inception(state_dict).to(device)
    workers = min(8, len(os.sched_getaffinity(0)))
    get_activations(files[:batch_size], model, batch_size, 2048, device, workers)        # warm-up
    sync(device)
    start = time.perf_counter()
    get_activations(files, model, batch_size, 2048, device, workers)
    sync(device)
    return len(files) / (time.perf_counter() - start), workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        images = cifar_test_images(args.n, Path(tmp))
        state_dict, sha = inception.load_state_dict()
        module, _ = inception.load_inception(device=device)
        nchw = inception.build_inception(state_dict).to(device)
        rows = {"bench": time_bench(module, images, args.batch_size, device),
                "bench-nchw": time_bench(nchw, images, args.batch_size, device)}
        rows["pytorch-fid"], workers = time_pytorch_fid(state_dict, images, args.batch_size, device,
                                                        Path(tmp) / "png")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{'path':<12} {'img/s':>8} {'vs pytorch-fid':>15}   ({len(images)} CIFAR-10 images, "
          f"batch {args.batch_size}, {device.type}: {name}, {torch.get_num_threads()} threads)")
    for path, rate in rows.items():
        print(f"{path:<12} {rate:8.2f} {rate / rows['pytorch-fid']:14.2f}x")
    result = {"n_images": len(images), "batch_size": args.batch_size, "device": str(device),
              "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "pytorch_fid_workers": workers, "load_average": os.getloadavg(), "weights_sha256": sha,
              "img_per_s": rows, "ratio_vs_pytorch_fid": {k: v / rows["pytorch-fid"] for k, v in rows.items()}}
    out = ROOT / "benchmarks" / "fid_features.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
