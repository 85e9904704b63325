"""bench.metrics.classify: class statistics in closed form, the whitening init, and a tiny
classifier trained on a few hundred real CIFAR-10 JPEGs (cached, accuracy recorded)."""
from __future__ import annotations

import functools
import math
import subprocess
from pathlib import Path

import pytest
import torch

import bench.metrics.classify as C
from bench.config.schema import DataConfig
from bench.data import load_dataset
from bench.errors import BenchError

pytestmark = pytest.mark.usefixtures("one_thread")
CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY = C.Recipe(widths=(16, 32, 32), epochs=6, batch_size=50, lr=0.1, seed=0)


Folder = functools.partial(DataConfig, dataset="folder")  # the real schema, folder defaults


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def cifar_tree(tmp_path_factory) -> Path:
    """train/<class>/ (40 each) and test/<class>/ (10 each) of the shared CIFAR-10 JPEG archive."""
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"{CIFAR_JPEG} not present")
    out = tmp_path_factory.mktemp("cifar")
    names = [f"{split}/{c}/{i:04d}.jpg" for c in CLASSES
             for split, n in (("train", 40), ("test", 10)) for i in range(n)]
    subprocess.run(["tar", "-xzf", str(CIFAR_JPEG), "-C", str(out), *names], check=True)
    return out


def test_class_stats_closed_forms():
    uniform = torch.eye(10).repeat(3, 1)                          # 30 one-hot predictions, 3 per class
    s = C.class_stats(uniform, CLASSES)
    assert s["counts"] == [3] * 10 and s["n"] == 30
    assert s["entropy"] == pytest.approx(math.log(10)) and s["kl_uniform"] == pytest.approx(0, abs=1e-12)
    assert s["confidence"] == pytest.approx(1.0)
    probs = torch.tensor([[0.7, 0.3] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8])   # every sample is class 0
    s = C.class_stats(probs, CLASSES)
    assert s["counts"][0] == 2 and sum(s["counts"]) == 2
    assert s["entropy"] == 0 and s["kl_uniform"] == pytest.approx(math.log(10))
    assert s["confidence"] == pytest.approx(0.65)
    half = C.class_stats(torch.eye(10)[[0, 0, 1, 1]], CLASSES)   # two classes equally: H = ln 2
    assert half["entropy"] == pytest.approx(math.log(2))


def test_whitening_init_whitens_training_patches():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(64, 3, 8, 8, generator=g)
    images = (0.6 * base + 0.4 * base.roll(1, dims=1)).clamp(0, 1)   # correlated channels
    net = C.Classifier(3, 10, (8, 8, 8))
    net.init_whitening(images, eps=0.0)
    out = net.whiten((images - net.mean) / net.std)[:, :12]           # the +filters half
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-3)


def test_tiny_classifier_on_real_cifar_is_cached_and_histograms_ten_classes(cifar_tree, monkeypatch):
    data = load_dataset(Folder(root=str(cifar_tree)))
    assert data.classes == CLASSES and len(data.train) == 400 and len(data.heldout) == 100
    model, info = C.load_or_train(data, TINY)
    assert 0.0 <= info["test_accuracy"] <= 1.0 and info["test_images"] == 100
    assert info["test_accuracy"] == pytest.approx(C.accuracy(model, data.heldout, data.heldout_labels))
    assert info["test_accuracy"] > 0.2                               # chance is 0.1
    assert Path(info["cache"]).is_file() and info["recipe"] == TINY.name()
    stats = C.class_stats(C.predict(model, data.heldout), data.classes)
    assert len(stats["counts"]) == 10 and stats["n"] == 100 and 0 < stats["entropy"] <= math.log(10)
    monkeypatch.setattr(C, "train_classifier", lambda *a, **k: pytest.fail("retrained a cached classifier"))
    again, info2 = C.load_or_train(data, TINY)
    assert info2 == info
    assert torch.equal(C.predict(again, data.heldout), C.predict(model, data.heldout))
    other_seed = C.Recipe(**{**TINY.__dict__, "seed": 1})
    with pytest.raises(pytest.fail.Exception, match="retrained"):     # another key: not the cached one
        C.load_or_train(data, other_seed)


def test_classify_refuses_a_dataset_without_labels(tmp_path):
    shapes = load_dataset(Folder(root=str(tmp_path), dataset="synthetic", num_images=8, image_size=16))
    with pytest.raises(BenchError, match="'classify' needs class labels"):
        C.load_or_train(shapes, TINY)
