"""Run folders, atomic result files, the environment record, and results -> pandas.

Layout: `results/<suite>/<run_id>/{result.json, samples.png, checkpoint.pt}`. Every file is written
to a temporary name in the same folder and moved into place with `os.replace`, so a crash never
leaves a half-written result behind (a reader sees the old file or the new one).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
SAMPLES = "samples.png"


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write `path` with `writer(tmp_path)` (torch.save, save_image, df.to_csv...)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def read_result(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.exists() else None


def is_complete(run_dir: str | Path) -> bool:
    result = read_result(run_dir)
    return bool(result) and result.get("status") == "complete"


def environment(device: torch.device, flags: dict) -> dict:
    """Python/torch/CUDA versions, GPU name, git commit and the precision flags of a run."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "gpu": gpu, "device": str(device), "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(), "git_commit": git_commit(), **flags}


def git_commit() -> str | None:
    """The harness's git commit (with `+dirty` when the tree has changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) or None


def iter_results(folders: list[str | Path], training: bool = False) -> list[tuple[Path, dict]]:
    """(run folder, result) for every result.json below the given folders. A trained run whose
    rows are its eval variants (`role: training`) is left out unless `training`: its variants'
    results carry its training record."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).glob(f"**/{RESULT}")):
            result = json.loads(path.read_text())
            if training or result.get("role") != "training":
                found.append((path.parent, result))
    return found


def load_results(folders: list[str | Path] | str | Path) -> pd.DataFrame:
    """One row per run: identifiers, flattened config (`cfg.*`) and metrics, and its folder."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    rows = []
    for run_dir, result in iter_results(folders):
        row = {"suite": result.get("suite"), "entry": result.get("entry"),
               "arch": result.get("config", {}).get("entry", {}).get("arch"),
               "seed": result.get("seed"), "run_id": result.get("run_id"),
               "status": result.get("status"), "run_dir": str(run_dir),
               "protocol": result.get("protocol_key", "")}
        row.update(_flatten(result.get("config", {}), "cfg."))
        row.update({k: v for k, v in result.get("metrics", {}).items() if _scalar(v)})
        rows.append(row)
    return pd.DataFrame(rows)


def _flatten(data: dict, prefix: str) -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if _scalar(value) else json.dumps(value)
    return flat


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))
