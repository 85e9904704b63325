"""The report's tables as display frames (strings), and their Markdown: what a README, a paper
appendix or a CI log pastes. `bench.report.html` renders the very same frames.

Cells read `mean ± std` over seeds; the ranking metric also gets its 95 % bootstrap CI, and every
non-baseline row its paired difference to the baseline (`Δ [CI]`, p-value, verdict; `bench.report.stats`).
The SSIM/PSNR-vs-t tables follow study 003's Table 1 (rows t, columns models).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

LABELS = {"fid": "FID", "kid_mean": "KID", "precision": "precision", "recall": "recall",
          "ssim": "SSIM (avg over t)", "psnr": "PSNR dB (avg over t)", "val_loss": "val loss",
          "val_loss_q1": "val loss q1 (low t)", "val_loss_q2": "val loss q2",
          "val_loss_q3": "val loss q3", "val_loss_q4": "val loss q4 (high t)",
          "final_train_loss": "train loss", "train_loss": "train loss", "params": "params (M)", "gflops": "GFLOPs",
          "train_img_per_s": "train img/s", "sample_img_per_s": "sample img/s",
          "peak_mem_train_mb": "peak mem train (MB)", "peak_mem_sample_mb": "peak mem sample (MB)"}
SCALE = {"params": 1e-6}
TEST_NAMES = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}
MAIN_QUALITY = ["fid", "kid_mean", "precision", "recall", "ssim", "psnr", "val_loss"]
LOSSES = ["val_loss", "val_loss_q1", "val_loss_q2", "val_loss_q3", "val_loss_q4", "final_train_loss"]
COST = ["params", "gflops", "train_img_per_s", "sample_img_per_s", "peak_mem_train_mb",
        "peak_mem_sample_mb"]


@dataclass
class Section:
    key: str             # stable id (html anchors, tests)
    title: str           # heading
    note: str            # one paragraph under the heading
    frame: pd.DataFrame  # cells already formatted as strings


def fmt(value, scale: float = 1.0) -> str:
    if value is None or pd.isna(value):
        return ""
    value = float(value) * scale
    return f"{value:.3g}" if abs(value) >= 1e5 else f"{value:.4g}"


def cell(mean, std, scale: float = 1.0) -> str:
    text = fmt(mean, scale)
    if not text or std is None or pd.isna(std) or std == 0:  # one seed, or identical seeds
        return text
    return f"{text} ± {fmt(std, scale)}"


def leaderboard_frame(part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One comparison group's leaderboard: rank, entry, test vs baseline, quality, then cost."""
    show = pd.DataFrame({"rank": [fmt(r) for r in part.get("rank", pd.Series(index=part.index))],
                         "entry": part["label"], "seeds": part["seeds"]})
    if metric in part:
        show[LABELS.get(metric, metric)] = [cell(m, s, SCALE.get(metric, 1)) for m, s in
                                            zip(part[metric], part[f"{metric}_std"])]
        show["95% CI"] = [f"[{fmt(lo)}, {fmt(hi)}]" if fmt(lo) else "" for lo, hi in
                          zip(part[f"{metric}_ci_low"], part[f"{metric}_ci_high"])]
    if "verdict" in part:
        show["Δ vs baseline [95% CI]"] = [_delta(r) for _, r in part.iterrows()]
        show["p"] = [fmt(p) for p in part.get("p_value", pd.Series(index=part.index))]
        show["verdict"] = part["verdict"].fillna("")
    for col in [c for c in MAIN_QUALITY + COST if c != metric and c in part]:
        if part[col].notna().any():
            show[LABELS[col]] = [cell(m, s, SCALE.get(col, 1)) for m, s in
                                 zip(part[col], part[f"{col}_std"])]
    if "pareto" in part:
        show["Pareto"] = ["yes" if p else "" for p in part["pareto"]]
    show["runs"] = part["run_dirs"]
    return show.reset_index(drop=True)


