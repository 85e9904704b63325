"""Runs and results folders under bad state: a diverging run, a corrupt result.json, a truncated or
code-running checkpoint, a write killed half-way. None of them blocks the suite or runs code."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bench.cli import main
from bench.run.results import TEMP_PREFIX, plain

ROOT = Path(__file__).resolve().parent.parent
SUITE = {"name": "safe", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 40},
         "budget": {"steps": 4}, "train": {"batch_size": 4, "device": "cpu", "log_every": 1},
         "eval": {"steps": 2, "grid": 1, "sample_batch": 2, "val_images": 2, "every_kimg": 0.008},
         "models": [{"arch": "unet_tiny", "name": "good", "kwargs": {"base_channels": 8}}]}
DIVERGES = {"arch": "unet_tiny", "name": "diverges", "kwargs": {"base_channels": 8},
            "overrides": {"train": {"lr": 1e30, "grad_clip": None}, "budget": {"steps": 40}}}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def suite(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "safe.yaml"
    path.write_text(yaml.safe_dump({**SUITE, **changes}))
    return path


def bench(capsys, *argv) -> tuple[int, str, str]:
    code = main([*argv, "--no-progress"] if argv[0] == "run" else list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def run_dirs(results: Path) -> dict[str, Path]:
    return {p.name.split("-s0-")[0]: p for p in (results / "safe").iterdir()
            if p.is_dir() and p.name != "plots"}


def test_a_diverging_run_stops_fails_with_its_step_and_the_suite_completes(tmp_path, capsys):
    path, results = suite(tmp_path, models=[SUITE["models"][0], DIVERGES]), tmp_path / "r"
    code, out, err = bench(capsys, "run", str(path), "--results", str(results))
    assert code == 0, err
    runs = run_dirs(results)
    bad = json.loads((runs["diverges"] / "result.json").read_text())
    assert bad["status"] == "failed" and bad["failure"]["reason"] == "non-finite training loss"
    step = bad["failure"]["step"]
    assert 1 <= step < 40 and not np.isfinite(float(bad["failure"]["loss"]))
    assert all(p["step"] < step for p in bad["history"])       # stopped at once: nothing after it
    assert "non-finite training loss" in out and "--retry-failed" in out
    assert json.loads((runs["good"] / "result.json").read_text())["status"] == "complete"
    table = pd.read_csv(results / "safe" / "leaderboard.csv")
    flagged = table.set_index("entry")
    assert flagged.loc["good", "rank"] == 1 and pd.isna(flagged.loc["diverges", "rank"])
    assert "1 of 1 seeds" in flagged.loc["diverges", "flag"]
    code, out, _ = bench(capsys, "run", str(path), "--results", str(results))
    assert code == 0 and "failed earlier" in out and "skipped" in out   # not retried unasked
    code, out, _ = bench(capsys, "run", str(path), "--results", str(results), "--retry-failed")
    assert code == 0 and "retrying" in out and out.count("non-finite training loss") == 1


def _complete_run(tmp_path, capsys) -> tuple[Path, Path, Path]:
    path, results = suite(tmp_path), tmp_path / "r"
    assert bench(capsys, "run", str(path), "--results", str(results))[0] == 0
    return path, results, run_dirs(results)["good"]


def test_a_corrupt_result_json_is_one_line_and_the_run_is_redone(tmp_path, capsys):
    other = {**SUITE["models"][0], "name": "other"}
    path, results = suite(tmp_path, models=[SUITE["models"][0], other]), tmp_path / "r"
    assert bench(capsys, "run", str(path), "--results", str(results))[0] == 0
    run = run_dirs(results)["good"]
    (run / "result.json").write_text('{"status": "compl')
    code, out, err = bench(capsys, "report", str(results / "safe"))   # the report still completes
    assert code == 0 and err.strip().splitlines() == [
        f"bench: warning: {run / 'result.json'}: unreadable result (JSONDecodeError: "
        f"Unterminated string starting at: line 1 column 12 (char 11)); skipped"]
    assert "other" in out
    code, out, err = bench(capsys, "run", str(path), "--results", str(results))
    assert code == 0, err
    lines = [line for line in (out + err).splitlines() if "result.json" in line and "unreadable" in line]
    assert len(lines) == 1 and str(run / "result.json") in lines[0] and "redone" in lines[0]
    assert json.loads((run / "result.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("damage", ["truncated", "empty", "pickle"])
def test_a_bad_checkpoint_is_one_line_and_the_run_starts_over(tmp_path, capsys, damage):
    path, results, run = _complete_run(tmp_path, capsys)
    marker = tmp_path / "pwned"
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "status": "running"}))  # interrupted run
    ckpt = run / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        plant_pickle(ckpt, marker)
    code, out, err = bench(capsys, "run", str(path), "--results", str(results))
    assert code == 0, err
    lines = [line for line in (out + err).splitlines() if str(ckpt) in line]
    assert len(lines) == 1 and "starts over" in lines[0], out + err
    assert not marker.exists()
    assert json.loads((run / "result.json").read_text())["status"] == "complete"
    assert torch.load(ckpt, weights_only=True)["step"] == 4      # rewritten, plain tensors


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path: Path, marker: Path) -> None:
    torch.save({"model": _RunsCode(marker), "step": 1}, path)


def test_bench_eval_refuses_a_code_running_checkpoint(tmp_path, capsys):
    _, _, run = _complete_run(tmp_path, capsys)
    marker = tmp_path / "pwned"
    plant_pickle(run / "checkpoint.pt", marker)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    code, _, err = bench(capsys, "eval", str(run), "--fid-n", "2", "--curves", "n", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1, err
    assert str(run / "checkpoint.pt") in err and "refused" in err
    assert not marker.exists() and before == {p: p.stat().st_mtime_ns for p in run.rglob("*")}


KILL_IN_SAVE = """
import os, signal, sys, torch
real = torch.save
def save(obj, f, *a, **k):
    real(obj, f, *a, **k)
    if str(f).endswith('.pt'):
        os.kill(os.getpid(), signal.SIGKILL)      # dies after the temp file is written, before rename
