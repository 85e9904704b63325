"""`bench tune`: Optuna studies over a suite (tiny U-Nets on 8 px synthetic shapes, CPU).

Covers the issue's "done when": a 4-trial study writes runs, leaderboard and summary; an absurd
learning rate is pruned with its partial result kept; Ctrl-C then re-running continues the study
(the interrupted run resumes from its checkpoint); a dead worker's trial is retried; two worker
processes share one study on SQLite and on a real PostgreSQL server without duplicates; a
multi-objective study returns its Pareto front. The search section itself (bad spaces, options,
types, the reference dry run): test_tune_search.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState
from pg_server import postgres_url  # noqa: F401 (fixture)
from tune_parts import LR, tune_cli, write_suite

import bench.run.runner
import bench.tune
from bench.config.suite import load_suite
from bench.tune import next_trial, open_session, trials_counted, tune

# bench.tune silences these for users at import; pytest resets warning filters for every test.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                        "ignore:Heartbeat of storage is supposed to be used")

@pytest.fixture(autouse=True)
def single_threaded_workers(monkeypatch):
    """Tiny convolutions are ~10x slower with 2 threads on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the worker subprocesses
    yield
    torch.set_num_threads(threads)


def load_study(tmp_path: Path, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name="tt",
                             storage=storage or f"sqlite:///{tmp_path / 'results/tt/study.db'}")


def result_of(tmp_path: Path, trial) -> dict:
    return json.loads((tmp_path / "results/tt" / trial.user_attrs["run_id"] / "result.json").read_text())


def test_four_trial_study_completes_and_writes_results(tmp_path, capsys):
    path = write_suite(tmp_path, {"space": {"train.lr": LR,
                                            "models.kwargs.dropout": {"choices": [0.0, 0.1]}},
                                  "n_trials": 4, "pruner": "none"})
    assert tune_cli(path, tmp_path) == 0
    trials = load_study(tmp_path).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:  # each trial is a normal run whose config holds the sampled values
        result = result_of(tmp_path, t)
        assert result["status"] == "complete" and result["entry"] == f"tiny-t{t.number:03d}"
        assert result["config"]["train"]["lr"] == pytest.approx(t.params["train.lr"])
        assert result["config"]["entry"]["kwargs"]["dropout"] == t.params["models.kwargs.dropout"]
        assert result["metrics"]["val_loss"] == pytest.approx(t.values[0])
        assert result["optuna"]["trial"] == t.number and result["optuna"]["state"] == "complete"
    board = pd.read_csv(tmp_path / "results/tt/leaderboard.csv")
    assert sorted(board["entry"]) == [f"tiny-t{n:03d}" for n in range(4)]
    summary = json.loads((tmp_path / "results/tt/study_summary.json").read_text())
    best = min(trials, key=lambda t: t.values[0])
    assert [b["number"] for b in summary["best"]] == [best.number]
    assert summary["states"] == {"complete": 4}
    for plot in ("history", "importances", "parallel"):
        assert (tmp_path / "results/tt" / f"study_{plot}.png").stat().st_size > 1000
    assert set(summary["importances"]["val_loss"]) == {"train.lr", "models.kwargs.dropout"}
    assert f"best trial:\n  trial {best.number}: val_loss=" in capsys.readouterr().out


def test_absurd_learning_rate_is_pruned_and_keeps_its_partial_result(tmp_path):
    path = write_suite(tmp_path, {"space": {"train.lr": {"low": 1e-4, "high": 1e5, "log": True}},
                                  "n_trials": 3, "pruner": "median",
                                  "pruner_opts": {"n_startup_trials": 2}})
    session = open_session(load_suite(path), results=tmp_path / "results", progress=False)
    for lr in (1e-3, 2e-3, 1e5):
        session.study.enqueue_trial({"train.lr": lr})
    assert tune_cli(path, tmp_path) == 0
    good, other, absurd = load_study(tmp_path).trials
    assert [good.state, other.state, absurd.state] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert list(absurd.intermediate_values) == [32]  # pruned at the first evaluation (32 images)
    worst = absurd.intermediate_values[32]
    assert not worst <= max(good.intermediate_values[32], other.intermediate_values[32])  # or NaN
    result = result_of(tmp_path, absurd)
    assert result["status"] == "pruned" and result["optuna"]["state"] == "pruned"
    assert list(result["optuna"]["reported"]) == ["32"]  # the value that pruned it


