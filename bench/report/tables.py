"""The report's tables as display frames (strings): what a README, a paper appendix or a CI log
pastes (`bench.report.markdown` writes them as Markdown, `bench.report.html` renders them).

Cells read `mean ± std` over seeds, rounded as a paper rounds them (`bench.report.numbers`: the
spread to 2 significant digits, the mean to the same place, one precision per column); labels,
units, scales and precision come from the metric table (`bench.metrics.registry`). The ranking
metric gets its CI, and every non-baseline row its paired difference to the baseline (`Δ [CI]`,
p-value, verdict; one method: `bench.report.stats`). Each comparison group gets a quality table
(the leaderboard) and a cost table, so both fit a 1280 px screen. The SSIM/PSNR-vs-t tables follow
study 003's Table 1 (rows t, columns models).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.metrics import registry
from bench.report import numbers
from bench.report.stats import METHODS, MIN_PAIRS

TEST_NAMES = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}


@dataclass
class Section:
    key: str             # stable id (html anchors, tests)
    title: str           # heading
    note: str            # one paragraph under the heading
    frame: pd.DataFrame  # cells already formatted as strings
    details: str = ""    # the full text behind a short title (html: one click away)


def _metric(name: str) -> registry.Metric:
    return registry.METRICS.get(name) or registry.Metric(name, name)


def column(means, stds, name: str) -> list[str]:
    """One column of `mean ± std` cells, all at the decimals the finest row supports."""
    m = _metric(name)
    means = [None if pd.isna(v) else float(v) * m.scale for v in means]
    stds = [None if pd.isna(v) else float(v) * m.scale for v in stds]
    places = numbers.column_decimals(means, stds, m.digits)
    return [numbers.mean_std(v, s, places) for v, s in zip(means, stds)]


def ci_column(means, stds, lows, highs, name: str) -> list[str]:
    """CI bounds at the decimals of the mean's column."""
    m = _metric(name)
    scaled = [[None if pd.isna(v) else float(v) * m.scale for v in col]
              for col in (means, stds, lows, highs)]
    places = numbers.column_decimals(scaled[0], scaled[1], m.digits)
    return [numbers.interval(lo, hi, places) for lo, hi in zip(scaled[2], scaled[3])]


def confidence(table_or_part) -> str:
    return f"{100 * (1 - table_or_part.attrs.get('alpha', 0.05)):g}%"


def leaderboard_frame(part: pd.DataFrame, metric: str, level: str = "95%") -> pd.DataFrame:
    """One comparison group's leaderboard: rank, entry, seeds, the ranking metric with its CI, the
    test vs baseline and the Pareto flag (other metrics: `quality_frame`, `cost_frame`)."""
    show = pd.DataFrame({"rank": [numbers.integer(r) for r in part.get("rank", pd.Series(index=part.index))],
                         "entry": part["label"], "seeds": part["seeds"]})
    if "folds" in part and (part["folds"].fillna(0) > 0).any():  # k-fold entries (data.folds)
        show["folds"] = [numbers.integer(f) if f else "" for f in part["folds"].fillna(0)]
    if metric in part:
        show[registry.label(metric)] = column(part[metric], part[f"{metric}_std"], metric)
        show[f"{level} CI"] = ci_column(part[metric], part[f"{metric}_std"],
                                        part[f"{metric}_ci_low"], part[f"{metric}_ci_high"], metric)
    if "verdict" in part:
        show[f"Δ vs baseline [{level} CI]"] = _deltas(part, metric)
        show["p"] = [numbers.p_value(p) for p in part.get("p_value", pd.Series(index=part.index))]
        show["verdict"] = part["verdict"].fillna("")
    if "pareto" in part:
        show["Pareto"] = ["yes" if p else "" for p in part["pareto"]]
    if "flag" in part and part["flag"].fillna("").astype(bool).any():
        show["flag"] = part["flag"].fillna("")
    show["runs"] = part["run_dirs"]
    return show.reset_index(drop=True)


def _deltas(part: pd.DataFrame, metric: str) -> list[str]:
    """`Δ [low, high]`, every row at the decimals the std of the paired differences supports."""
    m = _metric(metric)
    rows = [r for _, r in part.iterrows()]
    keep = [r.get("verdict") != "baseline" and not pd.isna(r.get("delta")) for r in rows]
    scaled = [[float(r.get(k)) * m.scale if not pd.isna(r.get(k)) else None for r in rows]
              for k in ("delta", "delta_std", "delta_ci_low", "delta_ci_high")]
    places = numbers.column_decimals([v for v, k in zip(scaled[0], keep) if k],
                                     [v for v, k in zip(scaled[1], keep) if k], m.digits)
    out = []
    for ok, d, lo, hi in zip(keep, scaled[0], scaled[2], scaled[3]):
        ci = numbers.interval(lo, hi, places)
        out.append("" if not ok else numbers.fixed(d, places) + (f" {ci}" if ci else ""))
    return out


