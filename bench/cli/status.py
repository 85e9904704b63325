"""`python -m bench status results/<suite>`: each planned run (and eval variant) as pending, running
(claimed, with a live heartbeat: its owner and progress), done, or failed (with the reason), read
from the run folders' result.json and claim files (`bench.run.claims`). Reads only.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError
from bench.run.claims import CLAIM, describe, is_stale, owner, stale_seconds
from bench.run.results import RESULT, read_result

STATES = ("done", "running", "failed", "pending")


def add_parser(sub) -> None:
    st = sub.add_parser("status", help="pending / running / done / failed per run of a suite folder")
    st.add_argument("folder", help="a suite's results folder, e.g. results/smoke")
    st.set_defaults(func=run)


def run(args) -> int:
    rows = status_rows(Path(args.folder))
    width = max(len(r[0]) for r in rows) if rows else 3
    print(f"{'run':<{width}}  {'state':<8} detail")
    for run_id, state, detail in rows:
        print(f"{run_id:<{width}}  {state:<8} {detail}")
    counts = {s: sum(r[1] == s for r in rows) for s in STATES}
    print(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def status_rows(folder: Path) -> list[tuple[str, str, str]]:
    """(run id, state, detail) for every planned run of the suite folder, then any other run folder."""
    record = folder / "suite.json"
    if not folder.is_dir() or not record.is_file():
        raise BenchError(f"status: {folder}: not a suite results folder (no suite.json); "
                         "give results/<suite> as written by `bench run`")
    try:
        planned = json.loads(record.read_text()).get("runs") or []
    except (OSError, ValueError, AttributeError):
        raise BenchError(f"status: {record}: unreadable suite record") from None
    found = sorted(p.name for p in folder.iterdir()
                   if p.is_dir() and ((p / RESULT).exists() or (p / CLAIM).exists()))
    stale = stale_seconds()
    return [(run_id, *_state(folder / run_id, stale))
            for run_id in [*planned, *(r for r in found if r not in planned)]]


def _state(run_dir: Path, stale: float) -> tuple[str, str]:
    claim = owner(run_dir)
    try:
        result = read_result(run_dir)
    except BenchError:
        return "pending", f"unreadable {RESULT}: redone by the next `bench run`"
    result = result or {}
    progress = _progress(result)
    if result.get("status") == "complete":
        return "done", _metric(result)
    if claim is not None and not is_stale(claim, stale):
        return "running", f"{describe(claim)}{progress}"
    if result.get("failure") or result.get("status") == "failed":
        failure = result.get("failure") or {}
        reason = (f"{failure['reason']} at step {failure.get('step')}" if failure.get("reason")
                  else result.get("error") or "unknown")
        return "failed", f"{reason} (--retry-failed runs it again)"
    if claim is not None:
        return "pending", f"stale claim of {describe(claim)}: the next worker takes it over{progress}"
    if result:
        return "pending", f"{result.get('status', 'partial')}; resumes{progress}"
    return "pending", "not started"


def _progress(result: dict) -> str:
    budget = result.get("budget") or {}
    if "kimg" not in budget:
        return ""
    return f"; at {budget['kimg']:g} kimg, step {budget.get('steps')} of {budget.get('unit')} " \
           f"{budget.get('requested')}"


def _metric(result: dict) -> str:
    metrics = result.get("metrics") or {}
    shown = [f"{k} {metrics[k]:.4g}" for k in ("val_loss", "fid") if isinstance(metrics.get(k), float)]
    budget = result.get("budget") or {}
    return ", ".join([*shown, f"{budget.get('kimg', 0):g} kimg"])
