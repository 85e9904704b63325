"""`python -m bench report FOLDER [FOLDER ...]`: leaderboard.csv/.md, plots/*.png and report.html
of one or more results folders (several: compare machines, or before/after a change).

`--markdown-only` prints the Markdown tables for a CI log and writes nothing.
"""
from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError, choices_error
from bench.metrics import registry
from bench.report import collect, leaderboard, ranking_defaults, write_report
from bench.report.markdown import leaderboard_markdown, to_markdown


def add_parser(sub) -> None:
    rep = sub.add_parser("report", help="leaderboard, plots and report.html of results folders")
    rep.add_argument("folders", nargs="+", help="results folders (a suite's, or a results root)")
    rep.add_argument("--out", default=None,
                     help="output folder (default: the folder itself; required for several)")
    rep.add_argument("--metric", default=None, help="ranking metric (default: the suite's)")
    rep.add_argument("--direction", choices=["minimize", "maximize"], default=None,
                     help="default: the suite's for its metric, else inferred from the name")
    rep.add_argument("--baseline", default=None,
                     help="entry to test against (ENTRY, or FOLDER:ENTRY across folders; "
                          "default: each suite's baseline)")
    rep.add_argument("--test", choices=["ttest", "wilcoxon"], default="ttest",
                     help="paired test across seeds (default: ttest)")
    rep.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    rep.add_argument("--cost", default=None,
                     help="Pareto cost axis: train_img_per_s (default), gflops, params, ...")
    rep.add_argument("--markdown-only", action="store_true",
                     help="print the Markdown tables only; write no file")
    rep.set_defaults(func=run)


def run(args) -> int:
    _check(args)
    metric, direction = ranking_defaults(args.folders, args.metric, args.direction)
    options = {"alpha": args.alpha, "test": args.test, "baseline": args.baseline, "cost": args.cost}
    if args.markdown_only:
        results = collect(args.folders)
        _check_columns(results.runs, metric, args.cost)
        print(leaderboard_markdown(results, leaderboard(results.runs, metric, direction, **options)), end="")
        return 0
    if len(args.folders) > 1 and not args.out:
        raise BenchError("report: several folders: give --out DIR for the combined report")
    results = collect(args.folders)
    _check_columns(results.runs, metric, args.cost)
    done = write_report(args.folders, args.out, metric, direction, results=results, **options)
    print(to_markdown(done["table"]), end="")
    print(f"\nwrote {len(done['files'])} files in {done['seconds']:.1f} s: "
          f"{Path(done['files'][-1])} (and leaderboard.csv/.md, plots/)")
    return 0


def _check(args) -> None:
    for folder in args.folders:
        if not Path(folder).is_dir():
            raise BenchError(f"report: {folder}: no such results folder")
    if not 0 < args.alpha < 1:
        raise BenchError(f"report: --alpha: {args.alpha} is not in (0, 1)")


def _check_columns(runs, metric: str, cost: str | None) -> None:
    """The ranking metric (a rankable metric of the table) and the cost axis (a cost metric) must
    be numeric columns these results hold."""
    if runs.empty:
        raise BenchError("report: no result.json below the given folders")
    numeric = {c for c in runs.columns if runs[c].dtype.kind in "fiu" and runs[c].notna().any()}
    for flag, name, ok in (("--metric", metric, lambda m: m.rankable),
                           ("--cost", cost, lambda m: m.group == "cost")):
        valid = [n for n, m in registry.METRICS.items()
                 if ok(m) and m.source != "history" and n in numeric]
        if name is not None and name not in valid:
            raise choices_error(f"report: {flag}", "metric", name, valid)