def quality_frame(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One comparison group's other quality metrics (mean ± std over seeds), leaderboard order."""
    return _metrics_frame(part, [c for c in registry.BOARD if c != metric])


def cost_frame(part: pd.DataFrame) -> pd.DataFrame:
    """One comparison group's cost columns (mean ± std over seeds), rows in leaderboard order."""
    return _metrics_frame(part, registry.names(group="cost"))


def _metrics_frame(part: pd.DataFrame, names) -> pd.DataFrame:
    show = pd.DataFrame({"entry": part["label"], "seeds": part["seeds"]})
    for col in names:
        if col in part and part[col].notna().any():
            show[registry.label(col)] = column(part[col], part[f"{col}_std"], col)
    return show.reset_index(drop=True) if len(show.columns) > 2 else pd.DataFrame()


def losses_frame(table: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in registry.names(group="loss", source="run") if c in table
            and table[c].notna().any()]
    show = pd.DataFrame({"entry": table["label"], "seeds": table["seeds"]})
    for col in cols:
        show[registry.label(col)] = column(table[col], table[f"{col}_std"], col)
    return show.reset_index(drop=True)


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "complete"] if "status" in frame else frame


def _ordered(wide: pd.DataFrame, order) -> pd.DataFrame:
    wide = wide.reindex(columns=[c for c in order if c in wide.columns]) if order else wide
    wide.columns.name = None
    return wide


def recon_frame(recon: pd.DataFrame, value: str, order=None, kind: str = "recon") -> pd.DataFrame:
    """Rows t, columns entries: mean over seeds of the per-run mean ± per-run std over images."""
    part = _complete(recon[recon["kind"] == kind])
    if part.empty or f"{value}_mean" not in part:
        return pd.DataFrame()
    agg = part.groupby(["t", "label"], sort=True)[[f"{value}_mean", f"{value}_std"]].mean()
    cells = pd.Series(column(agg[f"{value}_mean"], agg[f"{value}_std"], value), index=agg.index)
    wide = _ordered(cells.unstack("label"), order)
    return wide.reset_index().rename(columns={"t": "t (1-based)"}).fillna("")


def steps_frame(fid_steps: pd.DataFrame, order=None) -> pd.DataFrame:
    """FID and sampling img/s per (entry, sampler, steps), mean ± std over seeds."""
    fid_steps = _complete(fid_steps)
    if fid_steps.empty:
        return pd.DataFrame()
    if order:
        fid_steps = fid_steps.assign(rank=fid_steps["label"].map({k: i for i, k in enumerate(order)}))
        fid_steps = fid_steps.sort_values(["rank", "sampler", "steps"], kind="stable")
    values = [c for c in ("fid", "sample_img_per_s") if c in fid_steps]
    groups = fid_steps.groupby(["label", "sampler", "steps"], sort=False)[values]
    mean, std = groups.mean(), groups.std(ddof=1)
    show = mean.index.to_frame(index=False).rename(columns={"label": "entry"})
    for col in values:
        show[registry.label(col)] = column(mean[col], std[col], col)
    return show


def fid_n_frame(fid_n: pd.DataFrame, order=None) -> pd.DataFrame:
    fid_n = _complete(fid_n)
    if fid_n.empty:
        return pd.DataFrame()
    agg = fid_n.groupby(["n", "label"])["fid"].agg(["mean", "std"])
    cells = pd.Series(column(agg["mean"], agg["std"], "fid"), index=agg.index)
    wide = _ordered(cells.unstack("label"), order)
    return wide.reset_index().rename(columns={"n": "N generated"}).fillna("")


def incomplete_frame(runs: pd.DataFrame, records: dict) -> pd.DataFrame:
    bad = runs[runs["status"] != "complete"] if "status" in runs else runs.iloc[:0]
    return pd.DataFrame({"run": [d.rsplit("/", 1)[-1] for d in bad["run_dir"]],
                         "entry": bad["label"], "seed": bad["seed"], "status": bad["status"],
                         "error": [(records.get(d) or {}).get("error") or "" for d in bad["run_dir"]]})


