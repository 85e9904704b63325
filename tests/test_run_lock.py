"""Two `bench run` on one suite and results folder: the second is refused, naming the holder's PID;
a lock whose process died is taken over; the lock file is gone after a run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from bench.cli import main
from bench.run.lock import LOCK, suite_lock

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time; from bench.run.lock import suite_lock\n"
        "with suite_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n")
SUITE = {"name": "locked", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 40},
         "budget": {"steps": 1}, "train": {"batch_size": 4, "device": "cpu"},
         "eval": {"steps": 2, "grid": 1, "sample_batch": 2, "val_images": 2},
         "models": [{"arch": "unet_tiny", "kwargs": {"base_channels": 8}}]}


def test_second_run_is_refused_naming_the_holder_then_a_dead_holder_is_stale(tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    folder = tmp_path / "results" / "locked"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"PID {holder.pid} on " in err[0] and str(folder) in err[0]
        assert sorted(p.name for p in folder.iterdir()) == [LOCK]   # refused before any write
    finally:
        holder.kill()
        holder.wait()
    assert (folder / LOCK).exists()                                 # left behind by the killed holder
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--no-progress"]) == 0
    assert not (folder / LOCK).exists() and (folder / "suite.json").exists()


def test_lock_file_of_a_dead_pid_is_taken_over_and_removed(tmp_path):
    (tmp_path / LOCK).write_text("999999999 elsewhere\n")
    with suite_lock(tmp_path) as path:
        assert path.read_text().split()[0] != "999999999"
    assert not path.exists()
