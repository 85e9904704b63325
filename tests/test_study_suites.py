"""The five study suites (suites/*_00N.yaml, cifar_arch.yaml): they validate and plan with parameter
counts (`bench run --dry-run`, data absent), keep >= 3 seeds and one budget for every entry, land
capacity-matched twins within 3 %, and one entry of each trains end to end on the CPU when the data
are swapped for synthetic shapes (or, for study 003, a tiny class-folder tree) and the width shrunk.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from architectures import width_kwarg
from bench.cli import main
from bench.config.suite import load_suite
from bench.data import load_dataset
from bench.run.runner import run_one

SUITES = Path(__file__).resolve().parent.parent / "suites"
STUDIES = ["cifar_arch", "anime_000", "inpaint_002", "fruits_003", "flowers_004"]
TINY = ["data.num_images=64", "data.limit=null", "budget.kimg=0.024", "eval.every_kimg=null",
        "eval.grid=2", "eval.sample_batch=2", "eval.val_images=8", "eval.val_t_per_image=2",
        "train.device=cpu", "train.batch_size=8", "seeds=[0]", "eval.metrics=[]",
        "eval.metric=val_loss", "eval.direction=minimize", "eval.fid_proxy_n=0",
        "eval.fid_proxy_steps=null", "eval.fid_vs_n=null"]
SYNTHETIC = ["data.dataset=synthetic", "data.root=null"]


pytestmark = pytest.mark.usefixtures("one_thread")


def raw(name: str) -> dict:
    return yaml.safe_load((SUITES / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict:
    """`bench run SUITE --dry-run` output per suite (one seed: matching and counts do not depend on it)."""
    results, out = tmp_path_factory.mktemp("results"), {}
    for name in STUDIES:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main(["run", str(SUITES / f"{name}.yaml"), "--dry-run", "--set", "seeds=[0]",
                         "--results", str(results)])
        out[name] = (code, buffer.getvalue())
    return out


def planned_rows(text: str) -> dict[str, dict]:
    """entry name -> {arch, params, matched} from the dry-run's planned-runs table."""
    rows = {}
    for line in text.split("planned trainings", 1)[1].split("\n\n")[0].splitlines()[1:]:
        parts = line.split()
        rows[re.sub(r"-f\d+$", "", parts[0].rsplit("-s", 1)[0])] = {"arch": parts[1], "params": float(parts[4]) * 1e6,
                                             "matched": parts[-1] if parts[-2] == "matched" else None}
    return rows


@pytest.mark.parametrize("name", STUDIES)
def test_dry_run_plans_every_entry_with_its_parameters(name, dry_runs):
    code, text = dry_runs[name]
    assert code == 0, text[-500:]
    rows, entries = planned_rows(text), raw(name)["models"]
    assert list(rows) == [m.get("name", m["arch"]) for m in entries]
    for entry in entries:
        row = rows[entry.get("name", entry["arch"])]
        assert row["arch"] == entry["arch"] and row["params"] > 1e6
        assert row["matched"] == (next(iter(entry["match"])) if "match" in entry else None)


@pytest.mark.parametrize("name", STUDIES)
def test_params_matched_twins_land_within_3_percent_of_their_target(name, dry_runs):
    rows, entries = planned_rows(dry_runs[name][1]), raw(name)["models"]
    plain = {m["arch"]: rows[m.get("name", m["arch"])]["params"] for m in entries
             if "match" not in m and not m.get("kwargs")}
    for entry in (m for m in entries if "params" in (m.get("match") or {})):
        achieved, target = rows[entry["name"]]["params"], plain[entry["match"]["params"]]
        assert abs(achieved / target - 1) <= 0.03, (entry["name"], achieved, target)
        assert rows[entry["name"]]["params"] != plain[entry["arch"]]  # the width really changed


@pytest.mark.parametrize("name", STUDIES)
def test_three_seeds_and_one_budget_for_every_entry(name):
    suite = load_suite(SUITES / f"{name}.yaml", check_models=False)
    assert len(suite.seeds) >= 3
    assert all("budget" not in (m.get("overrides") or {}) for m in raw(name)["models"])
    budgets = {(r.budget.kimg, r.budget.steps, r.budget.seconds) for r in suite.runs}
    assert len(budgets) == 1 and next(iter(budgets))[0] > 0
    per_entry = {r.entry.name: 1 if r.data.folds is None else r.data.folds.k for r in suite.runs}
    assert list(per_entry) == [m.name for m in suite.models]
    assert len(suite.runs) == len(suite.seeds) * sum(per_entry.values())  # entries x folds x seeds
    assert suite.baseline in [m.name for m in suite.models]
    quality = {"cifar_arch": "fid", "anime_000": "fid", "flowers_004": "fid",
               "fruits_003": "ssim_mean", "inpaint_002": "inpaint_psnr"}
    assert suite.eval.metric == quality[name]  # each study ranks by its own quality metric