def groups_frame(runs: pd.DataFrame, records: dict) -> pd.DataFrame:
    """Why comparison groups are apart: the dataset/protocol fields on which they differ."""
    if runs.empty or runs["group"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for group, part in runs.groupby("group", sort=True):
        first = part.iloc[0]
        protocol = (records.get(first["run_dir"]) or {}).get("protocol") or {}
        rows.append({"group": group, "dataset": first.get("cfg.data.dataset"),
                     "image size": first.get("cfg.data.image_size"), **protocol})
    frame = pd.DataFrame(rows).astype(str)
    differ = [c for c in frame.columns if c != "group" and frame[c].nunique() > 1]
    return frame[["group", *differ]]


def protocol_label(data: str, protocol: dict | None) -> str:
    """A comparison group's heading: `cifar10 32px · FID-4096 vs train · DDPM-1000 · EMA` (a DDIM
    with η > 0 says its η: `DDIM-50 η=1`)."""
    if not protocol:
        return f"{data} · no FID protocol"
    p = protocol
    eta = f" η={p['eta']:g}" if p.get("sampler") == "ddim" and p.get("eta") else ""  # ancestral DDIM
    return (f"{data} · FID-{p.get('n_generated')} vs {p.get('reference_split')} · "
            f"{str(p.get('sampler')).upper()}-{p.get('steps')}{eta} · {'EMA' if p.get('ema') else 'raw'}")


def leaderboard_note(table: pd.DataFrame) -> str:
    """What the leaderboard's numbers are: the statistics, their method and the seed counts."""
    a, level = table.attrs, confidence(table)
    test = a.get("test", "ttest")
    return (f"Ranked by `{a.get('metric', 'val_loss')}` ({a.get('direction', 'minimize')}); "
            f"mean ± std over seeds (std to 2 significant digits, the mean to the same place). "
            f"{level} CI of the mean: Student t-interval over seeds. Δ: entry − baseline paired "
            f"by seed; its {level} CI and the verdict (α = {a.get('alpha', 0.05):g}) come from one "
            f"method, the {METHODS.get(test, test)}, so they always agree; below {MIN_PAIRS} "
            f"paired seeds: \"too few seeds\". No bootstrap: with this few seeds it is narrower "
            f"than the truth.")


def untrained_note(part: pd.DataFrame) -> str:
    """`eval.untrained_reference`: each entry's FID/KID at initialisation beside its trained value
    (the same networks, samples, N and reference), so a reader sees what training bought."""
    pairs = [(u, t, registry.METRICS[t].label) for u, t in
             (("untrained_fid", "fid"), ("untrained_kid_mean", "kid_mean"))
             if u in part and t in part and part[u].notna().any()]
    if not pairs:
        return ""
    cells = {name: column(part[name], part[f"{name}_std"], name)
             for u, t, _ in pairs for name in (u, t)}
    rows = [f"{label}: " + ", ".join(f"{lab} {cells[u][i]} → {cells[t][i]}" for u, t, lab in pairs)
            for i, label in enumerate(part["label"])]
    return (" Untrained reference (each network at initialisation, same protocol; untrained → "
            "trained, mean ± std over seeds): " + "; ".join(rows) + ".")


def leaderboard_sections(table: pd.DataFrame, cost: bool = False) -> list[Section]:
    """One leaderboard per comparison group (rows of different protocols are never ranked
    together), its other quality metrics, and with `cost` its cost table."""
    if table.empty:
        return [Section("leaderboard", "Leaderboard", "No complete runs.", pd.DataFrame())]
    metric, note, level = table.attrs.get("metric", "val_loss"), leaderboard_note(table), confidence(table)
    out = []
    for i, (group, part) in enumerate(table.groupby("group", sort=False)):
        base = part["baseline"].dropna().unique() if "baseline" in part else []
        axes = part["pareto_axes"].iloc[0] if "pareto_axes" in part else None
        extra = f" Baseline: {', '.join(map(str, base))}." if len(base) else ""
        extra += f" Pareto: {axes}." if axes else ""
        extra += untrained_note(part)
        short = part["group_label"].iloc[0] if "group_label" in part else group
        out.append(Section(f"leaderboard-{i}", f"Leaderboard — {short}", note + extra,
                           leaderboard_frame(part, metric, level), details=group))
        out.append(Section(f"quality-{i}", f"Other quality metrics — {short}", "Mean ± std over "
                           "seeds, rows in leaderboard order.", quality_frame(part, metric),
                           details=group))
        if cost:
            out.append(Section(f"cost-{i}", f"Cost — {short}", "Mean ± std over seeds; params in "
                               "millions; throughput on the machine of each run (provenance).",
                               cost_frame(part), details=group))
    return out


def sections(results, table: pd.DataFrame) -> list[Section]:
    """Every table of the report, in reading order; empty frames mean nothing was measured."""
    out = [Section("groups", "Why these rows are not ranked together", "Rows are ranked only "
                   "within a comparison group (same dataset, resolution and evaluation protocol); "
                   "the groups differ in these fields.", groups_frame(results.runs, results.records))]
    out += leaderboard_sections(table, cost=True)
    order = list(dict.fromkeys(table["label"])) if not table.empty else None
    if not table.empty:
        out.append(Section("losses", "Training and validation loss", "Final values, mean ± std over "
                           "seeds; q1..q4 split the timesteps into quarters (q1 = smallest t).",
                           losses_frame(table)))
    recon_note = "One-step x̂0 reconstructions of held-out images; mean ± std over images."
    for value in ("ssim", "psnr"):
        if not results.recon.empty:
            out.append(Section(f"recon-{value}", f"{value.upper()} vs t", recon_note,
                               recon_frame(results.recon, value, order)))
    out.append(Section("fid-steps", "FID and sampling speed vs steps", "Mean ± std over seeds.",
                       steps_frame(results.fid_steps, order)))
    out.append(Section("fid-n", "FID vs number of generated samples", "Mean ± std over seeds.",
                       fid_n_frame(results.fid_n, order)))
    if not results.runs.empty:
        out.append(Section("incomplete", "Runs not complete", "Left out of every table above.",
                           incomplete_frame(results.runs, results.records)))
    return [s for s in out if s.key.startswith("leaderboard") or not s.frame.empty]
