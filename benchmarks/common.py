"""Shared pieces of the benchmark scripts: command-line options, the machine description, synchronized
clocks, peak memory, a plain-text table and the JSON record.

Conventions (DESIGN.md: benchmarks are scripts that print a table and write JSON, not timed tests;
AlgoPerf: only the timed work counts): warm-up work is never timed; on CUDA the device is
synchronized before every clock read; peak memory is `torch.cuda.max_memory_allocated` on CUDA and
null elsewhere, where the process's peak resident set (Linux VmHWM, reset before each measurement
through /proc/self/clear_refs when the kernel allows it) is reported instead, labelled as such.
JSON is written atomically with `bench.run.results.write_json`.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))

from architectures import UnknownArchitectureError, create  # noqa: E402
from bench.device import resolve_device  # noqa: E402
from bench.errors import BenchError  # noqa: E402
from bench.metrics.cost import count_params, forward_flops  # noqa: E402
from bench.run.results import git_commit, write_json  # noqa: E402


def cli(main) -> None:
    """Run `main()`; a bad input (arch name, kwargs, steps...) is one line and exit code 2."""
    try:
        main()
    except (BenchError, UnknownArchitectureError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark takes (device, threads, repeats, architecture, JSON path)."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is faster on a busy machine")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure this many times and report the best (default 1)")
    parser.add_argument("--arch", default=None, help="registered architecture (python -m bench list)")
    parser.add_argument("--kwargs", type=json.loads, default={},
                        help='architecture keywords as JSON, e.g. \'{"base_channels": 64}\'')
    parser.add_argument("--image-size", type=int, default=None, help="square resolution")
    parser.add_argument("--batch", type=int, default=None, help="images per batch")
    parser.add_argument("--amp", choices=("bf16", "fp16", "none"), default="bf16",
                        help="autocast dtype on CUDA (CPU always runs fp32; default bf16)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")


def setup(args: argparse.Namespace) -> torch.device:
    """Resolve the device and apply --threads; refuse counts below 1."""
    for name in ("repeats", "batch", "image_size", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            sys.exit(f"--{name.replace('_', '-')}: must be at least 1, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def model_info(arch: str, kwargs: dict, channels: int, image_size: int) -> dict:
    """Parameters and forward GFLOPs per image, counted on a meta-device copy (no compute)."""
    with torch.device("meta"):
        model = create(arch, in_channels=channels, out_channels=channels, image_size=image_size, **kwargs)
    return {"arch": arch, "kwargs": kwargs, "params": count_params(model),
            "gflops_forward_per_image": forward_flops(model, channels, image_size) / 1e9}


def machine(device: torch.device) -> dict:
    """CPU model and cores, load, library versions, GPU; enough to tell two result files apart."""
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(),
            "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(), "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda if cuda else None, "device": str(device),
            "gpu": props.name if cuda else None,
            "gpu_memory_gb": round(props.total_memory / 2**30, 1) if cuda else None,
            "platform": platform.platform(), "git_commit": git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        found = None
    return found.group(1).strip() if found else (platform.processor() or "unknown")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """perf_counter after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


def release(device: torch.device) -> None:
    """Free what the previous measurement left (between two models)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> dict:
    """Start a peak-memory window; returns its start record for `peak_memory`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return {"reset": True, "rss_kb": None}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    return {"reset": reset, "rss_kb": _status_kb("VmRSS")}


def peak_memory(device: torch.device, window: dict) -> dict:
    """{peak_mem_mb (CUDA, else null), peak_rss_mb and rss_start_mb (CPU, else null), memory_note}."""
    if device.type == "cuda":
        return {"peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20, "peak_rss_mb": None,
                "rss_start_mb": None, "memory_note": "torch.cuda.max_memory_allocated"}
    start = window["rss_kb"] / 1024 if window["rss_kb"] is not None else None
    hwm = _status_kb("VmHWM")
    if window["reset"] and hwm is not None:
        return {"peak_mem_mb": None, "peak_rss_mb": hwm / 1024, "rss_start_mb": start,
                "memory_note": "no GPU: process peak RSS (VmHWM) during this measurement"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mem_mb": None, "peak_rss_mb": rss_kb / 1024, "rss_start_mb": start,
            "memory_note": "no GPU: process peak RSS since start (ru_maxrss; could not reset)"}


def _status_kb(field: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        found = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def best(rows: list[dict], key: str) -> dict:
    """The row with the highest `key` (the best of several repeats)."""
    return max(rows, key=lambda r: r[key])


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (key, header, format spec); None prints as '-'."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else format(row[k], f) for k, _, f in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def describe(info: dict) -> str:
    """One line naming the machine, for the top of a printed table."""
    where = info["gpu"] or f"{info['cpu']}, {info['cpu_cores']} cores, {info['torch_threads']} torch threads"
    return (f"{where} | torch {info['torch']} | load {info['load_average_1m']:.1f} "
            f"| commit {(info['git_commit'] or '?')[:12]}")


def save(path: Path, payload: dict) -> None:
    write_json(path, payload)
    print(f"wrote {path}")
