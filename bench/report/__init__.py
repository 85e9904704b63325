"""Leaderboard and report: pure functions of one or more results folders (pandas).

One row per (comparison group, suite folder, entry), aggregated over seeds: mean, std and a
Student-t CI of every metric of the metric table (`bench.metrics.registry`), the number of seeds,
the paired difference to the suite's baseline entry with its CI, test and verdict (one method:
`bench.report.stats`), a Pareto flag (quality vs training cost) and the run folders. Statistics:
`bench.report.stats`; Markdown: `.tables`; plots: `.plots`; the HTML page: `.html`.

k-fold entries (`data.folds`): a replicate is one (fold, seed) run; mean, std and CI are over all
of them (data and training noise mixed), `folds` counts folds, the paired test pairs by (fold, seed).

A comparison group is (dataset, resolution, evaluation protocol key): rows whose protocols differ
are never ranked or tested against each other (issue "Evaluation with a pinned protocol").
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import warn
from bench.images import size_label
from bench.metrics import registry
from bench.report import stats
from bench.report.html import write_html
from bench.report.markdown import leaderboard_markdown
from bench.report.plots import write_plots
from bench.report.tables import protocol_label
from bench.run.results import iter_results, load_results, write_with

COLUMNS = [n for n, m in registry.METRICS.items() if m.source != "history"]  # every scalar aggregated
_WARNED: set[str] = set()                        # unreadable suite.json files already reported


@dataclass
class Results:
    """Everything a report shows, read once: one row per run plus long-form curves."""
    runs: pd.DataFrame                                       # load_results + source/label/group
    history: pd.DataFrame = field(default_factory=pd.DataFrame)    # run_dir, kimg, step, metrics
    recon: pd.DataFrame = field(default_factory=pd.DataFrame)      # run_dir, kind, t, ssim/psnr
    fid_n: pd.DataFrame = field(default_factory=pd.DataFrame)      # run_dir, n, fid
    fid_steps: pd.DataFrame = field(default_factory=pd.DataFrame)  # run_dir, sampler, steps, fid
    records: dict = field(default_factory=dict)              # run_dir -> protocol, environment...


def collect(folders) -> Results:
    """Read every result.json below `folders` into a `Results`."""
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    long = {"history": [], "recon": [], "fid_n": [], "fid_steps": []}
    records = {}
    for run_dir, result in iter_results(folders):
        key, curves = str(run_dir), result.get("curves") or {}
        records[key] = {k: result.get(k) for k in ("protocol", "environment", "budget", "timing",
                                                   "error", "files", "data", "status")}
        long["history"] += [{"run_dir": key, **p} for p in result.get("history") or []]
        for kind, per_t in (result.get("metrics") or {}).items():
            if kind.startswith("recon") and isinstance(per_t, dict):
                long["recon"] += [{"run_dir": key, "kind": kind, "t": int(t), **v}
                                  for t, v in per_t.items() if isinstance(v, dict)]
        long["fid_n"] += [{"run_dir": key, **p} for p in curves.get("fid_vs_n") or []]
        long["fid_steps"] += [{"run_dir": key, **p} for p in curves.get("fid_vs_steps") or []]
    runs = annotate(load_results(folders), pd.DataFrame(long["recon"]))
    if not runs.empty:
        runs["group_label"] = [protocol_label(g.split(" | ")[0], records[d].get("protocol"))
                               for g, d in zip(runs["group"], runs["run_dir"])]
        runs["group_label"] = runs.groupby("group")["group_label"].transform(_one_label)
    ids = runs[["run_dir", "label", "entry", "seed", "group", "status"]] if not runs.empty else None
    frames = {k: _join(pd.DataFrame(v), ids) for k, v in long.items()}
    return Results(runs=runs, records=records, **frames)


def _one_label(labels: pd.Series) -> str:
    """A group's heading; its sampler part reads "samplers differ by row" where they do (EDM, variants)."""
    parts = labels.iloc[0].split(" · ")
    mixed = labels.nunique() > 1 and len(parts) == 4
    return " · ".join([*parts[:2], "samplers differ by row", *parts[3:]]) if mixed else labels.iloc[0]


def _join(frame: pd.DataFrame, ids) -> pd.DataFrame:
    return frame if frame.empty or ids is None else frame.merge(ids, on="run_dir", how="left")


