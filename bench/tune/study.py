"""An Optuna study of a suite: storage (SQLite by default, PostgreSQL to share between machines), the
session handle a coordinator or worker holds, and asking trials (re-queued ones first).

Source: Optuna's documented RDB storage with heartbeats and `RetryHeartbeatStaleTrialCallback` (a
killed worker's trial is re-queued with the same parameters) and `fail_stale_trials`.
"""
from __future__ import annotations

import copy
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from bench.data import DatasetMemo
from bench.errors import BenchError
from bench.tune.search import Search, make_pruner, parse_search, quiet_experimental


# A coordinator's or worker's handle on one study: the suite, its search, storage and folders.
@dataclass
class Session:
    suite: object                     # bench.config.suite.Suite with a search section
    search: Search                    # the validated search section
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    folder: Path                      # results/<suite>: trial run folders, study summary, plots
    progress: bool = True             # training progress bars (in-process trials only)
    log: Callable[[str], None] = print
    datasets: DatasetMemo = field(default_factory=DatasetMemo)  # each data section loaded once

    @property
    def url(self) -> str:
        return safe_url(self.storage.url)

    def dataset(self, data_cfg):
        return self.datasets(data_cfg)


STORAGE_ENV = "BENCH_TUNE_STORAGE"  # the storage URL when --storage is not given


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def with_driver(url: str) -> str:
    """The URL with its database driver pinned and importable: the documented `postgresql://` form
    means psycopg 3 (SQLAlchemy 2.1's default; 2.0 would pick psycopg2), the `[postgres]` extra."""
    try:
        parsed = make_url(url)
    except Exception:  # not a URL: RDBStorage reports it below
        return url
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as err:
        driver = parsed.get_dialect().driver
        raise BenchError(f"--storage {safe_url(url)}: the {parsed.get_backend_name()} driver "
                         f"{driver!r} is not installed ({err}); pip install 'bench[postgres]' "
                         f"(psycopg 3) for postgresql:// URLs") from None
    except Exception:  # unknown dialect: RDBStorage reports it below
        return url
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The storage URL without its password (it goes into logs and result files)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, search: Search) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; a killed worker's trial is re-queued (same parameters)."""
    url = with_driver(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with quiet_experimental():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=search.retries, inherit_intermediate_values=True)
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
    with quiet_experimental():
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
    queued = []
    for t in trials:
        if t.user_attrs.get("interrupted") and t.number not in done:
            retry(study, copy.deepcopy(t))
            queued.append(original_number(t))
    return queued


def ask(study: optuna.Study) -> optuna.Trial:
    """`study.ask()`; we record heartbeats ourselves (ask-and-tell), which Optuna warns about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask()


def next_trial(s: Session, deadline: float | None) -> optuna.Trial | None:
    """Ask the next trial (re-queued ones first) unless the study has its n_trials or time is up."""
    if deadline is not None and time.monotonic() >= deadline:
        return None
    optuna.storages.fail_stale_trials(s.study)
    waiting = s.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting and s.search.n_trials is not None and trials_counted(s.study) >= s.search.n_trials:
        return None
    trial = ask(s.study)
    suggest(trial, s.search)
    s.storage.record_heartbeat(trial._trial_id)  # stale if its worker never starts
    return trial


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
