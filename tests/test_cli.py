"""The CLI end to end on the smoke suite (reduced budget): result files, leaderboard, skip, resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from architectures import create, list_architectures

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--set", "budget.kimg=0.064", "--set", "eval.every_kimg=0.032", "--set", "eval.steps=4",
        "--set", "eval.grid=4", "--set", "eval.sample_batch=4", "--set", "eval.val_images=16",
        "--set", "train.batch_size=16", "--set", "seeds=[0]", "--set", "eval.fid_n=8",
        "--set", "eval.fid_reference_n=32", "--set", "eval.kid_subset_size=8",
        "--set", "eval.recon_images=8", "--no-progress"]


def bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    bench("run", "suites/smoke.yaml", "--results", str(out), *FAST)
    return out / "smoke"


def test_every_run_writes_its_files_and_a_complete_result(smoke):
    runs = sorted(p for p in smoke.iterdir() if (p / "result.json").exists())
    assert [p.name.split("-s0-")[0] for p in runs] == ["tiny", "tiny_narrow"]
    assert (smoke / "report.html").stat().st_size > 0
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "complete" and result["run_id"] == run.name
        assert result["budget"]["images"] == 64 and result["budget"]["steps"] == 4
        metrics = result["metrics"]
        for key in ("params", "gflops", "train_img_per_s", "sample_img_per_s", "final_train_loss",
                    "val_loss", "val_loss_q1", "val_loss_q4"):
            assert isinstance(metrics[key], (int, float)) and metrics[key] > 0, key
        assert metrics["peak_mem_train_mb"] is None  # CPU
        assert metrics["fid"] > 0 and metrics["kid_std"] >= 0 and 0 < metrics["ssim_mean"] <= 1
        assert sorted(metrics["recon"], key=int) == ["50", "250", "500", "750", "1000"]
        assert result["protocol"]["n_generated"] == 8 and result["protocol"]["reference_n"] == 32
        assert result["protocol_key"].startswith("inception=7ff4a85c3a63")
        assert [p["kimg"] for p in result["history"] if "val_loss" in p] == [0.032, 0.064]
        env = result["environment"]
        assert env["torch"] and env["amp"] == "none" and "git_commit" in env
        assert Image.open(run / "samples.png").size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)
        assert (run / "checkpoint.pt").stat().st_size > 0
        assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files left


def test_leaderboard_ranks_entries_and_names_their_runs(smoke):
    table = pd.read_csv(smoke / "leaderboard.csv")
    assert sorted(table["entry"]) == ["tiny", "tiny_narrow"]
    assert list(table["rank"]) == [1, 2]
    assert table["val_loss"].is_monotonic_increasing
    for entry, runs in zip(table["entry"], table["run_dirs"]):
        assert runs.startswith(f"{entry}-s0-") and (smoke / runs / "result.json").exists()
    assert "| rank | entry |" in (smoke / "leaderboard.md").read_text()


def test_same_seed_gives_the_same_samples_grid(smoke, tmp_path):
    """`tiny` seed 0 trained again, alone, in another results folder: the same run id, losses and
    grid, pixel for pixel (and a different network's grid differs)."""
    runs = {p.name.split("-s0-")[0]: p for p in smoke.iterdir() if (p / "result.json").exists()}
    bench("run", "suites/smoke.yaml", "--results", str(tmp_path), *FAST,
          "--set", "models=[{arch: unet_tiny, name: tiny, kwargs: {attention_resolutions: []}}]")
    again = next((tmp_path / "smoke").glob("tiny-s0-*"))
    assert again.name == runs["tiny"].name
    first, second = (json.loads((p / "result.json").read_text()) for p in (runs["tiny"], again))
    assert first["history"] == second["history"]
    grid = Image.open(runs["tiny"] / "samples.png").tobytes()
    assert Image.open(again / "samples.png").tobytes() == grid
    assert grid != Image.open(runs["tiny_narrow"] / "samples.png").tobytes()


def test_rerun_skips_every_complete_run(smoke):
    proc = bench("run", "suites/smoke.yaml", "--results", str(smoke.parent), *FAST)
    assert proc.stdout.count("complete, skipped") == 2


def test_an_unfinished_run_resumes_from_its_checkpoint(smoke):
    run = next(p for p in smoke.iterdir() if p.name.startswith("tiny_narrow"))
    result = json.loads((run / "result.json").read_text())
    full_losses = [p["train_loss"] for p in result["history"] if "train_loss" in p]
    (run / "result.json").write_text(json.dumps({**result, "status": "running"}))
    proc = bench("run", "suites/smoke.yaml", "--results", str(smoke.parent), *FAST)
    assert proc.stdout.count("complete, skipped") == 1
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["status"] == "complete" and resumed["budget"]["images"] == 64
    assert [p["train_loss"] for p in resumed["history"] if "train_loss" in p] == full_losses


def test_list_prints_registered_architectures():
    """Every unet_* architecture, with its parameter count and GFLOPs at 16 px as a real (not meta)
    network counts them: parameters summed, FLOPs of one fp32 forward under FlopCounterMode (attention
through the math kernel, whose matmuls it counts; CPU's fused kernel would hide ~5 % of unet_ddpm's)."""
    proc = bench("list", "unet_*", "--image-size", "16")
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["architecture", "params", "(M)", "GFLOPs", "at", "16x16"]
    rows = {name: (float(params), float(gflops)) for name, params, gflops in map(str.split, lines[1:])}
    assert set(rows) == set(list_architectures("unet_*")) and "unet_tiny" in rows
    for name, (params, gflops) in rows.items():
        torch.manual_seed(0)
        model = create(name, in_channels=3, out_channels=3, image_size=16).eval()
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 16, 16), torch.zeros(1, dtype=torch.long))
        assert params == round(sum(p.numel() for p in model.parameters()) / 1e6, 3), name
        assert gflops == pytest.approx(counter.get_total_flops() / 1e9, abs=6e-4), name