"""Leaderboard: a pure function of a results folder (pandas), one row per suite entry.

Metrics are aggregated over seeds (mean and std, and the number of seeds); rows are ranked by the
suite's metric within groups of identical evaluation protocol (rows whose protocols differ are
never ranked against each other), and each row names its run folders.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.results import load_results, write_with

# Columns shown in the leaderboard, in order, when present (quality, then cost).
COLUMNS = ["fid", "kid_mean", "ssim_mean", "val_loss", "val_loss_q1", "val_loss_q2", "val_loss_q3",
           "val_loss_q4", "final_train_loss", "params", "gflops", "train_img_per_s",
           "sample_img_per_s", "peak_mem_train_mb", "peak_mem_sample_mb"]


def leaderboard(runs: pd.DataFrame, metric: str = "val_loss", direction: str = "minimize") -> pd.DataFrame:
    """Aggregate complete runs per (protocol, entry): `<m>` mean, `<m>_std`, seeds, run folders."""
    runs = runs[runs["status"] == "complete"] if "status" in runs else runs
    if runs.empty:
        return pd.DataFrame()
    present = [c for c in COLUMNS if c in runs and runs[c].notna().any()]
    groups = runs.groupby(["protocol", "entry"], sort=False, dropna=False)
    table = groups[present].mean()
    spread = groups[present].std(ddof=1).add_suffix("_std")
    table = table.join(spread)
    table["arch"] = groups["arch"].first()
    table["seeds"] = groups["seed"].nunique()
    table["run_dirs"] = groups["run_dir"].agg(lambda d: " ".join(sorted(Path(p).name for p in d)))
    table = table.reset_index()
    if metric in table:
        ascending = direction == "minimize"
        table["rank"] = table.groupby("protocol")[metric].rank(ascending=ascending, method="min")
        table = table.sort_values(["protocol", "rank"], na_position="last")
    order = ["rank", "entry", "arch", "seeds", *[c for m in present for c in (m, f"{m}_std")],
             "protocol", "run_dirs"]
    return table[[c for c in order if c in table]].reset_index(drop=True)


def to_markdown(table: pd.DataFrame, metric: str) -> str:
    """A paste-able Markdown table; each metric shown as `mean ± std` when several seeds ran."""
    if table.empty:
        return "_no complete runs_\n"
    shown = pd.DataFrame({"rank": table.get("rank"), "entry": table["entry"],
                          "arch": table["arch"], "seeds": table["seeds"]})
    for col in COLUMNS:
        if col in table:
            shown[col] = [_cell(m, s) for m, s in zip(table[col], table.get(f"{col}_std"))]
    if table["protocol"].nunique() > 1:
        shown["protocol"] = table["protocol"]
    shown["runs"] = table["run_dirs"]
    header = f"Ranked by `{metric}` (mean ± std over seeds).\n\n"
    return header + markdown_table(shown) + "\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub-flavoured pipe table of a frame's values (no extra dependency)."""
    cells = [[str(c) for c in frame.columns]]
    cells += [["" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in row]
              for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


def _cell(mean, std) -> str:
    if pd.isna(mean):
        return ""
    text = _fmt(mean)
    return text if std is None or pd.isna(std) else f"{text} ± {_fmt(std)}"


def _fmt(value: float) -> str:
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:.4g}"


def write_leaderboard(folder: str | Path, metric: str = "val_loss", direction: str = "minimize") -> pd.DataFrame:
    """Write `leaderboard.csv` and `leaderboard.md` into a suite's results folder (atomically)."""
    folder = Path(folder)
    table = leaderboard(load_results(folder), metric, direction)
    write_with(folder / "leaderboard.csv", lambda p: table.to_csv(p, index=False))
    write_with(folder / "leaderboard.md", lambda p: p.write_text(to_markdown(table, metric)))
    return table
