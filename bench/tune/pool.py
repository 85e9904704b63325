"""Trial workers: `--workers N` runs N trials at a time, each in its own subprocess.

Each worker is `python -m bench tune SUITE --trial-id ID` (the same command, told which asked trial
to run), so a trial's GPU memory is released with its process; with several GPUs visible, worker
slot k is pinned to GPU k mod n through CUDA_VISIBLE_DEVICES (as `torchrun`-less launchers do). A
worker killed by a signal has its trial re-queued with the same parameters (Optuna's
`RetryHeartbeatStaleTrialCallback`, which also serves heartbeats that went stale on other machines).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import optuna
import torch
from optuna.trial import TrialState

from bench.errors import BenchError
from bench.tune.study import STORAGE_ENV, Session, describe, next_trial


class Pool:
    """`workers` trial subprocesses at a time, each `python -m bench tune ... --trial-id ID`."""

    def __init__(self, s: Session, workers: int, overrides: list[str]):
        self.s, self.workers, self.overrides = s, workers, list(overrides)
        self.active: dict[int, tuple[subprocess.Popen, optuna.Trial]] = {}  # slot -> worker
        self.error: str | None = None

    def run(self, deadline: float | None) -> None:
        exhausted = False
        try:
            while True:
                changed = self._reap()
                free = [i for i in range(self.workers) if i not in self.active]
                if free and not self.error and (changed or not exhausted):
                    trial = next_trial(self.s, deadline)
                    exhausted = trial is None
                    if trial is not None:
                        self.active[free[0]] = (self._spawn(trial, free[0]), trial)
                        continue
                if not self.active and (exhausted or self.error):
                    break
                time.sleep(0.2)
        except KeyboardInterrupt:
            self._interrupt()
            raise
        if self.error:
            raise BenchError(self.error)

    def _spawn(self, trial: optuna.Trial, slot: int) -> subprocess.Popen:
        s = self.s
        cmd = [sys.executable, "-m", "bench", "tune", s.suite.path, "--results",
               str(s.folder.parent), "--study", s.study.study_name, "--trial-id",
               str(trial._trial_id), "--no-progress", *[f"--set={o}" for o in self.overrides]]
        env = {**os.environ, **gpu_env(slot), STORAGE_ENV: s.storage.url}  # no password in `ps`
        return subprocess.Popen(cmd, env=env)

    def _reap(self) -> bool:
        changed = False
        for slot, (proc, trial) in list(self.active.items()):
            if proc.poll() is None:
                continue
            del self.active[slot]
            changed = True
            t = self.s.storage.get_trial(trial._trial_id)
            if t.state == TrialState.RUNNING:  # the worker died before telling
                trial.set_user_attr("worker_exit", proc.returncode)
                self.s.study.tell(trial, state=TrialState.FAIL)
                if proc.returncode < 0:  # killed by a signal: run it again, same parameters
                    optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=self.s.search.retries, inherit_intermediate_values=True)(
                        self.s.study, self.s.storage.get_trial(trial._trial_id))
                t = self.s.storage.get_trial(trial._trial_id)
            if proc.returncode == 2 and not t.user_attrs.get("interrupted"):
                self.error = f"trial {t.number}: {t.user_attrs.get('error', 'worker failed (see above)')}"
            self.s.log(describe(self.s, t))
        return changed

    def _interrupt(self) -> None:
        """Ctrl-C reached the workers too (one process group): let them record it, then insist."""
        procs = [proc for proc, _ in self.active.values()]
        for grace, insist in ((5, None), (60, lambda p: p.send_signal(signal.SIGINT)),
                              (None, lambda p: p.kill())):
            for proc in procs:
                if proc.poll() is None and insist:
                    insist(proc)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
        for _, trial in self.active.values():
            if self.s.storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    trial.set_user_attr("interrupted", True)
                    self.s.study.tell(trial, state=TrialState.FAIL)


def gpu_env(slot: int) -> dict:
    """CUDA_VISIBLE_DEVICES for worker `slot` when several GPUs are visible (round robin)."""
    n = torch.cuda.device_count()
    if n < 2:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(n)]
    return {"CUDA_VISIBLE_DEVICES": ids[slot % len(ids)].strip()}