def tiny_spec(name: str, entry: str, overrides: list[str]):
    """The suite's `entry` resolved with `overrides`, at width 8 and without capacity matching."""
    suite = load_suite(SUITES / f"{name}.yaml", TINY + overrides, check_models=False)
    spec = next(r for r in suite.runs if r.entry.name == entry)
    kwargs = {**spec.entry.kwargs, width_kwarg(spec.entry.arch): 8}
    return replace(spec, entry=replace(spec.entry, kwargs=kwargs, match=None))


def tiny_eval_spec(name: str, label: str, overrides: list[str]):
    """The planned evaluation `label` (entry@variant) of a suite: its run under the variant's eval
    section (no variants left, so `run_one` trains and evaluates it), at width 8."""
    suite = load_suite(SUITES / f"{name}.yaml", TINY + overrides, check_models=False)
    spec = next(e.spec for e in suite.evaluations if e.label == label)
    kwargs = {**spec.entry.kwargs, width_kwarg(spec.entry.arch): 8}
    return replace(spec, entry=replace(spec.entry, kwargs=kwargs, match=None))


def run_tiny(spec, run_dir: Path, dataset=None) -> dict:
    record = run_one(spec, run_dir, dataset or load_dataset(spec.data), progress=False)
    assert record["status"] == "complete"
    assert record["budget"]["images"] == 24
    assert math.isfinite(record["metrics"]["val_loss"]) and record["metrics"]["val_loss"] > 0
    assert (run_dir / "samples.png").is_file()
    return record


def test_cifar_arch_baseline_trains_on_cpu(tmp_path):
    pure = [m.get("name") for m in raw("cifar_arch")["models"]].index("pure_unet")
    spec = tiny_spec("cifar_arch", "baseline", SYNTHETIC + [  # no FID here: drop pure_unet's curve
        "data.image_size=16", "diffusion.timesteps=25", f"models.{pure}.overrides.eval.fid_vs_n=null"])
    assert (spec.eval.sampler, spec.eval.sampler_opts) == ("ddpm", {"variance": "fixed_large", "clip": False})
    assert not spec.eval.use_ema and spec.train.grad_clip is None
    record = run_tiny(spec, tmp_path)
    assert record["budget"]["steps"] == 3


def test_anime_000_mini_keeps_its_table_iii_batch_and_lr_on_cpu(tmp_path):
    spec = tiny_spec("anime_000", "mini_channels", SYNTHETIC + ["data.image_size=16",
                                                               "diffusion.timesteps=25"])
    assert (spec.train.batch_size, spec.train.lr) == (5, 1e-4)     # entry overrides beat --set
    assert spec.entry.kwargs["attn_layout"] == "channels"
    record = run_tiny(spec, tmp_path)
    assert record["budget"]["steps"] == 5                          # 5 + 5 + 5 + 5 + 4 images


def test_inpaint_002_shortened_sampler_with_restarts_inpaints_on_cpu(tmp_path):
    spec = tiny_eval_spec("inpaint_002", "baseline@shortened_25_beta_tilde",
                          SYNTHETIC + ["data.image_size=16", "diffusion.timesteps=500",
                                       "train.cycle_kimg=0.008", "train.log_every=1"])
    assert (spec.eval.sampler, spec.eval.steps) == ("shortened", 25)
    assert spec.eval.sampler_opts["variance"] == "fixed_small"
    assert spec.train.lr_schedule == "cosine_restarts" and spec.task.kind == "inpaint"
    assert (spec.task.condition, spec.task.loss_on) == ("paste", "hole")   # theirs (Sec. 2.1-2.2)
    record = run_tiny(spec, tmp_path)
    assert 0 < record["metrics"]["inpaint_psnr"] < 60                # dB over the generated halves
    lrs = [p["lr"] for p in record["history"] if "lr" in p]
    assert lrs == pytest.approx([3e-4, 3e-4, 1.5e-4])               # SGDR: restart, then a 2x cycle