def annotate(runs: pd.DataFrame, recon: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add `source` (suite folder), `label` (entry, or folder/entry across folders), `group`
    (dataset, resolution and FID protocol) and SSIM/PSNR averaged over the t grid."""
    if runs.empty or "group" in runs:
        return runs
    runs = runs.copy()
    runs["source"] = [str(Path(d).parent) for d in runs["run_dir"]]
    names = _short_names(sorted(set(runs["source"])))
    runs["source_name"] = runs["source"].map(names)
    several = runs["source"].nunique() > 1
    runs["label"] = [f"{s}/{e}" if several else str(e) for s, e in zip(runs["source_name"], runs["entry"])]
    data = [f"{d} {size_label(json.loads(s)) if str(s).startswith('[') else s}px"  # [H, W]: HxW
            for d, s in zip(_column(runs, "cfg.data.dataset"), _column(runs, "cfg.data.image_size"))]
    runs["group"] = [f"{d} | {p or 'no FID protocol'}" for d, p in zip(data, runs["protocol"].fillna(""))]
    if recon is not None and not recon.empty:
        one_step = recon[recon["kind"] == "recon"].groupby("run_dir")
        for name in ("ssim", "psnr"):
            if name not in runs and f"{name}_mean" in recon:
                runs[name] = runs["run_dir"].map(one_step[f"{name}_mean"].mean())
    return runs


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series("?", index=frame.index)


def _short_names(sources: list[str]) -> dict[str, str]:
    """The shortest path suffix that tells the folders apart (`smoke`, `a/smoke` vs `b/smoke`)."""
    for depth in range(1, 1 + max((len(Path(s).parts) for s in sources), default=1)):
        names = {s: "/".join(Path(s).parts[-depth:]) for s in sources}
        if len(set(names.values())) == len(sources):
            return names
    return {s: s for s in sources}


def suite_info(source: str | Path) -> dict:
    """The suite record the runner writes (entries order, baseline, metric, direction), or {}."""
    path = Path(source) / "suite.json"
    try:
        info = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        if str(path) not in _WARNED:
            _WARNED.add(str(path))
            warn(f"{path}: unreadable ({type(err).__name__}); entry order and baseline from the runs")
        return {}
    return info if isinstance(info, dict) else {}


def leaderboard(runs: pd.DataFrame, metric: str = "val_loss", direction: str | None = None, *,
                alpha: float = 0.05, test: str = "ttest", baseline: str | None = None,
                cost: str | None = None) -> pd.DataFrame:
    """Aggregate complete runs per (group, source, entry) and rank each group by `metric`."""
    runs = annotate(runs)
    flags = seed_flags(runs, metric)
    runs = _rankable_runs(runs)
    if runs.empty:
        return pd.DataFrame()
    direction = direction or registry.direction(metric)
    present = [c for c in dict.fromkeys([metric, *COLUMNS])
               if c in runs and pd.to_numeric(runs[c], errors="coerce").notna().any()]
    rows = [_aggregate(part, present, 1 - alpha) for _, part in
            runs.groupby(["group", "source", "entry"], sort=False, dropna=False)]
    table = pd.DataFrame(rows)
    table["flag"] = [flags.get((s, e), "") for s, e in zip(table["source"], table["entry"])]
    table["order"] = [_entry_order(s, e) for s, e in zip(table["source"], table["entry"])]
    parts = [_rank_group(part, runs, metric, direction, alpha, test, baseline, cost)
             for _, part in table.groupby("group", sort=True)]
    table = pd.concat(parts, ignore_index=True).drop(columns="order")
    table.attrs.update(metric=metric, direction=direction, alpha=alpha, test=test)
    return table


def _rankable_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Complete runs, plus the runs of entries that have none (shown flagged, never ranked)."""
    if "status" not in runs:
        return runs
    done = runs["status"] == "complete"
    has_done = done.groupby([runs["source"], runs["entry"]]).transform("any")
    return runs[done | ~has_done]


def seed_flags(runs: pd.DataFrame, metric: str) -> dict:
    """(source, entry) -> 'k of n seeds failed or not finite' for entries not fully finite."""
    if runs.empty:
        return {}
    values = pd.to_numeric(runs[metric], errors="coerce") if metric in runs else np.nan
    ok = pd.Series(np.isfinite(values), index=runs.index) & (runs.get("status", "complete") == "complete")
    flags = {}
    for (source, entry), good in ok.groupby([runs["source"], runs["entry"]]):
        if not good.all():
            flags[(source, entry)] = (f"{int((~good).sum())} of {len(good)} seeds failed or not "
                                      f"finite ({metric}): not ranked")
    return flags


def _aggregate(part: pd.DataFrame, present: list[str], confidence: float) -> dict:
    first = part.iloc[0]
    row = {"group": first["group"], "group_label": first.get("group_label", first["group"]), "source": first["source"], "source_name": first["source_name"],
           "label": first["label"], "entry": first["entry"], "arch": first.get("arch"),
           "seeds": part["seed"].nunique(),
           "folds": part["fold"].nunique() if "fold" in part else 0}
    for col in present:  # every replicate: one run (a seed, or a (fold, seed) pair)
        row[col], row[f"{col}_std"], row[f"{col}_ci_low"], row[f"{col}_ci_high"] = stats.summary(
            pd.to_numeric(part[col], errors="coerce").to_numpy(dtype=float), confidence)
    row["run_dirs"] = " ".join(sorted(Path(d).name for d in part["run_dir"]))
    return row


def _entry_order(source: str, entry: str) -> int:
    entries = suite_info(source).get("entries") or []
    return entries.index(entry) if entry in entries else len(entries)


def _rank_group(part, runs, metric, direction, alpha, test, baseline, cost) -> pd.DataFrame:
    """Rank, baseline comparison and Pareto flag inside one comparison group."""
    part = part.copy()
    if metric in part:  # an entry with a failed or non-finite seed is shown, flagged, not ranked
        ranked = part["flag"].fillna("") == "" if "flag" in part else part[metric].notna()
        part["rank"] = part[metric].where(ranked).rank(ascending=direction == "minimize", method="min")
    part = part.sort_values(["rank", "order"] if "rank" in part else ["order"], na_position="last")
    comparisons = [_compare(row, part, runs, metric, direction, alpha, test, baseline)
                   for _, row in part.iterrows()]
    part = pd.concat([part.reset_index(drop=True), pd.DataFrame(comparisons)], axis=1)
    quality = "fid" if "fid" in part and part["fid"].notna().any() else metric
    cost = cost or next((c for c in registry.PARETO_COSTS if c in part and part[c].notna().any()), None)
    if quality in part and cost in part:
        part["pareto"] = stats.pareto_front(part[quality], part[cost],
                                            direction if quality == metric else "minimize",
                                            registry.direction(cost))
        part["pareto_axes"] = f"{quality} vs {cost}"
    return part


def _compare(row, part, runs, metric, direction, alpha, test, baseline) -> dict:
    base = _baseline_row(row, part, baseline)
    if base is None or metric not in runs:
        return {"baseline": None, "verdict": "n/a (no baseline)"}
    if base["label"] == row["label"]:
        return {"baseline": base["label"], "verdict": "baseline"}
    values = {lab: _by_seed(runs, row["group"], src, ent, metric) for lab, src, ent in
              ((0, row["source"], row["entry"]), (1, base["source"], base["entry"]))}
    result = stats.compare_paired(values[0], values[1], direction, alpha, test)
    return {"baseline": base["label"], **result}


def _baseline_row(row, part: pd.DataFrame, baseline: str | None):
    """`--baseline ENTRY` or `FOLDER:ENTRY`, else the baseline named by the row's own suite."""
    if baseline and ":" in baseline:
        folder, entry = baseline.rsplit(":", 1)
        match = part[(part["source_name"] == folder) & (part["entry"] == entry)]
    else:
        info = suite_info(row["source"])
        name = baseline or info.get("baseline") or (info.get("entries") or [None])[0]
        same = part[part["source"] == row["source"]]
        match = same[same["entry"] == name] if name else same.sort_values("order").head(1)
    return None if match.empty else match.iloc[0]


def _by_seed(runs, group, source, entry, metric) -> dict:
    sel = runs[(runs["group"] == group) & (runs["source"] == source) & (runs["entry"] == entry)]
    values = pd.to_numeric(sel[metric], errors="coerce")
    folds = sel["fold"] if "fold" in sel else pd.Series(np.nan, index=sel.index)
    keys = [s if pd.isna(f) else (int(f), s) for f, s in zip(folds, sel["seed"])]  # (fold, seed) pairs
    return dict(zip(keys, values.to_numpy(dtype=float)))


def ranking_defaults(folders, metric: str | None, direction: str | None) -> tuple[str, str]:
    """The ranking metric and direction: given, else the first suite.json's, else val_loss."""
    info = next((i for i in map(suite_info, _suite_folders(folders)) if i), {})
    metric = metric or info.get("metric") or "val_loss"
    if direction is None:
        direction = info.get("direction") if metric == info.get("metric") else None
    return metric, direction or registry.direction(metric)


def _suite_folders(folders) -> list[Path]:
    folders = [folders] if isinstance(folders, (str, Path)) else folders
    return [p.parent for f in folders for p in sorted(Path(f).glob("**/suite.json"))]


def write_leaderboard(folder: str | Path, metric: str = "val_loss", direction: str = "minimize",
                      **options) -> pd.DataFrame:
    """Write `leaderboard.csv` and `leaderboard.md` into a results folder (atomically)."""
    results = collect([folder])
    table = leaderboard(results.runs, metric, direction, **options)
    write_tables(results, table, Path(folder))
    return table


def write_tables(results: Results, table: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_with(out / "leaderboard.csv", lambda p: table.to_csv(p, index=False))
    write_with(out / "leaderboard.md", lambda p: p.write_text(leaderboard_markdown(results, table)))


def write_report(folders, out: str | Path | None = None, metric: str | None = None,
                 direction: str | None = None, results: Results | None = None, **options) -> dict:
    """leaderboard.csv/.md, plots/*.png and report.html of `folders` into `out` (default: the one
    folder); returns {"table", "files", "seconds"}."""

    started = time.perf_counter()
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    out = Path(out or folders[0])
    metric, direction = ranking_defaults(folders, metric, direction)
    results = results or collect(folders)
    table = leaderboard(results.runs, metric, direction, **options)
    write_tables(results, table, out)
    plots = write_plots(results, table, out / "plots")
    html = write_html(results, table, plots, out / "report.html", folders)
    files = [out / "leaderboard.csv", out / "leaderboard.md", *plots.values(), html]
    return {"table": table, "files": files, "seconds": time.perf_counter() - started}
