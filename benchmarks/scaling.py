"""Scaling out on one machine (issue 12): what more processes buy on this machine, measured.

Section `ddp`: one tiny run (unet_tiny on synthetic 16 px images, a kimg budget, no in-training
evaluation, no quality metrics) trained by `torchrun --nproc_per_node R -m bench run` for each R
of `--ranks` (gloo on a CPU, one torch thread per rank), the same global batch and budget each
time. Reported per R: training img/s (`train_img_per_s` of the result: global images over the
synchronized training time, the slowest rank's, evaluation excluded), training seconds, the
wall-clock seconds of the whole command (process start, data, evaluation, report included), and
the speed-up of training img/s over R = 1. Each configuration runs `--repeats` times (fresh
results folder each time); the best is reported, every repeat is kept in the JSON.

    python benchmarks/scaling.py                     # both sections: ranks 1,2 and workers 1,2
    python benchmarks/scaling.py --sections workers --workers-kimg 1 --repeats 2
    python benchmarks/scaling.py --ranks 1,2 --kimg 2 --repeats 2 --out benchmarks/scaling.json

Section `workers`: the 4-run tiny suite (`unet_tiny` widths 8 and 16 x seeds 0, 1, 16 px, batch 8,
`--workers-kimg` per run) run by `python -m bench run SUITE --workers N` for each N of `--workers`
(N = 1: the plain single-process command), one torch thread per run process, timed wall-clock
from start to exit (process start, training, evaluation, report: what a user waits for); the runs'
training seconds are summed from their result.json. Modes are interleaved over `--repeats`, the
fastest of each is shown; speed-up = wall(N = 1) / wall(N).

The sections are a dict (`SECTIONS`), so other scale-out measurements add theirs beside these.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import ROOT, best, cli, describe, machine, save, table

DDP_COLUMNS = [("ranks", "ranks", "d"), ("train_img_per_s", "train img/s", ".1f"),
               ("train_seconds", "train s", ".2f"), ("wall_seconds", "wall s", ".1f"),
               ("speedup", "speed-up", ".2f"), ("steps", "steps", "d"), ("images", "images", "d")]


def ddp_suite(folder: Path, args) -> Path:
    """The tiny suite of the ddp section (a global batch that every R of --ranks divides)."""
    suite = {"name": "scaling_ddp",
             "data": {"dataset": "synthetic", "image_size": 16, "num_images": 512},
             "budget": {"kimg": args.kimg},
             "train": {"batch_size": args.batch, "device": "cpu", "log_every": 10, "lr": 1e-3},
             "eval": {"steps": 2, "grid": 4, "sample_batch": 8, "val_images": 8, "metrics": []},
             "models": [{"arch": "unet_tiny", "name": "tiny"}], "seeds": [0]}
    path = folder / "scaling_ddp.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(suite: Path, results: Path, ranks: int, timeout: float) -> dict:
    """One `torchrun -m bench run` of the suite; its result's budget and timing, and wall seconds."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "bench", "run", str(suite), "--results", str(results), "--no-progress",
           "--no-tensorboard"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "BENCH_CACHE": str(results / "cache")}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"torchrun with {ranks} ranks failed:\n{done.stderr[-2000:]}")
    (result_file,) = (results / "scaling_ddp").glob("tiny-*/result.json")
    result = json.loads(result_file.read_text())
    return {"ranks": ranks, "world_size": result["parallel"]["world_size"],
            "train_img_per_s": result["metrics"]["train_img_per_s"],
            "train_seconds": result["budget"]["train_seconds"], "wall_seconds": wall,
            "steps": result["budget"]["steps"], "images": result["budget"]["images"]}


def ddp_section(args) -> dict:
    """Training img/s of one run under torchrun with each R of --ranks, and the speed-ups."""
    rows, repeats = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        suite = ddp_suite(Path(tmp), args)
        for ranks in args.ranks:
            runs = [torchrun(suite, Path(tmp) / f"r{ranks}-{i}", ranks, args.timeout)
                    for i in range(args.repeats)]
            repeats[ranks] = runs
            rows.append(dict(best(runs, "train_img_per_s")))
    base = next((r["train_img_per_s"] for r in rows if r["ranks"] == 1), None)
    for row in rows:
        row["speedup"] = row["train_img_per_s"] / base if base else None
    print(table(rows, DDP_COLUMNS))
    return {"rows": rows, "repeats": repeats,
            "settings": {"arch": "unet_tiny", "image_size": 16, "batch_size": args.batch,
                         "kimg": args.kimg, "backend": "gloo", "threads_per_rank": 1}}


