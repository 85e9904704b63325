"""bench.data: loaders, splits, cache (all on CPU, tiny images; on-device batches in test_batches.py)."""
from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import bench.data as data
import bench.data.files as datasets_files
from bench.config.schema import DataConfig
from bench.data import load_dataset
from bench.errors import BenchError

CIFAR_JPEG = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg.tar.gz"


Cfg = DataConfig  # the real schema dataclass: a new data key reaches these tests by itself


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def cifar_jpegs(tmp_path_factory) -> Path:
    """test/cat and test/dog of the shared CIFAR-10 JPEG archive (1000 each)."""
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"{CIFAR_JPEG} not present")
    out = tmp_path_factory.mktemp("cifar")
    subprocess.run(["tar", "-xzf", str(CIFAR_JPEG), "-C", str(out), "test/cat", "test/dog"], check=True)
    return out / "test"


def _copy(src: Path, dst: Path, names: range) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for i in names:
        shutil.copy(src / f"{i:04d}.jpg", dst / f"{i:04d}.jpg")


# ---------------------------------------------------------------- synthetic

def test_synthetic_deterministic_shapes_and_dtype():
    a, b = load_dataset(Cfg(num_images=64, image_size=16)), load_dataset(Cfg(num_images=64, image_size=16))
    c = load_dataset(Cfg(num_images=64, image_size=16, seed=1))
    assert a.train.shape == (64, 3, 16, 16) and a.train.dtype == torch.uint8
    assert a.heldout.shape == (6, 3, 16, 16)                      # round(0.1 * 64)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    assert (a.train != c.train).float().mean() > 0.5
    assert not any(torch.equal(h, t) for h in a.heldout for t in a.train)
    assert a.train.float().std() > 40                              # real content, not a flat colour


def test_synthetic_grayscale_and_limit():
    d = load_dataset(Cfg(num_images=100, image_size=8, channels=1, limit=20, holdout=0.2))
    assert d.train.shape == (20, 1, 8, 8) and d.heldout.shape == (4, 1, 8, 8)
    assert d.info["cache"] is None


# ---------------------------------------------------------------- folder

def test_folder_with_train_test_subfolders(cifar_jpegs, tmp_path):
    root = tmp_path / "imgs"
    for cls in ("cat", "dog"):
        _copy(cifar_jpegs / cls, root / "train" / cls, range(10))
        _copy(cifar_jpegs / cls, root / "test" / cls, range(10, 13))
    d = load_dataset(Cfg(dataset="folder", root=str(root), image_size=16))
    assert d.train.shape == (20, 3, 16, 16) and d.heldout.shape == (6, 3, 16, 16)
    assert d.train.dtype == torch.uint8 and "train/ and test/" in d.info["split"]
    full = load_dataset(Cfg(dataset="folder", root=str(root), image_size=32))
    ref = TF.pil_to_tensor(Image.open(root / "train/cat/0000.jpg").convert("RGB"))
    assert torch.equal(full.train[0], ref)                         # sorted order, no resize at 32 px
    assert d.classes == ["cat", "dog"]                             # the class folders below train/, test/
    assert d.train_labels.tolist() == [0] * 10 + [1] * 10 and d.heldout_labels.tolist() == [0] * 3 + [1] * 3


def test_flat_folder_has_no_labels(cifar_jpegs, tmp_path):
    _copy(cifar_jpegs / "cat", tmp_path / "flat", range(10))
    d = load_dataset(Cfg(dataset="folder", root=str(tmp_path / "flat"), image_size=8))
    assert d.classes is None and d.train_labels is None


def test_folder_flat_holdout_and_limit(cifar_jpegs, tmp_path):
    root = tmp_path / "flat"
    _copy(cifar_jpegs / "cat", root, range(40))
    d = load_dataset(Cfg(dataset="folder", root=str(root), image_size=8, channels=1, holdout=0.25))
    assert d.train.shape == (30, 1, 8, 8) and d.heldout.shape == (10, 1, 8, 8)
    capped = load_dataset(Cfg(dataset="folder", root=str(root), image_size=8, holdout=0.25, limit=12))
    assert len(capped.train) == 12 and len(capped.heldout) == 4    # held-out capped proportionally