torch.save = save
from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_write_leaves_no_temp_file_after_the_next_start(tmp_path, capsys):
    path, results = suite(tmp_path), tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, "run", str(path), "--results",
                           str(results), "--no-progress"], cwd=ROOT, env=env, capture_output=True)
    assert proc.returncode == -9
    left = [p for p in results.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert left and all(p.parent.parent == results / "safe" for p in left)  # in the run folder
    code, out, err = bench(capsys, "run", str(path), "--results", str(results))
    assert code == 0, err
    assert not [p for p in results.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert json.loads((run_dirs(results)["good"] / "result.json").read_text())["status"] == "complete"


def test_checkpoints_hold_only_plain_types():
    state = {"step": 3, "history": [{"fid_proxy": np.float64(1.5), "n": np.int64(2)}],
             "gen": torch.Generator().manual_seed(0).get_state(), "arr": np.zeros(2, np.float32)}
    blob = plain(state)
    assert type(blob["history"][0]["fid_proxy"]) is float and type(blob["history"][0]["n"]) is int
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"plain-{os.getpid()}.pt"
    torch.save(blob, path)
    try:
        back = torch.load(path, weights_only=True)
    finally:
        path.unlink()
    assert torch.equal(back["gen"], state["gen"]) and back["arr"].tolist() == [0.0, 0.0]


def _call(text: str, start: int) -> str:
    """The source of the call whose '(' is at `start` (up to its matching ')')."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def test_every_torch_load_in_bench_is_weights_only():
    calls = []
    for path in (ROOT / "bench").rglob("*.py"):
        text = path.read_text()
        calls += [(path, _call(text, m.end() - 1)) for m in re.finditer(r"torch\.load\(", text)]
    assert calls and all("weights_only=True" in call for _, call in calls), calls
