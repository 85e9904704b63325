"""`--executor local|slurm`: one submitit job per pending run (a Slurm job array), each running the
same code path as a local run on the shared results folder (submitit, facebookincubator/submitit:
`AutoExecutor`, `map_array`, `helpers.Checkpointable` for preemption requeue).

`--slurm key=value,...` takes the keys below, mapped onto submitit's parameters (`time` is minutes,
as `timeout_min`; `mem_gb` gigabytes). `local` runs the jobs as subprocesses of this machine
(submitit's LocalExecutor), which the tests use. Job files and logs go to `<suite folder>/submitit/`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import submitit

from bench.errors import BenchError

EXECUTORS = ("local", "slurm")
SLURM_KEYS: dict[str, tuple[str, type]] = {  # --slurm key -> (submitit AutoExecutor parameter, type)
    "partition": ("slurm_partition", str),
    "time": ("timeout_min", int),
    "gpus_per_node": ("gpus_per_node", int),
    "cpus_per_task": ("cpus_per_task", int),
    "mem_gb": ("mem_gb", float),
    "array_parallelism": ("slurm_array_parallelism", int),
    "account": ("slurm_account", str),
    "qos": ("slurm_qos", str),
    "constraint": ("slurm_constraint", str),
    "exclude": ("slurm_exclude", str),
    "nodelist": ("slurm_nodelist", str),
    "gres": ("slurm_gres", str),
    "comment": ("slurm_comment", str),
}
DEFAULT_MINUTES = {"local": 24 * 60, "slurm": 240}


def parse_slurm(text: str | None, executor: str | None) -> dict:
    """`--slurm partition=gpu,time=240` -> submitit parameters; BenchError naming a bad key/value."""
    if not text:
        return {}
    if executor != "slurm":
        raise BenchError(f"--slurm {text}: only with --executor slurm")
    params = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in SLURM_KEYS:
            raise BenchError(f"--slurm: unknown key {key!r}; choose from {', '.join(SLURM_KEYS)}")
        name, kind = SLURM_KEYS[key]
        try:
            params[name] = kind(value.strip())
        except ValueError:
            params[name] = None
        if not sep or params[name] is None or params[name] == "" or (
                kind is not str and not params[name] > 0):
            raise BenchError(f"--slurm: {key}: {value.strip()!r} is not a positive "
                             f"{'number' if kind is not str else 'value'} (key=value,...)")
    return params


def make_executor(kind: str, folder: Path, params: dict, name: str):
    """A submitit AutoExecutor of `kind` writing its job files under `folder`."""
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    executor.update_parameters(name=f"bench-{name}", timeout_min=DEFAULT_MINUTES[kind],
                               **({"slurm_signal_delay_s": 120} if kind == "slurm" else {}))
    executor.update_parameters(**params)
    return executor


def submit(executor, job: Callable[[str], object], run_ids: list[str]) -> list:
    """One job per run id (one Slurm job array)."""
    with executor.batch():  # batch: submitted together, one array on Slurm
        jobs = [executor.submit(job, run_id) for run_id in run_ids]
    return jobs


def wait(jobs: list, run_ids: list[str], log=print) -> list[str]:
    """Wait for every job; log each outcome; the run ids whose job failed."""
    failed = []
    for job, run_id in zip(jobs, run_ids):
        try:
            log(f"job {job.job_id} ({run_id}): {job.result()}")
        except Exception as err:  # submitit's FailedJobError carries the job's traceback tail
            lines = str(err).strip().splitlines()
            log(f"job {job.job_id} ({run_id}): failed: {lines[-1] if lines else type(err).__name__}"
                f" (log: {job.paths.stderr})")
            failed.append(run_id)
    return failed
