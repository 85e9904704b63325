"""Per-run claims (bench.run.claims): of many processes claiming one run folder at once exactly one
wins; of many taking over one stale claim exactly one wins; staleness by heartbeat age and by a dead
owner on this host; the heartbeat advances; an owner whose claim was taken over stops (ClaimLost)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.run.claims import (
    CLAIM,
    STALE_ENV,
    ClaimLost,
    claimed,
    is_stale,
    owner,
    stale_seconds,
    try_claim,
)

ROOT = Path(__file__).resolve().parent.parent
RACE = """
import os, sys, time
from bench.run.claims import try_claim
folder, start, release = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    pass
claim = try_claim(folder, stale=60)
print("won" if claim else "lost", claim.took_over["pid"] if claim and claim.took_over else "", flush=True)
while not os.path.exists(release):               # hold it until every process has tried
    time.sleep(0.01)
if claim:
    claim.release()
"""


def _race(folder: Path, n: int = 8) -> list[str]:
    start = time.time() + 2.0                     # every process spins until the same instant
    release = folder.parent / f"{folder.name}.release"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(folder), str(start), str(release)],
                              env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    outcomes = [p.stdout.readline().strip() for p in procs]   # all have tried; the winner holds
    release.touch()
    for p in procs:
        p.communicate(timeout=60)
    return outcomes


def test_many_processes_claiming_one_run_exactly_one_wins(tmp_path):
    outcomes = _race(tmp_path / "run")
    assert sorted(o.split()[0] for o in outcomes) == ["lost"] * 7 + ["won"]
    assert not (tmp_path / "run" / CLAIM).exists()  # released by the winner on exit


def test_many_processes_taking_over_one_stale_claim_exactly_one_wins(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM).write_text(json.dumps({"pid": 4_000_000, "host": socket.gethostname(),
                                         "token": "dead"}))   # no such PID on this host
    outcomes = _race(run)
    assert sorted(o.split()[0] for o in outcomes) == ["lost"] * 7 + ["won"]
    (won,) = [o.split()[1:] for o in outcomes if o.startswith("won")]
    assert won in (["4000000"], [])   # [] : won by creating the claim in the instant after the
                                      # taker moved the stale one aside (that taker then lost)
    assert sorted(p.name for p in run.iterdir()) == []          # no moved-aside file left behind


def test_stale_by_heartbeat_age_or_dead_owner_and_the_heartbeat_advances(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM).write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t"}))
    info = owner(run)
    assert info["alive"] is None and info["age"] < 1.0
    assert try_claim(run, stale=30) is None                      # another host, fresh heartbeat
    old = time.time() - 31
    os.utime(run / CLAIM, (old, old))
    assert is_stale(owner(run), 30)
    with try_claim(run, stale=0.4) as claim:                      # taken over: heartbeat too old
        assert claim.took_over["host"] == "elsewhere"
        assert json.loads((run / CLAIM).read_text())["pid"] == os.getpid()
        first = os.stat(run / CLAIM).st_mtime
        time.sleep(0.35)
        assert os.stat(run / CLAIM).st_mtime > first               # beats every stale / 4 s
        assert owner(run)["alive"] is True and try_claim(run, stale=0.4) is None
    assert not (run / CLAIM).exists()


def test_an_owner_whose_claim_was_taken_over_stops_without_removing_the_new_claim(tmp_path):
    claim = try_claim(tmp_path, stale=0.2)
    claim._stop.set()                          # its heartbeat stops (a frozen process)
    claim._thread.join()
    claim._stop.clear()
    time.sleep(0.3)
    with try_claim(tmp_path, stale=0.2) as taker:
        assert taker.took_over["pid"] == os.getpid()
        assert not claim.held()
        claim.lost = not claim.held()
        with pytest.raises(ClaimLost):
            claim.check("train", None)
        claim.release()                        # must not remove the taker's claim
        assert taker.held()


def test_claimed_skips_live_claims_without_wait_and_finds_each_item_once(tmp_path, monkeypatch):
    monkeypatch.setenv(STALE_ENV, "30")
    folders = {i: tmp_path / f"r{i}" for i in range(3)}
    other = try_claim(folders[1])
    lines = []
    got = [i for i, c in claimed(range(3), folders.get, lambda i: True, log=lines.append,
                                 wait=False)]
    assert got == [0, 2] and len(lines) == 1 and f"PID {os.getpid()}" in lines[0]
    other.release()
    assert [i for i, _ in claimed(range(3), folders.get, lambda i: i == 1, wait=False)] == [1]


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_stale_timeout_is_one_line(monkeypatch, text):
    monkeypatch.setenv(STALE_ENV, text)
    with pytest.raises(BenchError, match=r"^\$BENCH_CLAIM_STALE_S: .* positive number"):
        stale_seconds()
