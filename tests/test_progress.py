"""The suite-level progress line of `bench run` (bench.run.progress): run i/N, elapsed, ETA."""
from __future__ import annotations

import re

import pytest
import yaml

from bench.cli import main
from bench.run.progress import SuiteProgress

SUITE = {"name": "prog", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 24},
         "budget": {"steps": 2}, "train": {"batch_size": 4, "device": "cpu"},
         "eval": {"steps": 2, "grid": 1, "sample_batch": 2, "val_images": 2},
         "models": [{"arch": "unet_tiny", "name": "a", "kwargs": {"base_channels": 8}}],
         "seeds": [0, 1, 2]}
LINE = re.compile(r"^run (\d+)/(\d+) (\S+) seed (\d+) · elapsed ((?:\d+:)?\d\d:\d\d) · ETA ((?:\d+:)?\d\d:\d\d|\?)$")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def test_eta_is_the_mean_of_trained_runs_times_the_runs_left():
    now = [0.0]
    bar = SuiteProgress(total=5, to_do=3, clock=lambda: now[0])   # 2 of 5 already complete
    assert bar.begin(3, "x", 0) == "run 3/5 x seed 0 · elapsed 00:00 · ETA ?"
    now[0] = 60.0
    bar.end()
    assert bar.begin(4, "x", 1) == "run 4/5 x seed 1 · elapsed 01:00 · ETA 02:00"  # 60 s x 2 left
    now[0] = 150.0                                                   # this one took 90 s
    bar.end()
    assert bar.begin(5, "x", 2) == "run 5/5 x seed 2 · elapsed 02:30 · ETA 01:15"  # 75 s x 1 left
    now[0] = 4000.0                                                  # 3850 s: past an hour
    bar.end()
    assert bar.seconds == [60.0, 90.0, 3850.0] and bar.eta() == "00:00"
    assert SuiteProgress(2, 2, clock=lambda: 0.0).begin(1, "y", 3).endswith("ETA ?")
    hour = SuiteProgress(3, 3, clock=lambda: now[0])
    hour.seconds = [3700.0]
    assert hour.eta() == "2:03:20"                                    # 3700 s x 2 left


def test_bench_run_prints_one_line_per_run_on_stderr_and_none_when_quiet(tmp_path, capsys):
    path, results = tmp_path / "prog.yaml", tmp_path / "r"
    path.write_text(yaml.safe_dump(SUITE))
    assert main(["run", str(path), "--results", str(results)]) == 0
    out = capsys.readouterr()
    lines = [m.groups() for m in map(LINE.match, out.err.splitlines()) if m]
    assert [(g[0], g[1], g[2], g[3]) for g in lines] == [("1", "3", "a", "0"), ("2", "3", "a", "1"),
                                                         ("3", "3", "a", "2")]
    assert lines[0][5] == "?" and all(re.fullmatch(r"(?:\d+:)?\d\d:\d\d", g[5]) for g in lines[1:])
    assert not any(LINE.match(s) for s in out.out.splitlines())     # stdout keeps the CI lines
    assert main(["run", str(path), "--results", str(results), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert out.out.count("complete, skipped") == 3 and not any(map(LINE.match, out.err.splitlines()))
