"""`python -m bench report FOLDER [FOLDER ...]`: the leaderboard of one or more results folders."""
from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError


def add_parser(sub) -> None:
    rep = sub.add_parser("report", help="leaderboard of one or more results folders")
    rep.add_argument("folders", nargs="+")
    rep.add_argument("--metric", default=None, help="ranking metric (default: the suite's)")
    rep.add_argument("--direction", choices=["minimize", "maximize"], default=None)
    rep.set_defaults(func=run)


def run(args) -> int:
    from bench.report import leaderboard, to_markdown
    from bench.results import load_results

    for folder in args.folders:
        if not Path(folder).is_dir():
            raise BenchError(f"report: {folder}: no such results folder")
    metric, direction = args.metric or "val_loss", args.direction or "minimize"
    table = leaderboard(load_results(args.folders), metric, direction)
    print(to_markdown(table, metric), end="")
    return 0
