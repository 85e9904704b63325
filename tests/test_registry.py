"""The one metric table (`bench.metrics.registry`): every name a suite can name is registered and
produced by some `eval.metrics` choice; a real run records exactly what the table says; metric
names in a suite that its `eval.metrics` will not record (the `ssim` objective) fail up front in
one line, exit code 2, before any trial trains."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bench.config.schema import EvalConfig
from bench.config.suite import load_suite
from bench.errors import BenchError
from bench.metrics import registry
from bench.tune.search import parse_search

ROOT = Path(__file__).resolve().parent.parent
SUITE = {
    "name": "reg",
    "data": {"dataset": "synthetic", "image_size": 8, "num_images": 64},
    "diffusion": {"timesteps": 50},
    "budget": {"kimg": 0.032},
    "train": {"batch_size": 16, "lr": 1e-3, "ema_decay": 0.9, "device": "cpu"},
    "eval": {"every_kimg": 0.016, "steps": 2, "grid": 4, "sample_batch": 16, "val_images": 16,
             "val_t_per_image": 1, "metrics": ["recon"], "recon_t": [10, 50], "recon_images": 8,
             "ssim": "torchmetrics"},   # Wang's valid-region SSIM needs >= 11 px; these are 8
    "models": [{"arch": "unet_tiny", "name": "tiny",
                "kwargs": {"base_channels": 8, "attention_resolutions": []}}],
}
EXTRA_PRODUCERS = {registry.ALWAYS, "fid_proxy", "inpaint"}


def all_evals():
    """An eval section for every subset of the eval.metrics choices, with and without a proxy."""
    choices = list(registry.PRODUCERS)
    for k in range(len(choices) + 1):
        for subset in itertools.combinations(choices, k):
            for proxy in (0, 8):
                yield EvalConfig(metrics=list(subset), fid_proxy_n=proxy)


def test_every_nameable_metric_is_registered_and_produced_by_some_choice():
    nameable = set()
    for ev in all_evals():
        for kind in ("unconditional", "inpaint"):
            nameable |= set(registry.recorded(ev, kind)) | set(registry.in_training(ev))
    assert nameable <= set(registry.METRICS)
    for name in nameable:
        assert registry.METRICS[name].producer in {*registry.PRODUCERS, *EXTRA_PRODUCERS}, name
    # every eval.metrics choice records at least one rankable metric, and only when chosen
    for producer in registry.PRODUCERS:
        alone = set(registry.recorded(EvalConfig(metrics=[producer])))
        assert alone - set(registry.recorded(EvalConfig())), producer
    assert "ssim" not in nameable and "ssim_mean" in nameable  # ssim is the report's average
    assert registry.recorded(EvalConfig()) == [
        "val_loss", "val_loss_q1", "val_loss_q2", "val_loss_q3", "val_loss_q4",
        "final_train_loss", "params", "gflops", "train_img_per_s", "sample_img_per_s"]
    assert set(registry.in_training(EvalConfig(fid_proxy_n=8))) == {"fid_proxy", "val_loss", *(
        f"val_loss_q{q}" for q in range(1, 5))}


def test_directions_and_labels_come_from_the_table():
    up = {n for n, m in registry.METRICS.items() if m.direction == "maximize"}
    assert {"ssim", "psnr", "ssim_mean", "precision", "recall", "train_img_per_s",
            "inpaint_psnr"} <= up
    assert not up & {"fid", "kid_mean", "val_loss", "params", "gflops", "final_train_loss"}
    assert registry.label("params") == "params (M)" and registry.label("psnr") == "PSNR, avg over t (dB)"
    assert registry.label("not_a_metric") == "not_a_metric"


def test_shipped_suites_name_only_recorded_metrics():
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        suite = load_suite(path, check_models=False)
        for spec in suite.runs:
            assert spec.eval.metric in registry.recorded(spec.eval, spec.task.kind), path
        if suite.search:
            search = parse_search(suite, check=False)
            for metric, _ in search.objectives:
                assert metric in registry.recorded(suite.runs[0].eval, suite.task.kind)


def test_a_run_records_exactly_what_the_table_says(tmp_path):
    """Every producer on, at a tiny N (the real Inception weights, as the smoke test uses them)."""
    # classify needs class labels (synthetic shapes have none): tests/test_eval_protocol.py runs it
    suite = _with(metrics=[p for p in registry.PRODUCERS if p != "classify"], fid_n=8, fid_reference_n=16, fid_proxy_n=4,
                  kid_subset_size=4, pr_k=2, roundtrip_steps=2)
    path, out = _write(tmp_path, suite), tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--results", str(out),
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(next((out / "reg").glob("*/result.json")).read_text())
    spec = load_suite(path, check_models=False).runs[0]
    scalars = {k for k, v in record["metrics"].items() if not isinstance(v, dict)}
    expected = set(registry.recorded(spec.eval, spec.task.kind))
    assert expected <= scalars
    assert all(math.isfinite(record["metrics"][k]) for k in expected)
    assert scalars <= {n for n, m in registry.METRICS.items() if m.source == "run"}
    points = [p for p in record["history"] if "val_loss" in p]
    assert len(points) == 2 and all(set(registry.in_training(spec.eval)) <= set(p) for p in points)


def _write(tmp_path: Path, suite: dict) -> Path:
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _with(search: dict | None = None, **eval_changes) -> dict:
    suite = json.loads(json.dumps(SUITE))
    suite["eval"].update(eval_changes)
    if search is not None:
        suite["search"] = {"space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
                           "n_trials": 2, **search}
    return suite


@pytest.mark.parametrize("suite, key, words", [
    (_with({"objectives": [{"metric": "ssim"}]}), "search.objectives[0].metric",
     ["derived by the report", "ssim_mean"]),
    (_with({"objectives": [{"metric": "fid"}], "pruner": "none"}), "search.objectives[0].metric",
     ["needs 'fid' in eval.metrics (got ['recon'])"]),
    (_with({"objectives": ["val_loss"], "prune_on": "fid_proxy"}), "search.prune_on",
     ["needs eval.fid_proxy_n > 0"]),
    (_with({"objectives": ["ssim_mean"]}), "search.prune_on (by default the objective)",
     ["measured only at the end of a run"]),
    (_with({"objectives": ["val_los"], "pruner": "none"}), "search.objectives[0].metric",
     ["did you mean val_loss"]),
    (_with(metric="ssim"), "eval.metric", ["ranking metric 'ssim'"]),
    (_with(metric="fid"), "eval.metric", ["ranking by fid needs 'fid' in eval.metrics"]),
])
def test_metric_names_the_suite_will_not_record_fail_up_front(tmp_path, suite, key, words):
    path = _write(tmp_path, suite)
    with pytest.raises(BenchError) as err:
        suite = load_suite(path, check_models=False)
        parse_search(suite, check=False)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and key in text and "\n" not in text
    assert "choose from" in text and all(w in text for w in words), text


def test_the_ssim_objective_exits_2_through_the_cli_before_any_work(tmp_path):
    path = _write(tmp_path, _with({"objectives": [{"metric": "ssim", "direction": "maximize"}]}))
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "bench", "tune", str(path), "--results", str(out),
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert line.startswith(f"bench: error: {path}: search.objectives[0].metric: optimising ssim")
    assert "ssim_mean" in line and not out.exists()


def test_a_recorded_objective_and_prune_metric_pass():
    ev = replace(EvalConfig(metrics=["recon", "fid"]), fid_proxy_n=8)
    assert registry.check_recorded("ssim_mean", ev, "unconditional", "x") == "ssim_mean"
    assert registry.check_recorded("fid_proxy", ev, "unconditional", "x", when="in_training")
    with pytest.raises(BenchError, match="inpaint_psnr needs task.kind: inpaint"):
        registry.check_recorded("inpaint_psnr", ev, "unconditional", "x")