def test_interrupted_study_continues_with_earlier_trials_intact(tmp_path, monkeypatch):
    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "n_trials": 3, "pruner": "none"},
                       budget={"kimg": 0.096})  # evaluations at 32, 64 and 96 images
    real_run, resumed, interrupt = bench.run.runner.run_one, [], [True]

    def run_one(spec, run_dir, dataset, *, hooks=(), progress=True):
        def ctrl_c(phase, ctx):  # Ctrl-C during trial 1, after its first checkpoint
            if interrupt[0] and spec.entry.name == "tiny-t001" and ctx.state["images"] == 64:
                raise KeyboardInterrupt
        return real_run(spec, run_dir, dataset, hooks=[*hooks, ctrl_c], progress=progress)

    real_resume = bench.run.runner._resume_state
    monkeypatch.setattr(bench.tune, "run_one", run_one)  # the coordinator's name for it
    monkeypatch.setattr(bench.run.runner, "_resume_state", lambda run_dir, spec: resumed.append(
        (spec.entry.name, real_resume(run_dir, spec))) or resumed[-1][1])
    assert tune_cli(path, tmp_path) == 130
    first, stopped = load_study(tmp_path).trials
    assert first.state == TrialState.COMPLETE and stopped.user_attrs["interrupted"] is True
    assert result_of(tmp_path, stopped)["status"] == "interrupted"
    kept = (tmp_path / "results/tt" / first.user_attrs["run_id"] / "result.json").read_bytes()

    interrupt[0] = False
    assert tune_cli(path, tmp_path) == 0
    study = load_study(tmp_path)
    assert trials_counted(study) == 3 and len(study.trials) == 4
    retry = study.trials[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == stopped.params
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_id"] == stopped.user_attrs["run_id"]
    assert ("tiny-t001", 32) in [(name, state and state["images"]) for name, state in resumed]
    assert result_of(tmp_path, retry)["optuna"] == {**result_of(tmp_path, retry)["optuna"],
                                                    "trial": 1, "attempt": 2, "state": "complete"}
    assert (tmp_path / "results/tt" / first.user_attrs["run_id"] / "result.json").read_bytes() == kept
    assert study.trials[3].state == TrialState.COMPLETE


def test_dead_workers_trial_is_retried_with_its_parameters(tmp_path):
    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "n_trials": 2, "pruner": "none",
                                  "heartbeat": 1})
    session = open_session(load_suite(path), results=tmp_path / "results", progress=False,
                           log=lambda line: None)
    orphan = next_trial(session, None)  # asked, then its worker "dies": no more heartbeats
    time.sleep(3.5)  # past the 2 s grace period (SQLite's clock has whole seconds)
    tune(session)
    dead, retry, fresh = session.study.trials
    assert dead.number == orphan.number and dead.state == TrialState.FAIL
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == dead.params
    assert retry.state == fresh.state == TrialState.COMPLETE
    assert retry.user_attrs["run_id"].startswith("tiny-t000-")


class _Exited:  # a finished worker process
    def __init__(self, returncode: int):
        self.returncode = returncode

    def poll(self) -> int:
        return self.returncode


@pytest.mark.parametrize("returncode", [-9, 1, 2])
def test_pool_retries_killed_workers_and_stops_on_bench_errors(tmp_path, returncode):
    from bench.tune.pool import Pool

    path = write_suite(tmp_path, {"space": {"train.lr": LR}, "n_trials": 2})
    session = open_session(load_suite(path), results=tmp_path / "results", log=lambda line: None)
    pool = Pool(session, 2, [])
    trial = next_trial(session, None)
    if returncode == 2:  # a worker's BenchError: recorded on the trial, then exit code 2
        trial.set_user_attr("error", "search.prune_on: 'fid' is not measured during training")
        session.study.tell(trial, state=TrialState.FAIL)
    pool.active[0] = (_Exited(returncode), trial)
    assert pool._reap() and not pool.active
    trials = session.study.trials
    assert trials[0].state == TrialState.FAIL
    if returncode == -9:  # killed: re-queued with its parameters, counted once
        assert trials[1].state == TrialState.WAITING and trials[1].params == trials[0].params
        assert trials[0].user_attrs["worker_exit"] == -9 and trials_counted(session.study) == 1
    else:
        assert len(trials) == 1
    assert (pool.error is not None) == (returncode == 2)
    if returncode == 2:
        assert pool.error == "trial 0: search.prune_on: 'fid' is not measured during training"


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_worker_processes_share_one_study(tmp_path, storage, request):
    url = request.getfixturevalue("postgres_url") if storage == "postgresql" else None
    path = write_suite(tmp_path, {"space": {"train.lr": LR,
                                            "models.kwargs.dropout": {"choices": [0.0, 0.1]}},
                                  "n_trials": 2, "pruner": "none"})
    assert tune_cli(path, tmp_path, "--workers", "2", *(["--storage", url] if url else [])) == 0
    trials = load_study(tmp_path, url).trials
    assert [t.number for t in trials] == [0, 1]  # n_trials counts the whole study
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params != trials[1].params
    runs = sorted(p.parent.name for p in (tmp_path / "results/tt").glob("*/result.json"))
    assert runs == sorted(t.user_attrs["run_id"] for t in trials)
    assert all(result_of(tmp_path, t)["optuna"]["trial"] == t.number for t in trials)


def test_multi_objective_study_returns_the_pareto_front(tmp_path, capsys):
    path = write_suite(tmp_path, {"space": {"train.lr": LR,
                                            "models.kwargs.base_channels": {"choices": [8, 16]}},
                                  "n_trials": 4, "prune_on": "val_loss",
                                  "objectives": [{"metric": "val_loss"},
                                                 {"metric": "params", "direction": "minimize"}]})
    assert tune_cli(path, tmp_path) == 0
    study = load_study(tmp_path)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    front = study.best_trials

    def dominates(a, b):
        return all(x <= y for x, y in zip(a.values, b.values)) and a.values != b.values

    assert front and not any(dominates(t, f) for t in done for f in front)
    assert all(any(dominates(f, t) for f in front) for t in done if t not in front)
    summary = json.loads((tmp_path / "results/tt/study_summary.json").read_text())
    assert sorted(b["number"] for b in summary["best"]) == sorted(t.number for t in front)
    assert summary["best"][0]["values"].keys() == {"val_loss", "params"}
    assert (tmp_path / "results/tt/study_pareto.png").stat().st_size > 1000
    proxy = load_study(tmp_path).study_name + ".prune_on.val_loss"
    twins = optuna.load_study(study_name=proxy, storage=f"sqlite:///{tmp_path / 'results/tt/study.db'}")
    assert len(twins.trials) == 4 and all(32 in t.intermediate_values for t in twins.trials)
    out = capsys.readouterr().out
    assert "Pareto front" in out and "proxy" in out
