"""`bench run` beyond one process: `--workers N` / `--devices all|0,1,3` (local workers,
`bench.run.workers`), `--executor local|slurm` with `--slurm key=value,...` (submitit jobs,
`bench.run.executors`), and the leaderboard once every run is finished, by whoever finishes last.

Every mode runs the same code path (`bench.run.runner.run_suite`, each run claimed in its folder),
so workers, jobs and separate `bench run` commands can share one results folder.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from submitit.helpers import Checkpointable  # a job that requeues itself on preemption

from bench.config.preflight import preflight
from bench.config.suite import load_suite
from bench.errors import BenchError
from bench.report import write_report
from bench.run import executors, workers
from bench.run.runner import run_suite
from bench.run.state import skip_reason, unfinished


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--workers", type=int, metavar="N",
                     help="N worker processes on this machine, each taking the next pending run")
    run.add_argument("--devices", metavar="all|0,1,3",
                     help="one worker per CUDA device, pinned with CUDA_VISIBLE_DEVICES")
    run.add_argument("--executor", choices=executors.EXECUTORS,
                     help="one submitit job per pending run: slurm, or local subprocesses")
    run.add_argument("--slurm", metavar="KEY=VALUE,...",
                     help=f"Slurm options of --executor slurm: {', '.join(executors.SLURM_KEYS)}")
    run.add_argument("--no-wait", action="store_true",
                     help="with --executor: return once submitted (the last job writes the leaderboard)")
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set on a worker


def check(args) -> dict:
    """Validate the scale-out flags before any work: {'envs': [...]} | {'executor': ...} | {}."""
    if args.workers is not None and args.workers < 1:
        raise BenchError(f"--workers: {args.workers} is not a positive number of workers")
    if args.executor and (args.workers or args.devices):
        raise BenchError("--executor: submits one job per run; not with --workers/--devices")
    if args.workers and args.devices:
        raise BenchError("--workers/--devices: give one (--devices starts one worker per device)")
    params = executors.parse_slurm(args.slurm, args.executor)
    if args.executor:
        return {"executor": args.executor, "params": params}
    devices = workers.parse_devices(args.devices) if args.devices else None
    if devices or (args.workers or 1) > 1:
        return {"envs": workers.worker_envs(args.workers, devices)}
    return {}


def run_options(args) -> list[str]:
    """The `bench run` flags a worker or a job repeats (the suite and its overrides included)."""
    return [args.suite, "--results", args.results, "--no-progress",
            *[f"--set={o}" for o in args.set], *(["--retry-failed"] if args.retry_failed else []),
            *(["--no-tensorboard"] if args.no_tensorboard else [])]


def run_parallel(args, suite, plan: dict) -> int:
    """Local workers (`plan['envs']`), then the leaderboard."""
    out = Path(args.results) / suite.name
    codes = workers.run_workers(["run", *run_options(args)], plan["envs"])
    for i, code in enumerate(codes):
        if code:
            print(f"worker {i}: exit code {code}", file=sys.stderr)
    if 130 in codes or -2 in codes:
        raise KeyboardInterrupt
    finish(suite, out)
    return 0 if not any(codes) else 1


def run_jobs(args, suite, plan: dict) -> int:
    """One submitit job per pending run; waits for them (unless --no-wait), then the leaderboard."""
    out = Path(args.results) / suite.name
    started = time.time()
    pending = [s.run_id for s in suite.runs if skip_reason(out / s.run_id, args.retry_failed,
                                                           started) is None]
    if pending:
        executor = executors.make_executor(plan["executor"], out / "submitit", plan["params"],
                                           suite.name)
        jobs = executors.submit(executor, RunJob(args), pending)
        print(f"submitted {len(jobs)} {plan['executor']} job(s) for {len(pending)} pending run(s): "
              f"{', '.join(j.job_id for j in jobs)}; `python -m bench status {out}` shows them")
        if args.no_wait:
            return 0
        failed = executors.wait(jobs, pending)
    else:
        print("every run is complete (or failed: --retry-failed runs it again); nothing to submit")
        failed = []
    finish(suite, out)
    return 1 if failed else 0


class RunJob(Checkpointable):
    """A submitit job: `bench run` of one run of the suite (claimed, resumed from its checkpoint),
    then the leaderboard if this job finished the suite's last run. On preemption or timeout
    submitit requeues it with the same run id (`Checkpointable.checkpoint`)."""

    def __init__(self, args):
        self.suite, self.sets, self.results = args.suite, list(args.set), args.results
        self.retry_failed, self.tensorboard = args.retry_failed, not args.no_tensorboard

    def __call__(self, run_id: str) -> str:
        suite = load_suite(self.suite, self.sets)
        out = run_suite(suite, self.results, progress=False, retry_failed=self.retry_failed,
                        tensorboard=self.tensorboard, datasets=preflight(suite), run_ids={run_id})
        if not unfinished(suite, out):
            write_report([out], out, metric=suite.eval.metric, direction=suite.eval.direction)
            return f"{run_id} done; the suite is finished, leaderboard written"
        return f"{run_id} done"


def finish(suite, out: Path) -> None:
    """The report when every run and evaluation of the suite is finished; else say who is left."""
    left = unfinished(suite, out)
    if left:
        print(f"{len(left)} run(s) not finished yet ({', '.join(left[:3])}"
              f"{', ...' if len(left) > 3 else ''}): see `python -m bench status {out}`; "
              "the leaderboard is written when the last one finishes")
        return
    write_report([out], out, metric=suite.eval.metric, direction=suite.eval.direction)
    print(f"leaderboard: {out / 'leaderboard.md'}  report: {out / 'report.html'}")
