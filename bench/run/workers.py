"""Local workers of one suite: `--workers N` (CPU) or `--devices all|0,1,3` (one per GPU).

Each worker is the same `python -m bench run SUITE ...` command with `--worker-index I` added: it
takes the next pending run, claims it (`bench.run.claims`), trains it, and goes on until no run is
left; a run that fails or crashes does not stop it. A GPU worker sees only its device
(`CUDA_VISIBLE_DEVICES`, as torchrun-less launchers do); CPU workers share the cores
(`OMP_NUM_THREADS` = cores / workers unless set). The parent only waits; the caller writes the
leaderboard once all workers are done.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from bench.errors import BenchError


def parse_devices(text: str) -> list[str]:
    """`all` or a comma list of CUDA device indices -> the indices; BenchError without CUDA."""
    if not torch.cuda.is_available():
        raise BenchError(f"--devices {text}: no CUDA device on this machine "
                         "(torch.cuda.is_available() is False); on CPU use --workers N")
    count = torch.cuda.device_count()
    if text.strip() == "all":
        return [str(i) for i in range(count)]
    try:
        picked = [int(part) for part in text.split(",")]
    except ValueError:
        picked = []
    valid = ", ".join(str(i) for i in range(count))
    if not picked or len(set(picked)) != len(picked) or not all(0 <= i < count for i in picked):
        raise BenchError(f"--devices: {text!r} is not 'all' or distinct device indices among {valid}")
    return [str(i) for i in picked]


def worker_envs(workers: int | None, devices: list[str] | None) -> list[dict[str, str]]:
    """The extra environment of each worker: its GPU, or its share of the CPU threads."""
    if devices:
        return [{"CUDA_VISIBLE_DEVICES": d} for d in devices]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // workers))
    return [{"OMP_NUM_THREADS": threads} for _ in range(workers)]


def run_workers(command: list[str], envs: list[dict[str, str]], log=print) -> list[int]:
    """Start `command + ['--worker-index', i]` once per env; wait for all; their exit codes. On
    Ctrl-C the workers (same process group) are interrupted too and waited for."""
    procs = []
    for i, extra in enumerate(envs):
        env = {**os.environ, **extra, "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "bench", *command,
                                       "--worker-index", str(i)], env=env))
        shown = ", ".join(f"{k}={v}" for k, v in extra.items())
        log(f"worker {i}: PID {procs[-1].pid} ({shown})")
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            p.wait()
        raise
    return [p.returncode for p in procs]
