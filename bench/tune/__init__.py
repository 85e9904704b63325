"""`python -m bench tune SUITE.yaml`: a resumable, prunable, multi-worker Optuna study over a suite.

Sources: Optuna (Akiba et al. 2019), used through its documented pieces: the ask-and-tell interface,
`RDBStorage` (SQLite file by default, readable by optuna-dashboard; PostgreSQL to share a study
between machines) with heartbeats and `RetryHeartbeatStaleTrialCallback` (a killed worker's trial is
re-queued with the same parameters), `fail_stale_trials`, `Trial.report` / `should_prune`.

The coordinator asks the trials (sampling happens there, from a sampler seeded with `search.seed`
plus the study's trial count) and runs each one as a normal run (`bench.run.runner.run_one`: same
`result.json`, a folder in `results/<suite>/`, the entry renamed `<entry>-t<NNN>` so each trial is
its own leaderboard row), in-process with one worker, or each in its own `python -m bench tune ...
--trial-id ID` subprocess with several (GPU memory never outlives a trial; one GPU per worker when
several are visible). `n_trials` counts distinct trials of the whole study, re-runs once. Ctrl-C
marks the running trial interrupted; re-running the command re-queues it and its run resumes from
its last evaluation checkpoint. Multi-objective trials cannot be pruned by Optuna, so their
`prune_on` metric is reported to a twin trial in a single-objective proxy study (`<study>.prune_on.<metric>`).

Around it: `study` (storage, session, asking trials), `space` (the search section), `pool` (worker
subprocesses), `summary` (summary and plots); the command is `bench.cli.tune`.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import TrialState

from bench.errors import BenchError
from bench.run.context import RunContext
from bench.run.results import RESULT, read_result, write_json
from bench.run.runner import run_one
from bench.tune.pool import Pool
from bench.tune.search import Search, make_pruner, make_sampler, parse_search
from bench.tune.space import trial_spec
from bench.tune.study import (  # noqa: F401
    STORAGE_ENV,
    Session,
    ask,
    default_storage,
    describe,
    next_trial,
    open_session,
    original_number,
    requeue_interrupted,
    safe_url,
    trials_counted,
)

__all__ = ["Session", "open_session", "parse_search", "run_trial", "tune"]


# --- one trial ----------------------------------------------------------------------------------

@contextmanager
def heartbeat(storage, trial_id: int, interval: int):
    """Record the trial's heartbeat every `interval` seconds while its run trains."""
    stop = threading.Event()

    def beat():
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def pruning_hook(trial: optuna.Trial, metric: str):
    """Runner hook: report `metric` at each in-training eval (step = images seen); maybe prune."""
    def hook(phase: str, ctx: RunContext):
        if phase != "train":
            return None
        value = ctx.point.get(metric)
        if value is None:
            measured = ", ".join(k for k, v in ctx.point.items() if isinstance(v, float))
            raise BenchError(f"search.prune_on: {metric!r} is not measured during training; "
                             f"measured: {measured}")
        trial.report(float(value), ctx.state["images"])
        if math.isnan(value) or trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {ctx.state['images'] / 1000:g} kimg "
                                     f"({metric} = {value:.4g})")
        return None
    return hook


def _proxy_trial(s: Session, trial: optuna.Trial):
    """Where the pruning metric goes: the trial itself, or (several objectives) a proxy twin."""
    if s.search.prune_on is None:
        return None, None
    if len(s.search.objectives) == 1:
        return trial, None
    metric, direction = s.search.prune_on
    proxy = optuna.create_study(storage=s.storage, study_name=f"{s.study.study_name}.prune_on.{metric}",
                                direction=direction, pruner=make_pruner(s.search, s.suite),
                                load_if_exists=True)
    twin = ask(proxy)
    twin.set_user_attr("trial", trial.number)
    return twin, proxy


