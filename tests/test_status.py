"""`bench status results/<suite>`: one row per planned run (then any other run folder) as done,
running (a live claim: owner, heartbeat, progress), failed (the reason), or pending (not started,
partial, stale claim, unreadable result); a folder that is not a suite's is one line, exit 2."""
from __future__ import annotations

import json
import os
import socket

from bench.cli import main
from bench.run.claims import CLAIM, try_claim

BUDGET = {"unit": "kimg", "requested": 0.064, "kimg": 0.032, "images": 32, "steps": 8}


def write(folder, run_id: str, result: dict | None = None, text: str | None = None) -> None:
    (folder / run_id).mkdir(parents=True, exist_ok=True)
    if result is not None or text is not None:
        (folder / run_id / "result.json").write_text(text if text is not None else json.dumps(result))


def test_status_table_names_each_state(tmp_path, capsys):
    folder = tmp_path / "suite"
    runs = ["done-s0", "fail-s0", "live-s0", "stale-s0", "partial-s0", "new-s0", "torn-s0"]
    folder.mkdir()
    (folder / "suite.json").write_text(json.dumps({"name": "suite", "runs": runs}))
    write(folder, "done-s0", {"status": "complete", "metrics": {"val_loss": 0.25},
                              "budget": {**BUDGET, "kimg": 0.064}})
    write(folder, "fail-s0", {"status": "failed", "failure": {"reason": "non-finite training loss",
                                                              "step": 7}, "budget": BUDGET})
    write(folder, "live-s0", {"status": "running", "budget": BUDGET})
    write(folder, "stale-s0", {"status": "running", "budget": BUDGET})
    (folder / "stale-s0" / CLAIM).write_text(json.dumps({"pid": 4_000_000, "host": socket.gethostname(),
                                                         "slurm_job": "77_1"}))
    write(folder, "partial-s0", {"status": "interrupted", "budget": BUDGET})
    write(folder, "torn-s0", text='{"status": "comp')
    write(folder, "extra@v-s0", {"status": "complete", "metrics": {}, "budget": BUDGET})
    with try_claim(folder / "live-s0", stale=60):
        assert main(["status", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == [*runs, "extra@v-s0"]
    state = {run: row.split()[1] for run, row in rows.items()}
    assert state == {"done-s0": "done", "fail-s0": "failed", "live-s0": "running",
                     "stale-s0": "pending", "partial-s0": "pending", "new-s0": "pending",
                     "torn-s0": "pending", "extra@v-s0": "done"}
    assert "val_loss 0.25" in rows["done-s0"] and "0.064 kimg" in rows["done-s0"]
    assert "non-finite training loss at step 7" in rows["fail-s0"]
    assert f"PID {os.getpid()} on {socket.gethostname()}" in rows["live-s0"]
    assert "at 0.032 kimg, step 8 of kimg 0.064" in rows["live-s0"]
    assert "stale claim of PID 4000000 on " in rows["stale-s0"] and "process gone" in rows["stale-s0"]
    assert "(Slurm job 77_1)" in rows["stale-s0"]
    assert "interrupted; resumes" in rows["partial-s0"] and "not started" in rows["new-s0"]
    assert "unreadable result.json" in rows["torn-s0"]
    assert lines[-1] == "8 runs: 2 done, 1 running, 1 failed, 4 pending"


def test_status_of_a_folder_that_is_not_a_suite_is_one_line(tmp_path, capsys):
    for folder in (tmp_path / "missing", tmp_path):
        assert main(["status", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(folder) in err and "no suite.json" in err
