"""`python -m bench tune SUITE.yaml`: a resumable, prunable, multi-worker Optuna study over a suite.

Sources: Optuna (Akiba et al. 2019), used through its documented pieces: the ask-and-tell interface,
`RDBStorage` (SQLite file by default, readable by optuna-dashboard; PostgreSQL to share a study
between machines) with heartbeats and `RetryHeartbeatStaleTrialCallback` (a killed worker's trial is
re-queued with the same parameters), `fail_stale_trials`, `Trial.report` / `should_prune`.

The coordinator asks the trials (sampling happens there, from a sampler seeded with `search.seed`
plus the study's trial count) and runs each one as a normal run (`bench.runner.run_one`: same
`result.json`, a folder in `results/<suite>/`, the entry renamed `<entry>-t<NNN>` so each trial is
its own leaderboard row), in-process with one worker, or each in its own `python -m bench tune ...
--trial-id ID` subprocess with several (GPU memory never outlives a trial; one GPU per worker when
several are visible). `n_trials` counts distinct trials of the whole study, re-runs once. Ctrl-C
marks the running trial interrupted; re-running the command re-queues it and its run resumes from
its last evaluation checkpoint. Multi-objective trials cannot be pruned by Optuna, so their
`prune_on` metric is reported to a twin trial in a single-objective proxy study (`<study>.prune_on.<metric>`).

Around it: `tune_space` (the search section), `tune_pool` (worker subprocesses), `tune_report`
(summary and plots), `tune_cli` (the command).
"""
from __future__ import annotations

import copy
import math
import os
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from bench.errors import BenchError
from bench.tune_space import Search, make_pruner, make_sampler, parse_search, trial_spec

# We record heartbeats ourselves (the ask-and-tell loop below), which Optuna warns about.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

__all__ = ["Session", "open_session", "parse_search", "run_trial", "tune"]


# A coordinator's or worker's handle on one study: the suite, its search, storage and folders.
@dataclass
class Session:
    suite: object                     # bench.suite.Suite with a search section
    search: Search                    # the validated search section
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    folder: Path                      # results/<suite>: trial run folders, study summary, plots
    progress: bool = True             # training progress bars (in-process trials only)
    log: Callable[[str], None] = print
    datasets: dict = field(default_factory=dict)  # repr(DataConfig) -> Dataset, loaded once

    @property
    def url(self) -> str:
        return safe_url(self.storage.url)

    def dataset(self, data_cfg):
        from bench.data import load_dataset

        key = repr(data_cfg)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(data_cfg)
        return self.datasets[key]


