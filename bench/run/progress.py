"""The suite-level progress line printed above each run's tqdm bar (`bench run` without
`--no-progress`): `run i/N <entry> seed s · elapsed 1:02 · ETA 3:10`, on stderr.

The ETA is the mean wall time of the runs trained in this invocation times the runs still to do
(this one included); a run skipped as complete counts as done at once and is left out of the mean,
so a resumed suite's ETA is not dragged down by its skips. Before any run has finished there is no
mean and the ETA reads `?`. Times use tqdm's `format_interval` (M:SS, or H:MM:SS past an hour).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm


class SuiteProgress:
    """Counts the suite's runs and the seconds each trained one took; `line` is what to print."""

    def __init__(self, total: int, to_do: int, *, clock: Callable[[], float] = time.perf_counter):
        self.total, self.to_do, self.clock = total, to_do, clock
        self.start, self.seconds = clock(), []    # wall seconds of each run trained so far
        self._run_start: float | None = None

    def begin(self, i: int, entry: str, seed: int) -> str:
        """Start run `i` (1-based) and return its progress line."""
        self._run_start = self.clock()
        elapsed = self._run_start - self.start
        return (f"run {i}/{self.total} {entry} seed {seed} · elapsed "
                f"{tqdm.format_interval(elapsed)} · ETA {self.eta()}")

    def end(self) -> None:
        """The run begun last has finished (trained, or failed after training started)."""
        if self._run_start is not None:
            self.seconds.append(self.clock() - self._run_start)
            self._run_start = None

    def eta(self) -> str:
        """Time left for the suite: the mean run time times the runs not yet finished."""
        if not self.seconds:
            return "?"
        left = max(self.to_do - len(self.seconds), 0)
        return tqdm.format_interval(sum(self.seconds) / len(self.seconds) * left)


def to_stderr(line: str) -> None:
    """Print a progress line on stderr (above the tqdm bar, which also writes there)."""
    print(line, file=sys.stderr, flush=True)
