"""The one cache folder: `$BENCH_CACHE`, else ~/.cache/bench.

Everything derived and reusable lives under it, one sub-folder per kind: `data/` (decoded dataset
tensors), `inception/` (the converted TF-Inception weights), `fid_stats/` (reference statistics),
`classifiers/` (the classifier metric's trained networks). Writers create folders on demand.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str | None = None) -> Path:
    """`$BENCH_CACHE` (or ~/.cache/bench), or its sub-folder `kind`."""
    root = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench").expanduser()
    return root / kind if kind else root
