"""`python -m bench tune SUITE.yaml`: run (or resume) the Optuna study of a suite's `search:` section.

    python -m bench tune suites/cifar_lr.yaml --dry-run            # the study, space and plan
    python -m bench tune suites/cifar_lr.yaml                      # SQLite in results/cifar_lr/
    python -m bench tune suites/cifar_lr.yaml --workers 4          # one subprocess per trial
    python -m bench tune suites/cifar_lr.yaml --storage postgresql://user@host/db
    optuna-dashboard sqlite:///results/cifar_lr/study.db

`--trial-id` (hidden) is the worker form the coordinator launches for each trial.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from bench.config.preflight import preflight
from bench.config.suite import load_suite
from bench.errors import BenchError
from bench.images import size_label
from bench.report import write_leaderboard
from bench.tune import (
    STORAGE_ENV,
    default_storage,
    open_session,
    run_trial,
    safe_url,
    tune,
)
from bench.tune.search import parse_search
from bench.tune.space import check_space, trial_spec
from bench.tune.summary import SUMMARY_MD, best_lines, write_summary


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="Optuna study over a suite's search: section (resumable)")
    p.add_argument("suite", help="suite YAML file with a search: section, e.g. suites/cifar_lr.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any suite key, e.g. --set search.n_trials=8 (repeatable)")
    p.add_argument("--storage", default=None,
                   help="RDB URL (default: $BENCH_TUNE_STORAGE, else sqlite:///RESULTS/<suite>/"
                        "study.db); a PostgreSQL URL shares one study between machines")
    p.add_argument("--study", default=None, help="study name (default: the suite name)")
    p.add_argument("--workers", type=int, default=1,
                   help="trials run at a time, each in its own subprocess when > 1 (default 1)")
    p.add_argument("--results", default="results", help="results root (default: results)")
    p.add_argument("--dry-run", action="store_true", help="print the study, space and plan")
    p.add_argument("--summary", action="store_true",
                   help="run no trial: rewrite the study summary, plots and leaderboard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--trial-id", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.workers < 1:
        raise BenchError(f"--workers: expected a positive number of workers, got {args.workers}")
    suite = load_suite(args.suite, args.set)
    search = parse_search(suite, check=args.trial_id is None)
    if args.dry_run:
        print(dry_run(suite, search, args))
        return 0
    if args.trial_id is None:
        preflight(suite)  # every file and device the suite names, before the study is opened
    session = open_session(suite, results=args.results, storage=args.storage, study_name=args.study,
                           progress=not args.no_progress, search=search)
    if args.trial_id is not None:
        return _worker(session, args.trial_id)
    if not args.summary:
        tune(session, workers=args.workers, overrides=args.set)
    _report(session)
    return 0


def _worker(session, trial_id: int) -> int:

    state = session.storage.get_trial(trial_id).state
    if state != TrialState.RUNNING:
        raise BenchError(f"--trial-id {trial_id}: the trial is {state.name.lower()}, not running")
    run_trial(session, optuna.trial.Trial(session.study, trial_id))
    return 0


def _report(session) -> None:
    metric, direction = session.search.objectives[0]
    write_leaderboard(session.folder, metric=metric, direction=direction)
    summary = write_summary(session)
    for line in best_lines(summary):
        print(line)
    print(f"pruning: {summary['pruning']}")
    print(f"summary: {session.folder / SUMMARY_MD}; leaderboard: {session.folder / 'leaderboard.md'}")


def dry_run(suite, search, args) -> str:
    """The study, its space and plan, and the state of an existing study; opens no new storage."""
    folder = Path(args.results) / suite.name
    storage = args.storage or os.environ.get(STORAGE_ENV)
    url = storage or default_storage(folder)
    base = trial_spec(suite, search, {})
    unit, amount = base.budget.unit, base.budget.amount
    every = f"every {suite.eval.every_kimg:g} kimg" if suite.eval.every_kimg else "at the end only"
    entries = ", ".join(search.entries) + (f"; archs {', '.join(search.archs)}" if search.archs else "")
    shown = safe_url(storage) if storage else f"sqlite:///{folder / 'study.db'}"
    lines = [f"study      {args.study or suite.name}  in {shown}  ({_state(url, args, suite, search)})",
             "objective  " + ", ".join(f"{d} {m}" for m, d in search.objectives),
             f"pruning    {search.pruning_note()}; evaluations {every}",
             f"sampler    {search.sampler} (seed {search.seed})",
             f"trials     {search.n_trials or 'until timeout'} in the study, timeout "
             f"{f'{search.timeout:g} s' if search.timeout else 'none'}, {args.workers} at a time",
             f"each trial one run: entry {entries} ({base.entry.arch}, {base.params / 1e6:.3f} M "
             f"params), seed {base.seed}, budget {unit} = {amount:g}, {base.data.dataset} "
             f"{size_label(base.data.image_size)}px",
             "space:"]
    width = max([len(k) for k in search.space] + [4])
    for key, dist in search.space.items():
        lines.append(f"  {key:<{width}}  {_show(dist)}")
    lines += [f"checked    {check_space(suite, search)} suite variants built (every entry, bound "
              "and choice)",
              f"results    {folder}/<entry>-tNNN-s{base.seed}-<hash>/, leaderboard.md, "
              "study_summary.md, study_*.png"]
    return "\n".join(lines)


def _state(url: str, args, suite, search) -> str:
    """'new' / trial counts for an existing SQLite study; other storages are not opened here."""
    if not url.startswith("sqlite:///"):
        return "not opened in a dry run"
    if not Path(url.removeprefix("sqlite:///")).exists():
        return "new"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=args.study or suite.name, storage=url)
    except KeyError:
        return "new"
    counts = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no trials yet"


def _show(dist) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice  {list(dist.choices)}"
    kind = "int  " if isinstance(dist, IntDistribution) else "float"
    step = f" step {dist.step:g}" if dist.step not in (None, 1) or (
        dist.step == 1 and not isinstance(dist, IntDistribution)) else ""
    return f"{kind}   [{dist.low:g}, {dist.high:g}]{' log' if dist.log else ''}{step}"
