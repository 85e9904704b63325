"""Run folders, atomic result files, the environment record, and results -> pandas.

Layout: `results/<suite>/<run_id>/{result.json, samples.png, checkpoint.pt}`. Every file is written
to a temporary name in the same folder (prefix `.bench-tmp-`) and moved into place with
`os.replace`, so a crash never leaves a half-written result behind (a reader sees the old file or
the new one); a kill during a write leaves the temporary file, which the next `bench run` removes.
Under torchrun only rank 0 writes: on the other ranks every writer here (`write_json`, `write_with`,
`save_checkpoint`, `remove_temp_files`) does nothing, so they can run the same code path.

Nothing read from a results folder runs code: checkpoints are saved as plain types (`plain`) and
loaded with `torch.load(weights_only=True)` (PyTorch's safe unpickler); an unreadable result.json or
checkpoint is a `BenchError` naming the file (the runner redoes that run, readers skip or refuse it).
"""
from __future__ import annotations

import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench import dist
from bench.errors import BenchError, warn

RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"                  # train.early_stop: the checkpoint of the best evaluation
SAMPLES = "samples.png"
TEMP_PREFIX = ".bench-tmp-"
_SKIPPED: set[str] = set()        # unreadable result files already reported by iter_results
CHECKPOINT_KEYS = ("model", "ema", "optimizer", "generator", "batches", "step", "images")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, data: Any) -> None:
    if not dist.is_main():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomically write `path` with `writer(tmp_path)` (torch.save, save_image, df.to_csv...)."""
    if not dist.is_main():
        return
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


def remove_temp_files(folder: str | Path, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files a killed write left below `folder`; returns them. With
    `older_than`, only those untouched for that many seconds (a live writer's file is fresh)."""
    if not dist.is_main():
        return []
    found = sorted(Path(folder).rglob(f"{TEMP_PREFIX}*")) if Path(folder).is_dir() else []
    if older_than is not None:
        found = [p for p in found if _age(p) > older_than]
    for path in found:  # a temporary folder too (the TensorBoard events, bench.run.tensorboard)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def read_result(run_dir: str | Path) -> dict | None:
    """A run folder's result.json; None when there is none; BenchError naming it when unreadable."""
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BenchError(f"{path}: unreadable result ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(result, dict):
        raise BenchError(f"{path}: unreadable result (a JSON {type(result).__name__}, not an object)")
    return result


def is_complete(run_dir: str | Path) -> bool:
    try:
        result = read_result(run_dir)
    except BenchError:
        return False
    return bool(result) and result.get("status") == "complete"


def plain(value: Any) -> Any:
    """`value` with NumPy scalars and arrays as Python numbers and tensors: what
    `torch.load(weights_only=True)` accepts (tensors, dicts, lists, tuples, numbers, strings)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically save a checkpoint dict of plain types (loadable with weights_only=True)."""
    write_with(path, lambda tmp: torch.save(plain(state), tmp))


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint through PyTorch's safe unpickler; BenchError naming the file for anything that
    is not a complete checkpoint of plain types (truncated, empty, foreign, or code-running)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BenchError(f"{path}: refused: not a plain-tensor checkpoint, it would run code or "
                         f"needs classes ({str(err).strip().splitlines()[0][:160]})") from None
    except Exception as err:  # noqa: BLE001 -- zip/EOF/unpickling errors of a damaged file
        raise BenchError(f"{path}: unreadable checkpoint, truncated or corrupt "
                         f"({type(err).__name__})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise BenchError(f"{path}: not a bench checkpoint (missing {', '.join(missing)})")
    return ckpt


def evaluated_checkpoint(run_dir: str | Path, result: dict | None) -> Path:
    """The checkpoint a finished run is evaluated from: `best.pt` of an early-stopped run."""
    best = Path(run_dir) / BEST
    early = ((result or {}).get("early_stop") or {}).get("best_kimg") is not None
    return best if early and best.is_file() else Path(run_dir) / CHECKPOINT


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
            try:
                result = read_result(path.parent)
            except BenchError as err:  # one bad file never hides the others
                if str(path) not in _SKIPPED:   # once per file, though readers call this twice
                    _SKIPPED.add(str(path))
                    warn(f"{err}; skipped")
                continue
            if result is not None and (training or result.get("role") != "training"):
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
               "seed": result.get("seed"), "fold": result.get("fold"), "run_id": result.get("run_id"),
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
