"""What state a run folder is in, read from its result.json: complete, failed, partial, none.

Used by the runner (skip, retry, redo an unreadable result) and by `bench status` / the CLI (is
every run of the suite finished, so that the leaderboard can be written). Reads only, except
`status_or_redo`, which removes an unreadable result.json (called under the run's claim).
"""
from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError, warn
from bench.run.results import RESULT, read_result

FINISHED = ("complete", "failed")


def recorded_status(run_dir: Path) -> str | None:
    """"complete" | "failed" | another recorded status | None (no result); BenchError if unreadable."""
    result = read_result(run_dir)
    if result is None:
        return None
    return "failed" if result.get("failure") else result.get("status")


def status_or_redo(run_dir: Path) -> str | None:
    """The run's recorded status; an unreadable result.json is reported and the run redone."""
    try:
        return recorded_status(run_dir)
    except BenchError as err:
        warn(f"{err}; the run is redone")
        (run_dir / RESULT).unlink(missing_ok=True)
        return None


def skip_reason(run_dir: Path, retry_failed: bool, started: float) -> str | None:
    """Why an invocation begun at `started` does not train the run (read-only), or None: it is to
    be trained. A failure recorded after `started` (by another worker) is never retried."""
    try:
        status = recorded_status(run_dir)
    except BenchError:
        return None
    if status == "complete":
        return "complete, skipped"
    if status == "failed":
        if not retry_failed:
            return "failed earlier, skipped (--retry-failed runs it again)"
        if (run_dir / RESULT).stat().st_mtime >= started:
            return "failed (retried by another worker), skipped"
    return None


def unfinished(suite, out: Path) -> list[str]:
    """Run and evaluation ids of `suite` under `out` neither complete nor failed (read-only)."""
    ids = [s.run_id for s in suite.runs] + [e.eval_id for e in suite.evaluations
                                            if e.variant is not None]
    left = []
    for run_id in ids:
        try:
            status = recorded_status(out / run_id)
        except BenchError:
            status = None
        if status not in FINISHED:
            left.append(run_id)
    return left
