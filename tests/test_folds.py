"""data.folds (study 003 §3.3): k disjoint folds that cover the training images and keep groups
whole, deterministic given data.seed; the fold axis of a suite (entries x folds x seeds runs, the
fold in the run id); a tiny 3-fold suite runs 3 runs and the report aggregates over them."""
from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from PIL import Image

from bench.cli import main
from bench.config.schema import DataConfig, FoldsConfig
from bench.config.suite import load_suite, parse_suite
from bench.data import load_dataset
from bench.data.splits import assign_folds
from bench.errors import BenchError

pytestmark = pytest.mark.usefixtures("one_thread")


def _fruit_folder(root, fruits=7, views=(1, 2, 3, 4, 5)):
    """`fruits` class folders of near-duplicate views (one fruit each), views[i] images in fruit i."""
    for i in range(fruits):
        (root / f"fruit{i}").mkdir(parents=True)
        for v in range(views[i % len(views)]):
            colour = (30 * i, 10 * v, 200 - 20 * i)
            Image.new("RGB", (12, 12), colour).save(root / f"fruit{i}" / f"{v}.png")
    return root


def _data(root, fold, group_by="^[^/]+", k=3, seed=0):
    return DataConfig(dataset="folder", root=str(root), image_size=8,
                      folds=FoldsConfig(k=k, group_by=group_by, fold=fold), seed=seed)


def test_assign_folds_is_a_balanced_grouped_partition():
    groups = [f"g{i % 10}" for i in range(37)]               # 10 groups of 3-4 items
    folds = assign_folds(groups, 4, seed=0)
    assert sorted(set(folds)) == [0, 1, 2, 3]
    for g in set(groups):                                    # a group never straddles folds
        assert len({f for f, h in zip(folds, groups) if h == g}) == 1
    sizes = [folds.count(f) for f in range(4)]
    assert sum(sizes) == 37 and max(sizes) - min(sizes) <= 4  # within one group's size
    assert assign_folds(groups, 4, seed=0) == folds           # deterministic given the seed
    assert assign_folds(groups, 4, seed=1) != folds
    singles = assign_folds([str(i) for i in range(10)], 3, seed=5)
    assert sorted(singles.count(f) for f in range(3)) == [3, 3, 4]


