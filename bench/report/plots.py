"""The report's plots: seaborn on matplotlib's Agg backend, one PNG per question.

Training curves are drawn from every run's history, one line per entry with a band of ± 1 std over
seeds (`errorbar="sd"`, no bootstrap, so it is fast); SSIM/PSNR vs t follows study 003's Table 1,
FID vs N study 001's Figure 9, and the side-by-side fixed-noise grids study 001's sample figures.
Every function returns the written path, or None when the results hold no such data.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from bench.metrics import registry
from bench.report.snapshots import class_histograms, training_grids, x0_panels
from bench.run.results import write_with

SKIP = {"step", "kimg", "lr", "train_loss", "val_loss", "run_dir", "label", "entry", "seed", "fold", "group",
        "status"}  # losses have their own plot


def write_plots(results, table: pd.DataFrame, out: str | Path) -> dict[str, Path]:
    """Every plot the results allow, as `out/<name>.png`; returns {name: path}."""
    plt.switch_backend("agg")  # files only: never a window, whatever backend the user has
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = list(dict.fromkeys(table["label"])) if not table.empty else None
    makers = {"curves": lambda: curves(results.history, order),
              "loss": lambda: losses(results.history, order),
              "val_loss_quarters": lambda: quarters(results.runs, order),
              "recon_vs_t": lambda: recon_vs_t(results.recon, order),
              "fid_vs_n": lambda: fid_vs_n(results.fid_n, order),
              "fid_vs_steps": lambda: fid_vs_steps(results.fid_steps, order),
              "quality_vs_cost": lambda: quality_vs_cost(table),
              "sample_grids": lambda: sample_grids(results.runs, order),
              # evalproto (issue 14): grids over training, x̂0 panels, class histograms
              "training_grids": lambda: training_grids(results.runs, order),
              "x0_panel": lambda: x0_panels(results.runs, order),
              "class_histograms": lambda: class_histograms(results.runs, order)}
    written = {}
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        for name, make in makers.items():
            fig = make()
            if fig is not None:
                path = out / f"{name}.png"
                write_with(path, lambda p: fig.savefig(p, format="png", dpi=90, bbox_inches="tight"))
                plt.close(fig)
                written[name] = path
    return written


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "complete"] if "status" in frame else frame


def _panels(n: int, width: float = 5.0, height: float = 3.6):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _lines(ax, frame, x, y, order, title=None, logx=False, style=None):
    sns.lineplot(frame, x=x, y=y, hue="label", hue_order=order, style=style, errorbar="sd",
                 marker="o", ax=ax)
    ax.set(title=title or registry.label(y), ylabel=registry.label(y), xlabel=x)
    if logx:  # log axis, ticks at the measured values in plain numbers
        ax.set_xscale("log")
        ax.set_xticks(sorted(frame[x].dropna().unique()))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ax.get_legend():
        ax.legend(fontsize=7, title=None)


def curves(history: pd.DataFrame, order):
    """Every metric evaluated during training except the losses (FID, KID, ...) vs kimg."""
    if history.empty:
        return None
    evals = _complete(history)
    metrics = [c for c in evals.columns if c not in SKIP and not c.startswith("val_loss_q")
               and pd.to_numeric(evals[c], errors="coerce").notna().any()]
    if not metrics:
        return None
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics):
        _lines(ax, evals.dropna(subset=[metric]), "kimg", metric, order, f"{registry.label(metric)} vs kimg")
    return fig


def losses(history: pd.DataFrame, order):
    """Training loss (logged points) and validation loss vs kimg."""
    cols = [c for c in ("train_loss", "val_loss") if c in history and history[c].notna().any()]
    if history.empty or not cols:
        return None
    fig, axes = _panels(len(cols))
    for ax, col in zip(axes, cols):
        _lines(ax, _complete(history).dropna(subset=[col]), "kimg", col, order,
               "training loss" if col == "train_loss" else "validation loss")
    return fig


def quarters(runs: pd.DataFrame, order):
    """Final validation loss per quarter of t (q1 = smallest t), bars with ± std over seeds."""
    cols = [f"val_loss_q{q}" for q in range(1, 5) if f"val_loss_q{q}" in runs]
    runs = _complete(runs)
    if runs.empty or not cols or runs[cols].isna().all().all():
        return None
    long = runs.melt(id_vars=["label"], value_vars=cols, var_name="quarter", value_name="val loss")
    long["quarter"] = long["quarter"].str.replace("val_loss_", "")
    fig, (ax,) = _panels(1, width=6.5)
    sns.barplot(long, x="quarter", y="val loss", hue="label", hue_order=order, errorbar="sd", ax=ax)
    ax.set(title="validation loss per quarter of t or EDM σ (q1 = least noise)")
    ax.legend(fontsize=7, title=None)
    return fig


def recon_vs_t(recon: pd.DataFrame, order):
    """SSIM and PSNR of one-step x̂0 reconstructions vs t (study 003), band over seeds."""
    if recon.empty:
        return None
    part = _complete(recon[recon["kind"] == "recon"])
    cols = [c for c in ("ssim_mean", "psnr_mean") if c in part]
    if part.empty or not cols:
        return None
    fig, axes = _panels(len(cols))
    for ax, col in zip(axes, cols):
        name = col.removesuffix("_mean").upper()
        _lines(ax, part, "t", col, order, f"{name} of one-step x̂0 vs t")
        ax.set_ylabel(name + (" (dB)" if name == "PSNR" else ""))
    return fig


def fid_vs_n(fid_n: pd.DataFrame, order):
    """FID vs the number of generated samples (study 001, Figure 9)."""
    if fid_n.empty or "fid" not in fid_n:
        return None
    fig, (ax,) = _panels(1, width=6)
    _lines(ax, _complete(fid_n), "n", "fid", order, "FID vs number of samples", logx=True)
    ax.set_xlabel("N generated")
    return fig


def fid_vs_steps(fid_steps: pd.DataFrame, order):
    """FID and sampling throughput vs sampling steps, one style per sampler."""
    if fid_steps.empty:
        return None
    part = _complete(fid_steps)
    cols = [c for c in ("fid", "sample_img_per_s") if c in part and part[c].notna().any()]
    fig, axes = _panels(len(cols))
    for ax, col in zip(axes, cols):
        _lines(ax, part, "steps", col, order, f"{registry.label(col)} vs sampling steps",
               logx=True, style="sampler")
    return fig


def quality_vs_cost(table: pd.DataFrame):
    """FID (or the ranking metric) vs parameters and vs training img/s; bubble area = GFLOPs;
    a black ring marks the Pareto front."""
    if table.empty:
        return None
    quality = "fid" if "fid" in table and table["fid"].notna().any() else table.attrs.get("metric")
    costs = [c for c in ("params", "train_img_per_s") if c in table and table[c].notna().any()]
    if quality not in table or not costs:
        return None
    fig, axes = _panels(len(costs), width=5.5)
    size = "gflops" if "gflops" in table and table["gflops"].notna().any() else None
    if size:  # legend entries with 3 significant digits
        table = table.assign(gflops=[float(f"{g:.3g}") for g in table["gflops"]])
    table = table.assign(params=table["params"] * 1e-6) if "params" in table else table
    front = table[table["pareto"].astype(bool)] if "pareto" in table else table.iloc[:0]
    axes_of_front = str(table["pareto_axes"].iloc[0]) if "pareto_axes" in table else ""
    for ax, cost in zip(axes, costs):
        sns.scatterplot(table, x=cost, y=quality, hue="label", size=size, sizes=(60, 600),
                        alpha=0.8, ax=ax, legend=ax is axes[-1])
        ax.set(xlabel=registry.label(cost), ylabel=registry.label(quality),
               title=f"{registry.label(quality)} vs {registry.label(cost)}")
        if axes_of_front.endswith(f" vs {cost}"):  # ring the front on the axes it was found on
            ax.scatter(front[cost], front[quality], s=900, facecolors="none", edgecolors="black",
                       linewidths=1.2)
            ax.set_title(ax.get_title() + " (ring: Pareto front)")
        for x, y, label in zip(table[cost], table[quality], table["label"]):
            ax.annotate(str(label), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if axes[-1].get_legend():
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return fig


def sample_grids(runs: pd.DataFrame, order, seed=None):
    """The fixed-noise sample grid of every entry side by side (one seed: the lowest shared)."""
    runs = _complete(runs)
    if runs.empty:
        return None
    seed = seed if seed is not None else runs["seed"].min()
    chosen = runs[runs["seed"] == seed].drop_duplicates("label").set_index("label")
    labels = [lab for lab in (order or chosen.index) if lab in chosen.index]
    images = {lab: Path(chosen.loc[lab, "run_dir"]) / "samples.png" for lab in labels}
    images = {lab: p for lab, p in images.items() if p.exists()}
    if not images:
        return None
    cols = min(4, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, path) in zip(axes.flat, images.items()):
        ax.imshow(np.asarray(Image.open(path).convert("RGB")), interpolation="nearest")
        ax.set_title(f"{label} (seed {seed})", fontsize=8)
    return fig
