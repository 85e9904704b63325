"""Local workers and concurrent `bench run`s on one results folder (issue 12 item 1, issue 15 item
6): `--workers 2` on a 4-run tiny suite with one worker SIGKILLed mid-run finishes every run exactly
once (its run taken over by the other worker and resumed), every file whole, no claim or temp file
left, the leaderboard written once all are done; two `bench run` commands at once never train the
same run; `--devices` without CUDA and bad `--workers` are one-line errors."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bench.cli import main
from bench.config.suite import load_suite
from bench.run import runner
from bench.run.claims import CLAIM, STALE_ENV
from bench.run.results import TEMP_PREFIX

ROOT = Path(__file__).resolve().parent.parent


def tiny_suite(tmp_path: Path, name: str, archs: int = 2, kimg: float = 0.064) -> Path:
    """`archs` entries x 2 seeds of unet_tiny at 8 px, `kimg` thousand images at batch 4."""
    suite = {"name": name, "data": {"dataset": "synthetic", "image_size": 8, "num_images": 40},
             "budget": {"kimg": kimg}, "train": {"batch_size": 4, "device": "cpu"},
             "eval": {"steps": 2, "grid": 1, "sample_batch": 2, "val_images": 2,
                      "every_kimg": 0.016},
             "models": [{"arch": "unet_tiny", "name": f"w{8 * (i + 1)}",
                         "kwargs": {"base_channels": 8 * (i + 1)}} for i in range(archs)],
             "seeds": [0, 1]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def bench_env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_CACHE": str(tmp_path / "cache"),
            STALE_ENV: "3", "OMP_NUM_THREADS": "1"}


def trained_lines(log: str) -> dict[str, int]:
    """How many times each run id was started in training, from `[i/n] <run>: <arch>, seed s`."""
    counts: dict[str, int] = {}
    for run_id in re.findall(r"\[\d+/\d+\] (\S+): unet_tiny, seed \d", log):
        counts[run_id] = counts.get(run_id, 0) + 1
    return counts


def check_folder(out: Path, runs: int, images: int) -> dict[str, dict]:
    """Every run complete with exactly its budget and a clean history; nothing torn or left over."""
    results = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}
    assert len(results) == runs and all(r["status"] == "complete" for r in results.values())
    for r in results.values():
        assert r["budget"]["images"] == images                       # the budget, spent once
        steps = [p["step"] for p in r["history"] if "val_loss" in p]
        assert steps == sorted(set(steps)) and steps[-1] == images // 4
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name == CLAIM]
    for path in out.rglob("*.json"):
        json.loads(path.read_text())                                  # no torn file
    assert len(pd.read_csv(out / "leaderboard.csv")) == runs // 2    # one row per entry
    return results


def kill_a_worker_mid_run(out: Path, parent: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    """SIGKILL the owner of the first claimed run that has a checkpoint but is not complete."""
    deadline = time.time() + timeout
    while time.time() < deadline and parent.poll() is None:
        for claim in out.glob(f"*/{CLAIM}"):
            run = claim.parent
            try:
                pid = json.loads(claim.read_text())["pid"]
                status = json.loads((run / "result.json").read_text())["status"]
            except (OSError, ValueError, KeyError):
                continue
            if (run / "checkpoint.pt").exists() and status == "running" and pid != parent.pid:
                os.kill(pid, signal.SIGKILL)
                return pid, run.name
        time.sleep(0.02)
    pytest.fail("no worker was ever caught mid-run")


def test_two_workers_one_killed_mid_run_finish_every_run_exactly_once(tmp_path):
    path = tiny_suite(tmp_path, "four")
    out = tmp_path / "r" / "four"
    parent = subprocess.Popen([sys.executable, "-m", "bench", "run", str(path), "--results",
                               str(tmp_path / "r"), "--workers", "2", "--no-tensorboard"],
                              cwd=ROOT, env=bench_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    killed, run_id = kill_a_worker_mid_run(out, parent)
    log = parent.communicate(timeout=300)[0]
    assert parent.returncode == 1, log                       # a worker died: said, not hidden
    assert re.search(r"worker \d: exit code -9", log), log
    results = check_folder(out, runs=4, images=64)
    counts = trained_lines(log)
    assert sorted(counts) == sorted(results)                 # every run was trained...
    assert counts == {r: 2 if r == run_id else 1 for r in results}, log   # ...once, but the killed
    assert f"{run_id}: took over the stale claim of PID {killed} on " in log  # one, resumed
    started = [int(w) for w in re.findall(rf"\[worker (\d)\] \[\d/4\] {run_id}: unet_tiny", log)]
    assert len(set(started)) == 2                            # by the other worker
    assert "leaderboard: " in log


def test_two_bench_runs_at_once_never_train_the_same_run(tmp_path):
    path = tiny_suite(tmp_path, "pair", kimg=0.064)   # runs long enough that both get work
    cmd = [sys.executable, "-m", "bench", "run", str(path), "--results", str(tmp_path / "r"),
           "--no-progress", "--no-tensorboard"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=bench_env(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    results = check_folder(tmp_path / "r" / "pair", runs=4, images=64)
    counts = [trained_lines(log) for log in logs]
    merged = {r: sum(c.get(r, 0) for c in counts) for r in results}
    assert merged == dict.fromkeys(results, 1), logs        # each run trained by one of them
    assert all(counts), logs                                 # and both did some of the work


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA error needs a machine without CUDA")
@pytest.mark.parametrize("flags, message", [
    (["--devices", "all"], "--devices all: no CUDA device on this machine"),
    (["--workers", "0"], "--workers: 0 is not a positive number of workers"),
    (["--workers", "2", "--executor", "local"], "--executor: submits one job per run"),
])
def test_bad_scale_out_flags_are_one_line_errors_before_any_work(tmp_path, capsys, flags, message):
    path = tiny_suite(tmp_path, "bad")
    code = main(["run", str(path), "--results", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_a_worker_whose_claim_is_taken_over_stops_at_its_next_evaluation_writing_nothing(
        tmp_path, monkeypatch):
    """A frozen worker's claim taken over (here: replaced by another owner's mid-run): its
    heartbeat thread sees it, the next evaluation stops the run, nothing more is written by it."""
    monkeypatch.setenv(STALE_ENV, "0.4")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    suite = load_suite(str(tiny_suite(tmp_path, "lost", archs=1, kimg=0.032)), ["seeds=[0]"])
    real, foreign = runner.validation_loss, {"pid": 1, "host": "elsewhere", "token": "theirs"}

    def taken_over(*args, **kwargs):
        for claim in (tmp_path / "r" / "lost").glob(f"*/{CLAIM}"):
            claim.unlink()
            claim.write_text(json.dumps(foreign))     # another worker's claim now
        time.sleep(0.3)                              # a heartbeat (every 0.1 s) sees it
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "validation_loss", taken_over)
    lines = []
    out = runner.run_suite(suite, tmp_path / "r", progress=False, log=lines.append,
                           tensorboard=False)
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert any("claim taken over by another worker; it finishes the run" in x for x in lines), lines
    assert not (run / "result.json").exists() and not (run / "checkpoint.pt").exists()
    assert json.loads((run / CLAIM).read_text()) == foreign          # the new owner's claim kept