def _delta(row) -> str:
    if row.get("verdict") == "baseline" or pd.isna(row.get("delta")):
        return ""
    ci = f" [{fmt(row['delta_ci_low'])}, {fmt(row['delta_ci_high'])}]" if fmt(row.get("delta_ci_low")) else ""
    return f"{fmt(row['delta'])}{ci}"


def losses_frame(table: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in LOSSES if c in table and table[c].notna().any()]
    show = pd.DataFrame({"entry": table["label"], "seeds": table["seeds"]})
    for col in cols:
        show[LABELS[col]] = [cell(m, s) for m, s in zip(table[col], table[f"{col}_std"])]
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
    cells = pd.Series([cell(m, s) for m, s in agg.to_numpy()], index=agg.index)
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
        show[LABELS.get(col, col)] = [cell(m, s) for m, s in zip(mean[col], std[col])]
    return show


def fid_n_frame(fid_n: pd.DataFrame, order=None) -> pd.DataFrame:
    fid_n = _complete(fid_n)
    if fid_n.empty:
        return pd.DataFrame()
    agg = fid_n.groupby(["n", "label"])["fid"].agg(["mean", "std"])
    cells = pd.Series([cell(m, s) for m, s in agg.to_numpy()], index=agg.index)
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


def leaderboard_sections(table: pd.DataFrame) -> list[Section]:
    """One leaderboard per comparison group (rows of different protocols are never ranked together)."""
    if table.empty:
        return [Section("leaderboard", "Leaderboard", "No complete runs.", pd.DataFrame())]
    a = table.attrs
    metric = a.get("metric", "val_loss")
    note = (f"Ranked by `{metric}` ({a.get('direction', 'minimize')}); mean ± std over seeds; "
            f"95 % CI: percentile bootstrap over seeds (seeded; narrower than the truth below 5 "
            f"seeds). Δ: entry − baseline paired by seed, {TEST_NAMES.get(a.get('test'), 'paired t-test')}, "
            f"verdict at α = {a.get('alpha', 0.05)}.")
    sections = []
    for i, (group, part) in enumerate(table.groupby("group", sort=False)):
        base = part["baseline"].dropna().unique() if "baseline" in part else []
        axes = part["pareto_axes"].iloc[0] if "pareto_axes" in part else None
        extra = f" Baseline: {', '.join(map(str, base))}." if len(base) else ""
        extra += f" Pareto: {axes}." if axes else ""
        sections.append(Section(f"leaderboard-{i}", f"Leaderboard — {group}", note + extra,
                                leaderboard_frame(part, metric)))
    return sections


def sections(results, table: pd.DataFrame) -> list[Section]:
    """Every table of the report, in reading order; empty frames mean nothing was measured."""
    out = [Section("groups", "Why these rows are not ranked together", "Rows are ranked only "
                   "within a comparison group (same dataset, resolution and evaluation protocol); "
                   "the groups differ in these fields.", groups_frame(results.runs, results.records))]
    out += leaderboard_sections(table)
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


def markdown_table(frame: pd.DataFrame) -> str:
    """GitHub-flavoured pipe table of a frame's values (no extra dependency)."""
    cells = [[str(c) for c in frame.columns]]
    cells += [["" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in row]
              for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


def render(parts: list[Section], level: str = "##") -> str:
    blocks = [f"{level} {s.title}\n\n{s.note}\n\n" + (markdown_table(s.frame) if not s.frame.empty
                                                      else "_no complete runs_") for s in parts]
    return "\n\n".join(blocks) + "\n"


def to_markdown(table: pd.DataFrame, metric: str | None = None) -> str:
    """The leaderboard tables alone (one per comparison group)."""
    if metric and not table.empty:
        table.attrs.setdefault("metric", metric)
    return render(leaderboard_sections(table))


def write_markdown(results, table: pd.DataFrame) -> str:
    """leaderboard.md: every table of the report."""
    sources = sorted(set(results.runs["source_name"])) if "source_name" in results.runs else []
    head = f"# Leaderboard: {', '.join(sources) or 'no results'}\n\n"
    return head + render(sections(results, table))
