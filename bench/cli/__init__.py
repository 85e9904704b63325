"""Command line: `python -m bench run | list | report | eval | tune | status`.

Every bad input surfaces as a `BenchError`: one line on stderr naming the file, key and choices,
exit code 2, no traceback, and nothing written (suites are fully validated before any work).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from architectures import create, list_architectures
from bench.cli import eval as eval_cli
from bench.cli import report as report_cli
from bench.cli import scale
from bench.cli import status as status_cli
from bench.cli import tune as tune_cli
from bench.config.preflight import preflight
from bench.config.suite import load_suite
from bench.device import precision_cost
from bench.errors import BenchError, one_line
from bench.metrics.cost import count_params, forward_flops
from bench.run import distributed
from bench.run.results import is_complete
from bench.run.runner import RunsCrashed, run_one, run_suite


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line too (`bench: error: ...`, exit code 2)."""

    def error(self, message: str):
        command = self.prog.removeprefix("bench").strip()
        self.exit(2, one_line(f"{command}: {message}" if command else message) + "\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Benchmark harness for diffusion models.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate every entry and seed of a suite")
    run.add_argument("suite", help="suite YAML file, e.g. suites/smoke.yaml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override any suite key, e.g. --set train.lr=1e-4 (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved suite and the plan")
    run.add_argument("--results", default="results", help="results root (default: results)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--no-tensorboard", action="store_true",
                     help="no TensorBoard event files of the training curves (default: written "
                          "when tensorboard is installed)")
    run.add_argument("--retry-failed", action="store_true",
                     help="run again the runs that failed (non-finite loss); default: skip them")
    scale.add_arguments(run)
    run.set_defaults(func=cmd_run)
    lst = sub.add_parser("list", help="registered architectures with parameters and GFLOPs")
    lst.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 's001_*'")
    lst.add_argument("--image-size", type=int, default=32)
    lst.add_argument("--channels", type=int, default=3)
    lst.set_defaults(func=cmd_list)
    for module in (report_cli, eval_cli, tune_cli, status_cli):  # each adds its parser and sets `func`
        module.add_parser(sub)
    return p


def cmd_run(args) -> int:
    suite = load_suite(args.suite, args.set)
    plan = scale.check(args)  # --workers / --devices / --executor / --slurm, before any work
    distributed.start()   # under torchrun: join the group (bench.run.distributed)
    distributed.check(suite)
    if args.dry_run:
        sections = {k: asdict(getattr(suite, k))
                    for k in ("data", "task", "diffusion", "budget", "train", "eval")}
        print(yaml.safe_dump({"name": suite.name, **sections, "seeds": list(suite.seeds),
                              **({"folds": suite.folds} if any(s.fold is not None for s in suite.runs)
                                 else {})},
                             sort_keys=False).rstrip())
        print_plan(suite, Path(args.results) / suite.name)
        print_precision(suite)
        return 0
    datasets = preflight(suite)  # every file and device the suite names, before anything is written
    if distributed.follower():   # a torchrun rank > 0: trains what rank 0 announces, writes nothing
        out = Path(args.results) / suite.name
        return distributed.follow(suite, lambda spec: run_one(
            spec, out / spec.run_id, datasets(spec.data), progress=False, tensorboard=False))
    if "envs" in plan:
        return scale.run_parallel(args, suite, plan)
    if "executor" in plan:
        return scale.run_jobs(args, suite, plan)
    worker = args.worker_index
    log = print if worker is None else lambda line: _say(f"[worker {worker}] {line}")
    try:
        out = run_suite(suite, args.results, progress=not args.no_progress and worker is None,
                        retry_failed=args.retry_failed, tensorboard=not args.no_tensorboard,
                        datasets=datasets, log=log, keep_going=worker is not None)
    except RunsCrashed as err:
        log(str(err))
        return 1
    if worker is None:  # a worker leaves the leaderboard to its parent
        scale.finish(suite, out)
    distributed.stop()
    return 0


def _say(line: str) -> None:
    """One line in one write, so that the lines of concurrent workers do not interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def print_plan(suite, out: Path) -> None:
    """The planned trainings, then the planned evaluations (one per run and eval variant)."""
    print(f"\nplanned trainings ({len(suite.runs)}):")
    for spec in suite.runs:
        done = is_complete(out / spec.run_id)
        match = f"  matched {spec.capacity['kind']}" if spec.capacity else ""
        print(f"  {spec.run_id:<40} {spec.entry.arch:<22} seed {spec.seed:<3} "
              f"{spec.params / 1e6:9.3f} M params  {'complete' if done else 'pending'}{match}")
    print(f"\nplanned evaluations ({len(suite.evaluations)}):")
    for ev in suite.evaluations:
        cfg, done = ev.spec.eval, is_complete(out / ev.eval_id)
        sampler = f"{cfg.sampler}/{cfg.steps if cfg.steps is not None else 'default'}"
        opts = " ".join(f"{k}={v}" for k, v in cfg.sampler_opts.items())
        print(f"  {ev.eval_id:<48} {ev.label:<28} {sampler:<16} {opts:<28} "
              f"{','.join(cfg.metrics) or '-':<14} {'complete' if done else 'pending'}")


def print_precision(suite) -> None:
    """The CUDA precision of the planned trainings (train.amp, train.tf32) and its GPU cost."""
    groups: dict[tuple, list] = {}
    for spec in suite.runs:
        groups.setdefault((spec.train.amp, spec.train.tf32), []).append(spec)
    print("\nprecision on CUDA (train.amp, train.tf32; CPU runs are fp32):")
    for (amp, tf32), specs in groups.items():
        names = ", ".join(dict.fromkeys(s.entry.name for s in specs))
        print(f"  amp {amp}, tf32 {str(tf32).lower()}: {len(specs)} runs ({names})")
        print(f"    {precision_cost(specs[0].train)}")


def cmd_list(args) -> int:
    names = list_architectures(args.pattern)
    if not names:
        raise BenchError(f"list: no architecture matches {args.pattern!r}")
    print(f"{'architecture':<24} {'params (M)':>11} {'GFLOPs':>9}   at {args.image_size}x{args.image_size}")
    for name in names:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = create(name, in_channels=args.channels, out_channels=args.channels,
                           image_size=args.image_size).eval()
        flops = forward_flops(model, args.channels, args.image_size)
        print(f"{name:<24} {count_params(model) / 1e6:>11.3f} {flops / 1e9:>9.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchError as err:
        print(one_line(err), file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted; completed runs are kept, re-run to resume", file=sys.stderr)
        return 130
