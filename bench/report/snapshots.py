"""The report's over-training and per-class figures: fixed-noise grids over training (one row per
entry, one column per kimg: study 000's epoch-by-epoch grids, study 001's same-noise grid every 50
epochs), the one-step x̂0 panels (study 000, Fig. 9) and the class histograms of generated samples
side by side (study 001's classifier check, `bench.metrics.classify`).

Each reads the files a run folder holds (`samples/kimg-*.png`, `x0_panel.png`, result.json's
`metrics.classify`) for the lowest seed every entry has; each returns a figure, or None without data.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from bench.metrics.snapshots import SAMPLES_DIR, X0_PANEL, snapshot_kimg
from bench.run.results import RESULT

MAX_COLUMNS = 10   # kimg columns of the grids-over-training figure (evenly thinned beyond)


def _one_seed(runs: pd.DataFrame, order) -> dict[str, Path]:
    """label -> run folder of the lowest seed, complete runs only, in leaderboard order."""
    done = runs[runs["status"] == "complete"] if "status" in runs else runs
    if done.empty:
        return {}
    chosen = done[done["seed"] == done["seed"].min()].drop_duplicates("label").set_index("label")
    return {lab: Path(chosen.loc[lab, "run_dir"]) for lab in (order or chosen.index) if lab in chosen.index}


def _snapshots(run_dir: Path) -> dict[float, Path]:
    folder = run_dir / SAMPLES_DIR
    found = {snapshot_kimg(p.name): p for p in folder.glob("kimg-*.png")} if folder.is_dir() else {}
    return {k: found[k] for k in sorted(k for k in found if k is not None)}


def _thin(keys: list[float], n: int) -> list[float]:
    if len(keys) <= n:
        return keys
    return [keys[round(i * (len(keys) - 1) / (n - 1))] for i in range(n)]


def training_grids(runs: pd.DataFrame, order):
    """Rows = entries, columns = kimg of the in-training evaluations."""
    rows = {lab: _snapshots(d) for lab, d in _one_seed(runs, order).items()}
    rows = {lab: snaps for lab, snaps in rows.items() if snaps}
    if not rows:
        return None
    kimgs = _thin(sorted({k for snaps in rows.values() for k in snaps}), MAX_COLUMNS)
    fig, axes = plt.subplots(len(rows), len(kimgs), figsize=(1.9 * len(kimgs), 2.0 * len(rows)),
                             squeeze=False)
    for r, (label, snaps) in enumerate(rows.items()):
        for c, kimg in enumerate(kimgs):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            if kimg in snaps:
                ax.imshow(np.asarray(Image.open(snaps[kimg]).convert("RGB")), interpolation="nearest")
            if r == 0:
                ax.set_title(f"{kimg:g} kimg", fontsize=8)
            if c == 0:
                ax.set_ylabel(str(label), fontsize=8)
    return fig


def x0_panels(runs: pd.DataFrame, order):
    """Each entry's one-step x̂0 panel (rows: held-out images; columns: x0, then x_t | x̂0 per t)."""
    panels = {lab: d / X0_PANEL for lab, d in _one_seed(runs, order).items() if (d / X0_PANEL).exists()}
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), squeeze=False)
    for ax, (label, path) in zip(axes[:, 0], panels.items()):
        ax.imshow(np.asarray(Image.open(path).convert("RGB")), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(str(label), fontsize=8)
        meta = path.with_suffix(".json")
        if meta.exists():
            ax.set_title("x0 | " + " | ".join(f"x_t, x̂0 at t={t}" for t in json.loads(meta.read_text())["t"]),
                         fontsize=7)
    return fig


def _class_counts(run_dir: Path) -> dict | None:
    path = run_dir / RESULT
    if not path.exists():
        return None
    found = (json.loads(path.read_text()).get("metrics") or {}).get("classify")
    return found if isinstance(found, dict) and found.get("counts") else None


def class_histograms(runs: pd.DataFrame, order):
    """Per entry, the class histogram of its generated samples, summed over seeds, side by side."""
    done = runs[runs["status"] == "complete"] if "status" in runs else runs
    totals, classes = {}, None
    for label in order or list(dict.fromkeys(done.get("label", []))):
        for run_dir in done[done["label"] == label]["run_dir"] if not done.empty else []:
            found = _class_counts(Path(run_dir))
            if found:
                classes = classes or found["classes"]
                totals[label] = np.add(totals.get(label, 0), found["counts"])
    if not totals:
        return None
    cols = min(4, len(totals))
    rows = -(-len(totals) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, counts) in zip(axes.flat, totals.items()):
        ax.axis("on")
        share = np.asarray(counts, dtype=float) / max(1, np.sum(counts))
        ax.bar(range(len(share)), share, color="#4878a8")
        ax.axhline(1 / len(share), color="#c44", lw=0.8, ls="--")
        ax.set_xticks(range(len(share)), classes, rotation=70, fontsize=7)
        ax.set_title(f"{label} ({int(np.sum(counts))} samples)", fontsize=8)
    axes[0][0].set_ylabel("share of samples (dashed: uniform)", fontsize=8)
    fig.tight_layout()
    return fig