def test_resize_and_center_crop_non_square(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)                          # H=20, W=40: red | green | blue
    img[:, :10, 0], img[:, 10:30, 1], img[:, 30:, 2] = 255, 255, 255
    Image.fromarray(img).save(tmp_path / "wide.png")
    x = data.decode_image(tmp_path / "wide.png", 16, 3)
    assert x.shape == (3, 16, 16)                                  # shorter side 20 -> 16, width 32 -> crop
    expected = TF.center_crop(TF.resize(torch.from_numpy(img).permute(2, 0, 1), 16, antialias=True), [16, 16])
    assert torch.equal(x, expected)
    assert (x[1, :, 2:14] == 255).all() and (x[0, :, 2:14] == 0).all() and (x[2, :, 2:14] == 0).all()
    assert x[1].float().mean() > 240                               # the centre (green) was kept


def _grouped_folder(root: Path, groups: int = 10, per_group: int = 5) -> None:
    root.mkdir(parents=True)
    for g in range(groups):                                        # every image of group g has value 20·g
        for j in range(per_group):
            Image.fromarray(np.full((8, 8), 20 * g, np.uint8)).save(root / f"fruit{g}_angle{j}.png")


def test_group_by_keeps_groups_whole(tmp_path):
    _grouped_folder(tmp_path / "g")
    for seed in range(3):
        d = load_dataset(Cfg(dataset="folder", root=str(tmp_path / "g"), image_size=8, channels=1,
                             holdout=0.3, group_by=r"^fruit(\d+)_", seed=seed))
        train, held = set(d.train.unique().tolist()), set(d.heldout.unique().tolist())
        assert not train & held and len(held) == 3 and len(d.heldout) == 15
        assert "groups" in d.info["split"]
    # the same split without group_by mixes the groups (the leakage of study 003)
    d = load_dataset(Cfg(dataset="folder", root=str(tmp_path / "g"), image_size=8, channels=1, holdout=0.3))
    assert set(d.train.unique().tolist()) & set(d.heldout.unique().tolist())


def test_group_by_errors(tmp_path):
    _grouped_folder(tmp_path / "g", groups=2)
    with pytest.raises(BenchError, match="data.group_by: invalid regex"):
        load_dataset(Cfg(dataset="folder", root=str(tmp_path / "g"), group_by="(unclosed"))
    with pytest.raises(BenchError, match="one group"):
        load_dataset(Cfg(dataset="folder", root=str(tmp_path / "g"), group_by="fruit"))


