"""Fixture result folders with known numbers, shaped like `bench.run.runner` writes them (result.json,
samples.png, suite.json) plus the evaluation issue's additions (fid, kid, recon per t, curves,
protocol). Tests of the report build them instead of training anything.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from bench.metrics.fid import protocol_key

PROTOCOL = {"weights_sha256": "7ff4a85c3a63", "preprocessing": "pytorch-fid bilinear-299",
            "n_generated": 256, "reference_split": "train", "reference_n": 1024, "sampler": "ddim",
            "steps": 20, "eta": 0.0, "ema": True, "sampling_seed": 0}
T_GRID = [50, 100, 500, 1000]
KIMG = [0.1, 0.2, 0.3]

# Known per-seed numbers (5 seeds). "clear" is better than "base" by 0.1 on every seed; "noise"
# differs from "base" by +-0.01 around zero (mean difference 0); "slow" is worse by 0.05.
VAL_LOSS = {"base": [0.50, 0.52, 0.49, 0.51, 0.50],
            "clear": [0.40, 0.42, 0.39, 0.41, 0.40],
            "noise": [0.51, 0.51, 0.50, 0.50, 0.50],
            "slow": [0.55, 0.57, 0.54, 0.56, 0.55]}
# FID and training throughput chosen for a known Pareto front: clear (best FID) and base (fastest).
FID = {"base": 30.0, "clear": 20.0, "noise": 31.0, "slow": 35.0}
IMG_PER_S = {"base": 1000.0, "clear": 500.0, "noise": 900.0, "slow": 400.0}
PARAMS = {"base": 1_000_000, "clear": 2_000_000, "noise": 1_000_000, "slow": 3_000_000}


def metrics_for(entry: str, seed: int, evaluation: bool = True) -> dict:
    """The metrics block of one run: val_loss from VAL_LOSS, the rest from the tables above."""
    loss = VAL_LOSS[entry][seed]
    out = {"params": PARAMS[entry], "gflops": PARAMS[entry] / 1e7, "peak_mem_train_mb": None,
           "final_train_loss": loss + 0.02, "train_img_per_s": IMG_PER_S[entry] + seed,
           "sample_img_per_s": IMG_PER_S[entry] / 10, "sample_seconds": 1.0,
           "peak_mem_sample_mb": None, "val_loss": loss,
           **{f"val_loss_q{q}": loss * (1.2 - 0.1 * q) for q in range(1, 5)}}
    if evaluation:
        fid = FID[entry] + 0.1 * seed
        out.update(fid=fid, kid_mean=fid / 1000, kid_std=0.001,
                   recon={str(t): {"ssim_mean": 1 - t / 1100 - loss / 10, "ssim_std": 0.02,
                                   "psnr_mean": 30 - t / 50, "psnr_std": 1.0} for t in T_GRID})
    return out


def history_for(entry: str, seed: int, evaluation: bool) -> list[dict]:
    points = []
    for i, kimg in enumerate(KIMG):
        final = VAL_LOSS[entry][seed]
        scale = 1 + 0.5 * (len(KIMG) - 1 - i)
        points.append({"step": 10 * (i + 1), "kimg": kimg, "train_loss": final * scale + 0.02,
                       "lr": 1e-3})
        point = {"step": 10 * (i + 1), "kimg": kimg, "val_loss": final * scale,
                 **{f"val_loss_q{q}": final * scale * (1.2 - 0.1 * q) for q in range(1, 5)}}
        if evaluation:
            point["fid"] = (FID[entry] + 0.1 * seed) * scale
        points.append(point)
    return points


def curves_for(entry: str, seed: int) -> dict:
    fid = FID[entry] + 0.1 * seed
    return {"fid_vs_n": [{"n": n, "fid": fid * (1 + 256 / n)} for n in (64, 128, 256)],
            "fid_vs_steps": [{"sampler": "ddim", "steps": s, "fid": fid * (1 + 10 / s),
                              "sample_img_per_s": 1000 / s} for s in (10, 20, 50)]}


def write_run(folder: Path, entry: str, seed: int, *, evaluation: bool = True,
              protocol: dict | None = None, status: str = "complete", dataset: str = "synthetic",
              suite: str = "fixture") -> Path:
    """One run folder with result.json and a 2x2 samples.png coloured by entry and seed."""
    tag = zlib.crc32(f"{suite}/{entry}/{seed}".encode())
    run_id = f"{entry}-s{seed}-{tag:010d}"
    run_dir = Path(folder) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"suite": suite, "entry": entry, "arch": "unet_tiny", "seed": seed, "run_id": run_id,
              "status": status, "config": {"entry": {"arch": "unet_tiny", "name": entry},
                                           "data": {"dataset": dataset, "image_size": 16},
                                           "eval": {"metric": "val_loss"}},
              "metrics": metrics_for(entry, seed, evaluation) if status == "complete" else {},
              "history": history_for(entry, seed, evaluation),
              "budget": {"unit": "kimg", "requested": 0.3, "images": 300, "kimg": 0.3, "steps": 30,
                         "train_seconds": 1.0},
              "timing": {"train_seconds": 1.0, "eval_seconds": 1.0, "wall_seconds": 2.0},
              "environment": {"python": "3.11", "torch": "2.14.1", "cuda": None, "gpu": None,
                              "device": "cpu", "git_commit": "abc1234", "amp": "none",
                              "tf32": False, "compile": False},
              "files": {"samples": "samples.png"}, "error": None if status == "complete" else "boom"}
    if evaluation:
        protocol = protocol or PROTOCOL
        record.update(curves=curves_for(entry, seed), protocol=protocol,
                      protocol_key=protocol_key(protocol))
    (run_dir / "result.json").write_text(json.dumps(record, indent=1))
    _samples(run_dir / "samples.png", entry, seed)
    return run_dir


def _samples(path: Path, entry: str, seed: int) -> None:
    rng = np.random.default_rng(zlib.crc32(entry.encode()) + seed)
    Image.fromarray(rng.integers(0, 255, (38, 38, 3), dtype=np.uint8)).save(path)


def build_suite(root: Path, name: str = "fixture", entries=("base", "clear", "noise", "slow"),
                seeds=(0, 1, 2, 3, 4), *, baseline: str | None = "base", evaluation: bool = True,
                protocol: dict | None = None, dataset: str = "synthetic") -> Path:
    """A suite folder `root/name` with every (entry, seed) run and its suite.json."""
    folder = Path(root) / name
    for entry in entries:
        for seed in seeds:
            write_run(folder, entry, seed, evaluation=evaluation, protocol=protocol,
                      dataset=dataset, suite=name)
    suite = {"name": name, "entries": list(entries), "seeds": list(seeds),
             "baseline": baseline or entries[0], "metric": "val_loss", "direction": "minimize"}
    (folder / "suite.json").write_text(json.dumps(suite))
    return folder
