"""Training time without a host sync per step: CUDA events on CUDA, `time.perf_counter` elsewhere.

The loop never reads the device inside a step. Time is measured over segments of steps that end
at a sync point (a log flush, an evaluation, a budget check, the end): on CUDA an event recorded
when the segment opens and one when it closes, `Event.elapsed_time` after synchronizing on the
second (the device timeline, so queued work is counted when it runs); on a CPU, where every op
has finished when it returns, the wall clock. Evaluation happens between segments, so it is never
counted (AlgoPerf's rule: only training-step time is charged to a `seconds` budget).

A `seconds` budget is checked every k steps, k adapted so that the budget is overshot by at most
one step: after a check that has measured `done` seconds and a step time tau (the last segment's
mean), the next check comes after k = max(1, floor((budget - done) / (2 tau))) steps, so with a
step time that does not double within a segment the check lands before the budget, the remaining
time halves at each check, and the last O(1) steps are checked one by one, as a per-step clock
would. That is O(log(budget / tau)) syncs per run instead of one per step.

Under torchrun every measurement is the maximum over the ranks (`bench.dist.all_max` of `done` and
tau), so the ranks share one clock, check a `seconds` budget at the same steps and stop together.
"""
from __future__ import annotations

import math
import time

import torch

from bench import dist


class StepClock:
    """Seconds of training so far (`done`, exact at sync points) and a host-side estimate between."""

    def __init__(self, device: torch.device, done: float = 0.0):
        self.cuda = torch.device(device).type == "cuda"
        self.done, self.tau, self.steps = float(done), None, 0
        self.since_check, self.next_check = 0, 1  # a seconds budget is checked after next_check steps
        self._open()

    def _open(self) -> None:
        self.steps = 0
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def _close(self) -> float:
        """Synchronize and return the seconds of the open segment."""
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return self._start.elapsed_time(end) / 1000
        return time.perf_counter() - self._start

    def step(self) -> None:
        """A training step has been queued (no sync)."""
        self.steps += 1
        self.since_check += 1

    def estimate(self) -> float:
        """`done` plus the open segment's steps at the last measured step time (no sync)."""
        return self.done + self.steps * (self.tau or 0.0)

    def measure(self) -> float:
        """Sync point: close the segment, add it to `done`, update tau, open the next segment."""
        seconds, steps = self._close(), self.steps
        self.done += seconds
        if steps:
            self.tau = seconds / steps
        if dist.active():  # one clock for all ranks: the slowest rank's time
            self.done, tau = dist.all_max(self.done, self.tau or 0.0)
            self.tau = tau or None
        self._open()
        return self.done

    def pause(self) -> float:
        """Before work that is not training (evaluation): measure; `resume` reopens the clock."""
        return self.measure()

    def resume(self) -> None:
        self._open()

    def check_seconds(self, budget: float) -> float:
        """For a `seconds` budget, after each step: measure when due (see module doc) -> `done`."""
        if self.since_check < self.next_check:
            return self.done
        done, self.since_check = self.measure(), 0
        remaining = budget - done
        self.next_check = 1 if remaining <= 0 or not self.tau else max(1, math.floor(remaining / (2 * self.tau)))
        return done