def run_trial(s: Session, trial: optuna.Trial) -> TrialState:
    """Run one asked trial as a normal run and tell the study how it ended."""
    frozen = s.storage.get_trial(trial._trial_id)
    number = original_number(frozen)
    try:
        spec = trial_spec(s.suite, s.search, frozen.params, number)
    except BenchError as err:  # each value passed alone; this combination is refused
        trial.set_user_attr("error", str(err))
        s.study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    run_dir = s.folder / spec.run_id
    trial.set_user_attr("run_id", spec.run_id)
    trial.set_user_attr("run_dir", str(run_dir))
    reporter, proxy = _proxy_trial(s, trial)
    hooks = [pruning_hook(reporter, s.search.prune_on[0])] if reporter is not None else []
    record = None
    try:
        with heartbeat(s.storage, trial._trial_id, s.search.heartbeat):
            record = run_one(spec, run_dir, s.dataset(spec.data), hooks=hooks, progress=s.progress)
        state, values = TrialState.COMPLETE, _values(record, s.search)
    except optuna.TrialPruned:
        state, values = TrialState.PRUNED, None
    except (KeyboardInterrupt, BenchError) as err:
        trial.set_user_attr("interrupted" if isinstance(err, KeyboardInterrupt) else "error",
                            True if isinstance(err, KeyboardInterrupt) else str(err))
        _tell(s, trial, TrialState.FAIL, None, proxy, reporter, None, run_dir, number)
        raise
    except Exception as err:  # a failed trial (OOM, divergence...) does not stop the study
        trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        state, values = TrialState.FAIL, None
    return _tell(s, trial, state, values, proxy, reporter, record, run_dir, number)


def _values(record: dict, search: Search) -> list[float]:
    metrics = record["metrics"]
    missing = [m for m, _ in search.objectives if metrics.get(m) is None]
    if missing:
        measured = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise BenchError(f"search.objectives: {missing[0]!r} was not measured by the run; "
                         f"measured: {measured}")
    return [float(metrics[m]) for m, _ in search.objectives]


def _tell(s: Session, trial, state, values, proxy, twin, record, run_dir: Path, number: int):
    """Finish the trial (and its proxy twin); note the trial in its run's result.json."""
    if values is not None and any(math.isnan(v) for v in values):
        state, values = TrialState.FAIL, None  # Optuna refuses NaN objectives
        trial.set_user_attr("error", "objective is NaN")
    s.study.tell(trial, values, state=state)
    if proxy is not None:
        proxy_value = (record or {}).get("metrics", {}).get(s.search.prune_on[0])
        done = state == TrialState.COMPLETE and proxy_value is not None
        proxy.tell(twin, float(proxy_value) if done else None,
                   state=TrialState.COMPLETE if done else state)
    result = read_result(run_dir)
    if result is not None:
        final = s.storage.get_trial(trial._trial_id)
        result["optuna"] = {"study": s.study.study_name, "storage": s.url, "trial": number,
                            "attempt": trial.number, "state": final.state.name.lower(),
                            "params": final.params, "values": final.values,
                            "reported": {str(k): v for k, v in final.intermediate_values.items()}}
        write_json(run_dir / RESULT, result)
    return state


# --- the coordinator ----------------------------------------------------------------------------

def tune(s: Session, *, workers: int = 1, overrides: list[str] = ()) -> optuna.Study:
    """Run trials until the study has `n_trials` (or `timeout` passed); returns the study."""
    requeued = requeue_interrupted(s.study)
    optuna.storages.fail_stale_trials(s.study)
    count = len(s.study.get_trials(deepcopy=False))
    s.study.sampler = make_sampler(s.search, s.search.seed + count)  # a resumed study draws anew
    s.log(f"study {s.study.study_name}: {trials_counted(s.study)} trials so far"
          f"{f' ({len(requeued)} interrupted, re-queued)' if requeued else ''}; "
          f"target {s.search.n_trials or 'none'}, timeout {s.search.timeout or 'none'}; "
          f"{s.search.sampler} sampler; {s.search.pruning_note()}")
    s.log(f"storage {s.url}  (optuna-dashboard {s.url})")
    deadline = time.monotonic() + s.search.timeout if s.search.timeout else None
    if workers <= 1:
        while (trial := next_trial(s, deadline)) is not None:
            run_trial(s, trial)
            s.log(describe(s, s.storage.get_trial(trial._trial_id)))
    else:
        Pool(s, workers, overrides).run(deadline)
    return s.study