def test_folder_folds_are_disjoint_cover_the_data_and_respect_groups(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = _fruit_folder(tmp_path / "fruits")                # 7 fruits, 18 images
    held, trained = [], []
    for fold in range(3):
        d = load_dataset(_data(root, fold))
        assert len(d.train) + len(d.heldout) == 18
        paths = set(d.train_paths)
        fruits_held = {d.classes[i] for i in d.heldout_labels.tolist()}
        fruits_train = {d.classes[i] for i in d.train_labels.tolist()}
        assert not fruits_held & fruits_train                # no fruit on both sides
        assert all(p.split("/")[0] in fruits_train for p in paths)
        held.append(fruits_held)
        trained.append(len(d.train))
        assert d.info["folds"]["sizes"][fold] == len(d.heldout) and sum(d.info["folds"]["sizes"]) == 18
    assert set().union(*held) == {f"fruit{i}" for i in range(7)}      # the folds cover the data
    assert sum(len(h) for h in held) == 7                              # and are disjoint
    assert trained == [18 - s for s in load_dataset(_data(root, 0)).info["folds"]["sizes"]]


def test_ungrouped_folds_split_image_by_image_and_leak_fruits(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = _fruit_folder(tmp_path / "fruits")
    pixels = []
    for fold in range(3):
        d = load_dataset(_data(root, fold, group_by=None))
        assert len(d.heldout) == 6 and len(d.train) == 12     # 18 images dealt one by one
        pixels.append({tuple(x.flatten()[:3].tolist()) + (i,) for i, x in enumerate(d.heldout)})
    assert sum(len(p) for p in pixels) == 18
    d = load_dataset(_data(root, 0, group_by=None))
    assert {d.classes[i] for i in d.heldout_labels.tolist()} & \
           {d.classes[i] for i in d.train_labels.tolist()}   # the seed's leak: shared fruits


def test_synthetic_folds_partition_the_drawn_images():
    base = load_dataset(DataConfig(num_images=30, image_size=8, holdout=0.2))
    parts = [load_dataset(DataConfig(num_images=30, image_size=8,
                                     folds=FoldsConfig(k=3, fold=f))) for f in range(3)]
    everything = torch.cat([p.heldout for p in parts])
    assert len(everything) == 30 and all(len(p.train) == 20 for p in parts)
    assert len({bytes(x.numpy()) for x in everything}) == 30              # disjoint
    assert torch.equal(parts[0].train[:1], parts[0].train[:1])
    assert len(base.heldout) == 6                                         # hold-out unchanged


@pytest.mark.parametrize("cfg, expect", [
    (FoldsConfig(k=50, fold=0), "data.folds.k: 50 folds need at least 50 groups"),
    (FoldsConfig(k=3, fold=3), "data.folds.fold: 3 is not a fold of k = 3"),
    (FoldsConfig(k=3, group_by="^x", fold=0), "data.folds.group_by: dataset 'synthetic' has no file paths"),
])
def test_bad_folds_are_one_line_errors(cfg, expect):
    with pytest.raises(BenchError, match=re.escape(expect)):
        load_dataset(DataConfig(num_images=30, image_size=8, folds=cfg))


def _suite(folds_axis=None, k=3, extra=None):
    raw = {"name": "kf", "data": {"dataset": "synthetic", "image_size": 8, "num_images": 48,
                                  "folds": {"k": k}},
           "budget": {"kimg": 0.032}, "train": {"batch_size": 16, "device": "cpu"},
           "eval": {"steps": 2, "grid": 4, "sample_batch": 4, "val_images": 8},
           "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
           "seeds": [0]}
    if folds_axis is not None:
        raw["folds"] = folds_axis
    raw.update(extra or {})
    return raw


def test_the_fold_axis_plans_entries_by_folds_by_seeds_with_the_fold_in_the_id():
    suite = parse_suite(_suite(extra={"seeds": [0, 1]}), "kf.yaml")
    assert [(s.fold, s.seed) for s in suite.runs] == [(f, s) for f in range(3) for s in (0, 1)]
    assert [s.run_id.split("-")[:3] for s in suite.runs][:2] == [["tiny", "f0", "s0"], ["tiny", "f0", "s1"]]
    assert len({s.run_id for s in suite.runs}) == 6
    picked = parse_suite(_suite(folds_axis=[2, 0]), "kf.yaml")
    assert [s.fold for s in picked.runs] == [2, 0]
    plain = _suite()
    del plain["data"]["folds"]
    ids = [s.run_id for s in parse_suite(plain, "kf.yaml").runs]
    plain["data"]["folds"] = None                       # folds at their default: the same run id
    assert [s.run_id for s in parse_suite(plain, "kf.yaml").runs] == ids
    assert "folds" not in parse_suite(plain, "kf.yaml").runs[0].config()["data"]


@pytest.mark.parametrize("raw, expect", [
    (_suite(k=1), "data.folds.k: 1 is out of range"),
    (_suite(folds_axis=[0, 3]), "folds: fold 3 is out of range for models[0] (tiny): data.folds.k is 3"),
    (_suite(folds_axis="some"), "folds: expected 'all' or a list of fold indices"),
    (_suite(folds_axis=[1, 1]), "folds: fold 1 is listed twice"),
    (_suite(extra={"data": {"dataset": "synthetic", "folds": {"k": 3, "fold": 1}}}),
     "data.folds.fold: set by the suite's `folds:` axis"),
    (_suite(folds_axis="all", extra={"data": {"dataset": "synthetic"}}), "folds: no entry sets data.folds"),
])
def test_bad_fold_axes_are_refused_with_one_line(raw, expect):
    with pytest.raises(BenchError, match=re.escape(expect)) as err:
        parse_suite(raw, "kf.yaml")
    assert "\n" not in str(err.value) and "kf.yaml" in str(err.value)


def test_a_tiny_three_fold_suite_runs_three_runs_and_aggregates_them(tmp_path, capsys):
    path = tmp_path / "kf.yaml"
    path.write_text(yaml.safe_dump(_suite()))
    out = tmp_path / "r"
    assert main(["run", str(path), "--results", str(out), "--no-progress", "--no-tensorboard"]) == 0
    runs = sorted(p for p in (out / "kf").iterdir() if (p / "result.json").is_file())
    results = [json.loads((p / "result.json").read_text()) for p in runs]
    assert [r["fold"] for r in results] == [0, 1, 2] and all(r["status"] == "complete" for r in results)
    assert [r["data"]["heldout"] for r in results] == [16, 16, 16]
    assert [r["data"]["train"] for r in results] == [32, 32, 32]
    losses = [r["metrics"]["val_loss"] for r in results]
    assert len(set(losses)) == 3                         # three models, three validation folds
    board = (out / "kf" / "leaderboard.csv").read_text().splitlines()
    header, row = board[0].split(","), board[1].split(",")
    assert float(row[header.index("val_loss")]) == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert row[header.index("folds")] == "3" and row[header.index("seeds")] == "1"
    suite = load_suite(path)
    assert sorted(s.run_id for s in suite.runs) == [p.name for p in runs]
