"""Lossless CIFAR-10 (`dataset: cifar10`): a tiny fake python-pickle batch tree in a tmp folder (no
download) loads pixel for pixel with its labels and class names; missing files are one-line errors
that say how to get them; cifar_arch uses it."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config.preflight import preflight
from bench.config.schema import DataConfig
from bench.config.suite import load_suite
from bench.data import load_dataset
from bench.errors import BenchError

SUITES = Path(__file__).resolve().parent.parent / "suites"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake_cifar(root: Path, per_batch: int = 3) -> dict:
    """cifar-10-batches-py/ with five train batches and a test batch of `per_batch` random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng, arrays = np.random.default_rng(0), {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)       # CHW rows, as theirs
        labels = [(i + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data}, f)
        arrays[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_vis": 3072}, f)
    return arrays


def test_fake_batches_load_pixel_for_pixel_with_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    arrays = fake_cifar(tmp_path / "cifar10-python")
    for hit in (False, True):                                  # decoded, then from the cache
        d = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "cifar10-python"), image_size=32))
        assert d.info["cache_hit"] is hit and d.info["split"] == "CIFAR-10 train / test"
        assert d.train.shape == (15, 3, 32, 32) and d.heldout.shape == (3, 3, 32, 32)
        first = torch.from_numpy(arrays["data_batch_1"][0][0].reshape(3, 32, 32))
        assert torch.equal(d.train[0], first) and d.train.dtype == torch.uint8       # lossless
        last = torch.from_numpy(arrays["test_batch"][0][2].reshape(3, 32, 32))
        assert torch.equal(d.heldout[2], last)
        assert d.train_labels.tolist()[:6] == [0, 1, 2, 1, 2, 3] and d.heldout_labels.tolist() == [5, 6, 7]
        assert d.classes == CLASSES and d.info["heldout_is_test"]
    small = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "cifar10-python"), image_size=16))
    assert small.train.shape == (15, 3, 16, 16)


def test_missing_cifar_says_how_to_get_it_in_one_line(tmp_path):
    with pytest.raises(BenchError) as err:
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "nowhere")))
    text = str(err.value)
    assert "\n" not in text and text.startswith("data.root: CIFAR-10 not found")
    assert f"torchvision.datasets.CIFAR10('{tmp_path / 'nowhere'}', download=True)" in text
    assert "on a machine with internet" in text


def test_a_broken_batch_is_named(tmp_path):
    fake_cifar(tmp_path / "c")
    (tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(BenchError, match=re.escape("data_batch_3 is not a CIFAR-10 python batch")):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "c"), image_size=8))


def test_cifar_arch_reads_the_python_batches_and_preflight_refuses_them_missing(tmp_path):
    suite = load_suite(SUITES / "cifar_arch.yaml", ["seeds=[0]", "train.device=cpu",
                                                    f"data.root={tmp_path / 'absent'}"], check_models=False)
    assert {(r.data.dataset, r.data.image_size) for r in suite.runs} == {("cifar10", 32)}
    raw = load_suite(SUITES / "cifar_arch.yaml", check_models=False).data
    assert raw.root == "data/cifar10-python"
    with pytest.raises(BenchError, match="CIFAR-10 not found") as err:
        preflight(suite)
    assert "\n" not in str(err.value) and "download=True" in str(err.value)