def test_folder_bad_roots(tmp_path):
    with pytest.raises(BenchError, match="data.root: required"):
        load_dataset(Cfg(dataset="folder"))
    with pytest.raises(BenchError, match="not a folder"):
        load_dataset(Cfg(dataset="folder", root=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no images"):
        load_dataset(Cfg(dataset="folder", root=str(tmp_path / "empty")))


# ---------------------------------------------------------------- cache

def test_cache_hit_skips_decoding_and_key_tracks_options(tmp_path, cache, monkeypatch):
    _grouped_folder(tmp_path / "g")
    cfg = Cfg(dataset="folder", root=str(tmp_path / "g"), image_size=8)
    first = load_dataset(cfg)
    assert not first.info["cache_hit"] and Path(first.info["cache"]).parent == cache / "data"

    real = data.decode_image
    monkeypatch.setattr(datasets_files, "decode_image", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    second = load_dataset(cfg)
    assert second.info["cache_hit"] and second.info["cache"] == first.info["cache"]
    assert torch.equal(first.train, second.train) and torch.equal(first.heldout, second.heldout)
    with pytest.raises(AssertionError, match="decoded"):           # a new size is a new key: decodes
        load_dataset(replace(cfg, image_size=4))

    monkeypatch.setattr(datasets_files, "decode_image", real)
    small = load_dataset(replace(cfg, image_size=4))
    assert small.info["cache"] != first.info["cache"] and small.train.shape[-1] == 4
    img = tmp_path / "g/fruit0_angle0.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(img)      # a changed file changes the key
    assert not load_dataset(cfg).info["cache_hit"]
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == []  # no temp files left


# ---------------------------------------------------------------- cifar10 and fashion_mnist

def test_cifar10_missing_root_says_where_and_how(tmp_path):
    with pytest.raises(BenchError, match="download: true") as e:
        load_dataset(Cfg(dataset="cifar10", root=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value)


def test_cifar10_pipeline(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {True: rng.integers(0, 256, (20, 32, 32, 3), np.uint8), False: rng.integers(0, 256, (10, 32, 32, 3), np.uint8)}
    parts = [(f"data_batch_{i + 1}", arrays[True][4 * i:4 * i + 4]) for i in range(5)] + [("test_batch", arrays[False])]
    for name, x in parts:                          # the python batches: CHW rows [N, 3072], labels
        with open(folder / name, "wb") as f:       # (a label we can recompute from the pixels)
            pickle.dump({"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),
                         "labels": [int(v[0, 0, 0]) % 10 for v in x]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    d = load_dataset(Cfg(dataset="cifar10", root=str(tmp_path)))
    assert torch.equal(d.train, torch.from_numpy(arrays[True]).permute(0, 3, 1, 2))
    assert d.heldout.shape == (10, 3, 32, 32)
    g = load_dataset(Cfg(dataset="cifar10", root=str(tmp_path / "cifar-10-batches-py"), channels=1,
                         image_size=16, limit=10))
    assert g.train.shape == (10, 1, 16, 16) and g.heldout.shape == (5, 1, 16, 16)
    assert d.classes == [f"c{i}" for i in range(10)]
    assert d.train_labels.tolist() == [int(x[0, 0, 0]) % 10 for x in arrays[True]]
    c = load_dataset(Cfg(dataset="cifar10", root=str(tmp_path), limit=10))   # picked subset: labels follow
    assert torch.equal(c.train_labels, c.train[:, 0, 0, 0].long() % 10) and len(c.heldout_labels) == 5
    assert load_dataset(Cfg(dataset="cifar10", root=str(tmp_path), limit=10)).info["cache_hit"]
    assert torch.equal(load_dataset(Cfg(dataset="cifar10", root=str(tmp_path), limit=10)).train_labels,
                       c.train_labels)                                    # labels survive the cache


def _write_idx(path: Path, arr: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_fashion_mnist_idx(tmp_path):
    rng = np.random.default_rng(1)
    train, test = rng.integers(0, 256, (12, 28, 28), np.uint8), rng.integers(0, 256, (4, 28, 28), np.uint8)
    (tmp_path / "fashion").mkdir()
    _write_idx(tmp_path / "fashion/train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "fashion/t10k-images-idx3-ubyte.gz", test)
    d = load_dataset(Cfg(dataset="fashion_mnist", root=str(tmp_path), image_size=28, channels=1))
    assert torch.equal(d.train[:, 0], torch.from_numpy(train)) and torch.equal(d.heldout[:, 0], torch.from_numpy(test))
    rgb = load_dataset(Cfg(dataset="fashion_mnist", root=str(tmp_path), image_size=32))
    assert rgb.train.shape == (12, 3, 32, 32) and torch.equal(rgb.train[:, 0], rgb.train[:, 2])
    with pytest.raises(BenchError, match="dataset-fashion-mnist"):
        load_dataset(Cfg(dataset="fashion_mnist", root=str(tmp_path / "fashion-none")))


# ---------------------------------------------------------------- config errors

def test_bad_dataset_name_lists_choices():
    with pytest.raises(BenchError) as e:
        load_dataset(Cfg(dataset="cifar"))
    msg = str(e.value)
    assert msg.startswith("data.dataset: unknown dataset 'cifar'") and "did you mean cifar10" in msg
    assert msg.endswith("choose from cifar10, fashion_mnist, folder, synthetic")


@pytest.mark.parametrize("field,value,match", [("channels", 2, "data.channels"), ("holdout", 1.0, "data.holdout"),
                                               ("image_size", 0, "data.image_size"), ("limit", 0, "data.limit"),
                                               ("num_images", 0, "data.num_images")])
def test_bad_values(field, value, match):
    with pytest.raises(BenchError, match=match):
        load_dataset(replace(Cfg(), **{field: value}))


@pytest.mark.slow
def test_full_cifar10_jpeg_folder(tmp_path):
    """All 60 000 images of the shared archive: the split sizes, then a cache hit on the second load."""
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"{CIFAR_JPEG} not present")
    subprocess.run(["tar", "-xzf", str(CIFAR_JPEG), "-C", str(tmp_path)], check=True)
    cfg = Cfg(dataset="folder", root=str(tmp_path))
    d = load_dataset(cfg)
    assert d.train.shape == (50000, 3, 32, 32) and d.heldout.shape == (10000, 3, 32, 32)
    assert 100 < d.train.float().mean() < 140                      # CIFAR-10's mean pixel is ~120
    again = load_dataset(cfg)
    assert again.info["cache_hit"] and torch.equal(again.heldout, d.heldout)
