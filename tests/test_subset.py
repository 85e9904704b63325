"""bench.metrics.subset and bench.data.eval_split: which images the held-out metrics score."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config.schema import DataConfig
from bench.data import eval_split, load_dataset
from bench.errors import BenchError
from bench.metrics.subset import protocol, select

Cfg = functools.partial(DataConfig, dataset="folder", image_size=8, channels=1, holdout=0.2,
                        num_images=64)  # the real schema with this file's small defaults


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def _class_tree(root, classes=10, per_class=20, start=0):
    """<root>/c<k>/<i>.png: every image of class k has the grey value 20·k + 1."""
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.fromarray(np.full((8, 8), 20 * k + 1, np.uint8)).save(root / f"c{k}" / f"{i:03d}.png")


def _classes(images):
    return sorted(set(((images[:, 0, 0, 0].long() - 1) // 20).tolist()))


def test_first_n_of_a_class_tree_is_one_class_but_the_subsets_span_all(tmp_path):
    _class_tree(tmp_path / "Training")
    _class_tree(tmp_path / "Test", per_class=10, start=100)
    data = load_dataset(Cfg(root=str(tmp_path / "Training"), test_root=str(tmp_path / "Test")))
    images, labels, source = eval_split(data, "test")
    assert len(images) == 100 and "Test" in source
    assert len(_classes(images[:10])) == 1                     # the old heldout[:N]: sorted paths
    for rule in ("random", "stratified"):
        pick = select(len(images), 20, rule, seed=0, labels=labels)
        assert len(set(pick.tolist())) == 20
        if rule == "stratified":
            assert _classes(images[pick]) == list(range(10))
            assert torch.bincount(labels[pick], minlength=10).tolist() == [2] * 10
        assert torch.equal(pick, select(len(images), 20, rule, seed=0, labels=labels))  # same images
    assert len(_classes(images[select(100, 50, "random", 0)])) == 10
    assert labels.tolist() == ((images[:, 0, 0, 0].long() - 1) // 20).tolist()   # names map to classes
    record = protocol("test", "stratified", 0, 20, labels, select(100, 20, "stratified", 0, labels), source)
    assert record["classes_covered"] == 10 and record["n"] == 20 and record["split"] == "test"


def test_seed_changes_the_draw_and_n_beyond_the_split_takes_everything():
    a, b = select(100, 10, "random", 0), select(100, 10, "random", 1)
    assert not torch.equal(a, b)
    assert sorted(select(7, 50, "random", 0).tolist()) == list(range(7))
    labels = torch.tensor([0] * 30 + [1] * 2)                   # a rare class runs out: the rest fill in
    pick = select(32, 10, "stratified", 0, labels)
    assert torch.bincount(labels[pick]).tolist() == [8, 2]


def test_split_choices_and_errors(tmp_path):
    _class_tree(tmp_path / "flat", classes=3, per_class=10)
    data = load_dataset(Cfg(root=str(tmp_path / "flat")))      # a seeded hold-out: no test split
    assert eval_split(data, "heldout")[0] is data.heldout
    with pytest.raises(BenchError, match="no test split of its own.*data.test_root"):
        eval_split(data, "test")
    with pytest.raises(BenchError, match="heldout, test"):
        eval_split(data, "val")
    split = tmp_path / "split"
    _class_tree(split / "train", classes=2, per_class=5)
    _class_tree(split / "test", classes=2, per_class=3, start=50)
    own = load_dataset(Cfg(root=str(split)))                  # train/ + test/: held-out is the test split
    assert eval_split(own, "test")[0] is own.heldout and len(own.heldout) == 6
    with pytest.raises(BenchError, match="needs class labels"):
        select(10, 5, "stratified", 0, None)
    with pytest.raises(BenchError, match="random, stratified"):
        select(10, 5, "sorted", 0)