WORKER_COLUMNS = [("workers", "workers", "d"), ("runs", "runs", "d"), ("wall_seconds", "wall s", ".1f"),
                  ("train_seconds_sum", "train s (sum)", ".1f"), ("speedup", "speed-up", ".2f")]


def workers_suite(folder: Path, kimg: float) -> Path:
    """The 4-run tiny suite of the workers section (two widths x two seeds)."""
    suite = {"name": "scaling_workers",
             "data": {"dataset": "synthetic", "image_size": 16, "num_images": 256},
             "budget": {"kimg": kimg}, "train": {"batch_size": 8, "device": "cpu"},
             "eval": {"steps": 4, "grid": 1, "sample_batch": 4, "val_images": 4, "metrics": []},
             "models": [{"arch": "unet_tiny", "name": f"w{w}", "kwargs": {"base_channels": w}}
                        for w in (8, 16)], "seeds": [0, 1]}
    path = folder / "scaling_workers.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def run_workers(suite: Path, results: Path, workers: int, timeout: float) -> dict:
    """One `bench run --workers N` of the suite: wall seconds and its runs' training seconds."""
    cmd = [sys.executable, "-m", "bench", "run", str(suite), "--results", str(results),
           "--no-progress", "--no-tensorboard", *(["--workers", str(workers)] if workers > 1 else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"bench run --workers {workers} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(p.read_text()) for p in results.glob("scaling_workers/*/result.json")]
    return {"workers": workers, "runs": len(records), "wall_seconds": wall,
            "train_seconds_sum": sum(r["budget"]["train_seconds"] for r in records)}


def workers_section(args) -> dict:
    """Wall seconds of the 4-run suite with each N of --workers (interleaved repeats), speed-ups."""
    every = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        suite = workers_suite(Path(tmp), args.workers_kimg)
        for i in range(args.repeats):
            for n in args.workers:
                every.append(run_workers(suite, Path(tmp) / f"w{n}-{i}", n, args.timeout))
    rows = [dict(min((r for r in every if r["workers"] == n), key=lambda r: r["wall_seconds"]))
            for n in args.workers]
    base = next((r["wall_seconds"] for r in rows if r["workers"] == 1), None)
    for row in rows:
        row["speedup"] = base / row["wall_seconds"] if base else None
    print(table(rows, WORKER_COLUMNS))
    return {"rows": rows, "repeats": every,
            "settings": {"arch": "unet_tiny", "widths": [8, 16], "seeds": [0, 1], "image_size": 16,
                         "batch_size": 8, "kimg_per_run": args.workers_kimg, "threads_per_run": 1}}


SECTIONS = {"ddp": ddp_section, "workers": workers_section}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="ddp,workers", help=f"comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--ranks", default="1,2", help="torchrun ranks to measure (ddp), e.g. 1,2")
    p.add_argument("--kimg", type=float, default=1.0, help="budget of the run (ddp; default 1)")
    p.add_argument("--batch", type=int, default=32, help="global batch (ddp; default 32)")
    p.add_argument("--workers", default="1,2", help="local worker counts to measure (workers), e.g. 1,2")
    p.add_argument("--workers-kimg", type=float, default=1.0,
                   help="budget of each of the 4 runs (workers; default 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration; the best is shown")
    p.add_argument("--timeout", type=float, default=600, help="seconds per torchrun command")
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = p.parse_args()
    args.ranks = [int(r) for r in args.ranks.split(",")]
    args.workers = [int(n) for n in args.workers.split(",")]
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if (unknown or min(args.ranks) < 1 or args.repeats < 1 or any(args.batch % r for r in args.ranks)
            or min(args.workers) < 1 or not args.workers_kimg > 0):
        raise SystemExit(f"bad options: sections {unknown or 'ok'}, ranks {args.ranks} (each >= 1 and "
                         f"dividing --batch {args.batch}), repeats {args.repeats}, workers {args.workers} "
                         f"(each >= 1), workers-kimg {args.workers_kimg} (> 0)")
    info = machine(torch.device("cpu"))
    print(describe(info))
    payload = {"machine": info}
    for name in args.sections.split(","):
        print(f"\n[{name}]")
        payload[name] = SECTIONS[name](args)
    save(args.out, payload)


if __name__ == "__main__":
    cli(main)