STORAGE_ENV = "BENCH_TUNE_STORAGE"  # the storage URL when --storage is not given


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def safe_url(url: str) -> str:
    """The storage URL without its password (it goes into logs and result files)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, search: Search) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; a killed worker's trial is re-queued (same parameters)."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=search.retries,
                                                             inherit_intermediate_values=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine,
                                          heartbeat_interval=search.heartbeat,
                                          grace_period=2 * search.heartbeat,
                                          heartbeat_stale_trial_callback=retry)
    except Exception as err:  # sqlalchemy: bad URL, missing driver, refused connection
        raise BenchError(f"--storage {safe_url(url)}: cannot open: "
                         f"{str(err).strip().splitlines()[0]}") from None


def open_session(suite, *, results: str | Path = "results", storage: str | None = None,
                 study_name: str | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, search: Search | None = None) -> Session:
    """Validate the search, open (or create) the study; re-running the command resumes it."""
    search = search or parse_search(suite)
    folder = Path(results) / suite.name
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or os.environ.get(STORAGE_ENV) or default_storage(folder)
    rdb = open_storage(url, search)
    name = study_name or suite.name
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=rdb, study_name=name, directions=search.directions,
                                sampler=optuna.samplers.RandomSampler(),  # workers never sample
                                pruner=make_pruner(search, suite), load_if_exists=True)
    found = [d.name.lower() for d in study.directions]
    if found != search.directions:
        raise BenchError(f"study {name!r} in {safe_url(url)} optimizes {found}, the suite asks for "
                         f"{search.directions}; pass --study NEW_NAME for a new study")
    if study.user_attrs.get("suite") is None:
        study.set_user_attr("suite", suite.name)
        study.set_user_attr("objectives", [list(o) for o in search.objectives])
        study.set_user_attr("pruning", search.pruning_note())
    return Session(suite, search, rdb, study, folder, progress, log)


# --- asking trials ----------------------------------------------------------------------------

def suggest(trial: optuna.Trial, search: Search) -> dict:
    """Sample (or, for a re-queued or enqueued trial, read back) every parameter of a trial."""
    params = {}
    if len(search.entries) > 1:
        params["entry"] = trial.suggest_categorical("entry", list(search.entries))
    if search.archs:
        params["arch"] = trial.suggest_categorical("arch", list(search.archs))
    for key, d in search.space.items():
        if isinstance(d, CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, list(d.choices))
        elif isinstance(d, IntDistribution):
            params[key] = trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
        else:
            params[key] = trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
    return params


def original_number(trial) -> int:
    """A re-queued trial keeps the number (hence the run folder) of the trial it repeats."""
    return trial.system_attrs.get("failed_trial", trial.number)


def trials_counted(study) -> int:
    """Distinct trials of a study: the re-runs of one trial count once."""
    return len({original_number(t) for t in study.get_trials(deepcopy=False)})


def requeue_interrupted(study) -> list[int]:
    """Re-queue trials stopped by Ctrl-C: same parameters, same run folder, so the run resumes."""
    trials = study.get_trials(deepcopy=False)
    done = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
    queued = []
    for t in trials:
        if t.user_attrs.get("interrupted") and t.number not in done:
            retry(study, copy.deepcopy(t))
            queued.append(original_number(t))
    return queued


def next_trial(s: Session, deadline: float | None) -> optuna.Trial | None:
    """Ask the next trial (re-queued ones first) unless the study has its n_trials or time is up."""
    if deadline is not None and time.monotonic() >= deadline:
        return None
    optuna.storages.fail_stale_trials(s.study)
    waiting = s.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting and s.search.n_trials is not None and trials_counted(s.study) >= s.search.n_trials:
        return None
    trial = s.study.ask()
    suggest(trial, s.search)
    s.storage.record_heartbeat(trial._trial_id)  # stale if its worker never starts
    return trial


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
    def hook(phase: str, ctx: dict):
        if phase != "train":
            return None
        value = ctx["point"].get(metric)
        if value is None:
            measured = ", ".join(k for k, v in ctx["point"].items() if isinstance(v, float))
            raise BenchError(f"search.prune_on: {metric!r} is not measured during training; "
                             f"measured: {measured}")
        trial.report(float(value), ctx["state"]["images"])
        if math.isnan(value) or trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {ctx['state']['images'] / 1000:g} kimg "
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
    twin = proxy.ask()
    twin.set_user_attr("trial", trial.number)
    return twin, proxy


def run_trial(s: Session, trial: optuna.Trial) -> TrialState:
    """Run one asked trial as a normal run and tell the study how it ended."""
    from bench.runner import run_one

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
    from bench.results import RESULT, read_result, write_json

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
        from bench.tune_pool import Pool

        Pool(s, workers, overrides).run(deadline)
    return s.study


def describe(s: Session, t) -> str:
    """One line per finished trial: state, objective values, parameters, run folder."""
    values = "  ".join(f"{m}={v:.4g}" for (m, _), v in zip(s.search.objectives, t.values or []))
    if t.state == TrialState.PRUNED and t.intermediate_values:
        step = max(t.intermediate_values)
        values = f"at {step / 1000:g} kimg ({s.search.prune_on[0]}={t.intermediate_values[step]:.4g})"
    if t.state == TrialState.FAIL:
        values = "interrupted" if t.user_attrs.get("interrupted") else t.user_attrs.get("error", "")
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    return (f"trial {t.number:>3} {t.state.name.lower():<8} {values}  {params}  "
            f"{t.user_attrs.get('run_id', '')}")
