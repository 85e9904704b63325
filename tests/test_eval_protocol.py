"""Issue 14 end to end on tiny CPU runs: eval variants train once and write one row each (a new
variant trains nothing), snapshot grids at every evaluation in the report, kept checkpoints, the
x0 panel, the classifier metric in a run, and the protocol record (split, subset, variant, SSIM)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import bench.run.runner as runner
from bench.cli import main
from bench.run.results import load_results

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = {
    "name": "proto",
    "data": {"dataset": "synthetic", "image_size": 16, "num_images": 48, "holdout": 0.25},
    "diffusion": {"schedule": "linear", "timesteps": 50},
    "budget": {"kimg": 0.048},
    "train": {"batch_size": 16, "device": "cpu", "ema_decay": 0.9},
    "eval": {"every_kimg": 0.016, "sampler": "ddim", "steps": 3, "grid": 4, "sample_batch": 4,
             "val_images": 8, "metrics": ["recon"], "recon_images": 4, "recon_t": [10, 50],
             "metric": "ssim_mean", "direction": "maximize",
             "variants": [{"name": "d3", "steps": 3}, {"name": "d2", "steps": 2}]},
    "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
    "seeds": [0, 1],
}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def trainings(monkeypatch) -> list:
    """Counts calls of the training loop the runner makes."""
    calls, real = [], runner.train

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train", counted)
    return calls


def _run(tmp_path: Path, suite: dict) -> Path:
    path = tmp_path / "proto.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--results", str(tmp_path / "results"), "--no-progress"]) == 0
    return tmp_path / "results" / suite["name"]


def _results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/result.json")}


def test_variants_train_once_one_row_each_and_a_new_variant_trains_nothing(tmp_path, trainings):
    out = _run(tmp_path, SUITE)
    assert len(trainings) == 2                                    # one per seed, not per variant
    found = _results(out)
    trained = {k: v for k, v in found.items() if v.get("role") == "training"}
    rows = {k: v for k, v in found.items() if v.get("role") != "training"}
    assert len(trained) == 2 and len(rows) == 4
    assert sorted(r["entry"] for r in rows.values()) == ["tiny@d2", "tiny@d2", "tiny@d3", "tiny@d3"]
    for name, r in rows.items():
        assert r["status"] == "complete" and name.startswith(r["trained_run"] + "@")
        assert r["protocol"]["variant"]["name"] == r["entry"].split("@")[1]
        assert r["protocol"]["variant"]["steps"] == int(r["entry"][-1])
        assert r["metrics"]["val_loss"] == found[r["trained_run"]]["metrics"]["val_loss"]
        assert 0 < r["metrics"]["ssim_mean"] <= 1 and (out / name / "samples.png").exists()
    table = load_results(out)
    assert sorted(table["entry"]) == ["tiny@d2", "tiny@d2", "tiny@d3", "tiny@d3"]   # rows: variants
    by_seed = {(r["entry"], r["seed"]): r["metrics"]["ssim_mean"] for r in rows.values()}
    assert by_seed[("tiny@d2", 0)] == by_seed[("tiny@d3", 0)]    # recon does not depend on steps
    third = {**SUITE, "eval": {**SUITE["eval"], "variants": [*SUITE["eval"]["variants"],
                                                             {"name": "d1", "steps": 1}]}}
    out = _run(tmp_path, third)
    assert len(trainings) == 2                                    # nothing retrained
    assert sorted(r["entry"] for r in _results(out).values() if r.get("role") != "training") == [
        "tiny@d1", "tiny@d1", "tiny@d2", "tiny@d2", "tiny@d3", "tiny@d3"]


def test_snapshots_at_every_eval_kept_checkpoints_x0_panel_and_report(tmp_path):
    suite = {**SUITE, "seeds": [0], "eval": {**SUITE["eval"], "variants": [], "keep_checkpoints": "every"}}
    out = _run(tmp_path, suite)
    (run,) = [p for p in out.iterdir() if (p / "result.json").exists()]
    grids = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert grids == ["kimg-000000.016.png", "kimg-000000.032.png", "kimg-000000.048.png"]
    evals = [p for p in json.loads((run / "result.json").read_text())["history"] if "val_loss" in p]
    assert len(grids) == len(evals) == 3                          # 16, 32 and 48 images: one each
    assert len(list((run / "checkpoints").glob("kimg-*.pt"))) == 3
    a, b = (np.asarray(Image.open(run / "samples" / g)) for g in grids[:2])
    assert a.shape == b.shape                                     # same grid layout at every eval
    panel = Image.open(run / "x0_panel.png")
    meta = json.loads((run / "x0_panel.json").read_text())
    cols = 1 + 2 * len(meta["t"])
    assert panel.size[0] == cols * 16 + (cols + 1) * 2 and meta["images"] == 4
    html = (out / "report.html").read_text()
    assert "How did the samples change over training" in html and "training_grids" in html
    assert (out / "plots" / "training_grids.png").exists() and (out / "plots" / "x0_panel.png").exists()


def test_protocol_records_split_subset_ssim_and_libraries(tmp_path):
    suite = {**SUITE, "seeds": [0], "eval": {**SUITE["eval"], "variants": [], "subset_seed": 3}}
    out = _run(tmp_path, suite)
    (result,) = [r for r in _results(out).values()]
    p = result["protocol"]
    assert p["ssim"] == "wang" and p["variant"] is None
    assert p["images"]["recon"] == {**p["images"]["recon"], "split": "heldout", "subset": "random",
                                    "subset_seed": 3, "n": 4}
    assert p["images"]["val_loss"]["n"] == 8
    assert p["libraries"]["torchmetrics"] and p["libraries"]["scipy"] and p["libraries"]["pytorch-fid"]


def _class_tree(root: Path, classes=3, train=12, test=6):
    """train/c<k>/ and test/c<k>/ of 16x16 PNGs whose colour is the class (a learnable task)."""
    rng = np.random.default_rng(0)
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]
    for split, n in (("train", train), ("test", test)):
        for k in range(classes):
            (root / split / f"c{k}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(np.array(colours[k]) + rng.normal(0, 20, (16, 16, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(root / split / f"c{k}" / f"{i:03d}.png")


def test_classify_metric_in_a_run_records_histogram_and_classifier_accuracy(tmp_path):
    _class_tree(tmp_path / "tree")
    suite = {**SUITE, "seeds": [0],
             "data": {"dataset": "folder", "root": str(tmp_path / "tree"), "image_size": 16},
             "eval": {**SUITE["eval"], "variants": [], "metrics": ["classify"], "classify_n": 8,
                      "metric": "classify_entropy", "split": "test", "subset": "stratified",
                      "classifier": {"widths": [4, 8, 8], "epochs": 3, "batch_size": 12}}}
    out = _run(tmp_path, suite)
    (result,) = [r for r in _results(out).values()]
    hist = result["metrics"]["classify"]
    assert hist["classes"] == ["c0", "c1", "c2"] and sum(hist["counts"]) == 8 and hist["n"] == 8
    assert 0 <= result["metrics"]["classify_entropy"] <= np.log(3) + 1e-9
    assert result["metrics"]["classify_kl_uniform"] == pytest.approx(
        np.log(3) - result["metrics"]["classify_entropy"])
    classifier = result["protocol"]["classifier"]
    assert 0 <= classifier["test_accuracy"] <= 1 and classifier["test_images"] == 18
    assert result["protocol"]["images"]["val_loss"]["classes_covered"] == 3   # stratified test split
    assert (out / "plots" / "class_histograms.png").exists()
