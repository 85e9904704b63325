"""TensorBoard event files of a run's curves (bench.run.tensorboard): readable by tensorboard's
own event reader with the exact logged values, rewritten (never duplicated) on resume, and
skipped with one info line when tensorboard is absent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import bench.run.tensorboard as tb
from bench.cli import main

SUITE = {"name": "tb", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 24},
         "budget": {"steps": 6}, "train": {"batch_size": 4, "device": "cpu", "log_every": 1},
         "eval": {"steps": 2, "grid": 1, "sample_batch": 2, "val_images": 2, "every_kimg": 0.008},
         "models": [{"arch": "unet_tiny", "name": "a", "kwargs": {"base_channels": 8}}]}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def _run(tmp_path: Path, *flags) -> Path:
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress", *flags]) == 0
    (run,) = [p for p in (tmp_path / "r" / "tb").iterdir() if p.name.startswith("a-s0-")]
    return run


def _events(run: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    files = list((run / tb.EVENTS_DIR).glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    acc = accumulator.EventAccumulator(str(run / tb.EVENTS_DIR))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(p["step"], pytest.approx(p[key], rel=1e-6, abs=1e-12)) for p in history if key in p]


def test_event_files_hold_the_exact_curves_of_the_result(tmp_path):
    pytest.importorskip("tensorboard")
    run = _run(tmp_path)
    history = json.loads((run / "result.json").read_text())["history"]
    events = _events(run)
    assert events["train/loss"] == _expected(history, "train_loss")
    assert [s for s, _ in events["train/loss"]] == [1, 2, 3, 4, 5, 6]    # log_every 1, 6 steps
    assert events["train/lr"] == _expected(history, "lr")
    assert events["eval/val_loss"] == _expected(history, "val_loss")
    assert len(events["eval/val_loss"]) == 3                           # every 8 images = 2 steps
    assert "eval/kimg" not in events and "eval/step" not in events


def test_a_resumed_run_rewrites_its_events_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    run = _run(tmp_path)
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "status": "running"}))  # interrupted
    run = _run(tmp_path)            # resumes from the last evaluation's checkpoint
    history = json.loads((run / "result.json").read_text())["history"]
    events = _events(run)
    for tag, key in (("train/loss", "train_loss"), ("eval/val_loss", "val_loss")):
        assert events[tag] == _expected(history, key)
        steps = [s for s, _ in events[tag]]
        assert steps == sorted(set(steps))                             # no step twice
    assert not list(run.glob(".bench-tmp-*"))


def test_without_tensorboard_one_info_line_and_no_event_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tb, "SummaryWriter", None)
    run = _run(tmp_path)
    out = capsys.readouterr().out
    assert out.count(tb.NOT_INSTALLED) == 1 and not (run / tb.EVENTS_DIR).exists()
    assert json.loads((run / "result.json").read_text())["status"] == "complete"


def test_no_tensorboard_flag_writes_no_events_and_says_nothing(tmp_path, capsys):
    run = _run(tmp_path, "--no-tensorboard")
    assert not (run / tb.EVENTS_DIR).exists() and tb.NOT_INSTALLED not in capsys.readouterr().out