def test_flowers_004_cbam_with_cosine_t500_schedule_on_cpu(tmp_path):
    spec = tiny_eval_spec("flowers_004", "cbam@sigma_beta", SYNTHETIC + ["data.image_size=32",
                                                                        "diffusion.timesteps=25"])
    assert spec.eval.sampler_opts == {"variance": "beta_linear", "clip": False} and spec.eval.variants == []
    assert (spec.diffusion.schedule, spec.train.lr_schedule, spec.train.lr_min) == ("cosine", "cosine", 1e-7)
    run_tiny(spec, tmp_path)


def fruit_tree(root: Path) -> None:
    """Five 'fruits' (class folders) of eight views each; a fruit's red level is 40 x its index."""
    for k, fruit in enumerate(["apple", "banana", "cherry", "date", "elder"]):
        (root / fruit).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (20, 20), (40 * k, 255 - 30 * i, 128)).save(root / fruit / f"r_{i}_100.png")


def fruits_held_out(images: torch.Tensor) -> set[int]:
    return {round(v / 40) for v in images[:, 0, 0, 0].tolist()}


def fruits_fold(name: str, entry: str, fold: int, overrides: list[str]):
    suite = load_suite(SUITES / f"{name}.yaml", TINY + overrides, check_models=False)
    spec = next(r for r in suite.runs if r.entry.name == entry and r.fold == fold)
    kwargs = {**spec.entry.kwargs, width_kwarg(spec.entry.arch): 8}
    return replace(spec, entry=replace(spec.entry, kwargs=kwargs, match=None))


def test_fruits_003_grouped_fold_holds_out_whole_fruits_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    fruit_tree(tmp_path / "Training")
    fruit_tree(tmp_path / "Test")
    common = [f"data.root={tmp_path / 'Training'}", f"data.test_root={tmp_path / 'Test'}",
              "data.image_size=16", "diffusion.timesteps=25", "eval.recon_t=null",
              "train.early_stop=null"]   # TINY has no in-training evals to stop on
    leaky = [load_dataset(fruits_fold("fruits_003", "leaky", f, common).data) for f in range(5)]
    assert [len(d.heldout) for d in leaky] == [8] * 5 and len(fruits_held_out(leaky[1].heldout)) > 1
    assert sorted(v for d in leaky for v in d.heldout[:, 1, 0, 0].tolist()) == \
        sorted([255 - 30 * i for i in range(8)] * 5)          # 5 disjoint folds cover Training/
    spec = fruits_fold("fruits_003", "grouped", 1, common)
    assert (spec.data.folds.k, spec.data.folds.group_by, spec.data.folds.fold) == (5, "^[^/]+", 1)
    grouped = load_dataset(spec.data)
    held = fruits_held_out(grouped.heldout)
    assert len(grouped.heldout) == 8 and len(held) == 1                        # one fruit, all views
    assert not held & fruits_held_out(grouped.train)
    record = run_tiny(spec, tmp_path / "run", grouped)
    assert (record["data"]["train"], record["data"]["heldout"]) == (32, 8) and record["fold"] == 1
    assert (spec.eval.split, spec.eval.val_split, spec.eval.subset) == ("test", "heldout", "stratified")
    assert record["protocol"]["images"]["val_loss"]["split"] == "heldout"   # the fold's own images


@pytest.mark.parametrize("name", STUDIES)
def test_study_suites_train_in_fp32_as_the_seeds_and_the_dry_run_says_what_it_costs(name, dry_runs):
    suite = load_suite(SUITES / f"{name}.yaml", ["seeds=[0]"], check_models=False)
    assert {(r.train.amp, r.train.tf32) for r in suite.runs} == {("none", False)}
    text = dry_runs[name][1].split("precision on CUDA", 1)[1]
    assert f"amp none, tf32 false: {len(suite.runs)} runs" in text
    assert "fp32, TF32 off: up to ~15x the time of bf16 on an H100/H200 (67 vs 989.4 TFLOPS" in text
    fast = load_suite(SUITES / f"{name}.yaml", ["seeds=[0]", f"name={name}_fast", "train.amp=bf16",
                                                "train.tf32=true"], check_models=False)
    assert fast.name == f"{name}_fast" and {r.train.amp for r in fast.runs} == {"bf16"}
    assert not {r.run_id for r in fast.runs} & {r.run_id for r in suite.runs}
