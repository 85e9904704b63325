"""Datasets as uint8 tensors, decoded once and cached; training batches drawn on the device.

`DATASETS` maps a name to a loader `cfg -> Dataset` (cfg: any object with the `DataConfig` fields):
  cifar10        CIFAR-10's python batches in a local root, lossless (`download` only when asked)
  folder         any image folder, flat or one sub-folder per class, read recursively; `train/` +
                 `test/` sub-folders (or Fruits-360's `Training/` + `Test/`) are used as the splits
  fashion_mnist  the idx files of Debian's `dataset-fashion-mnist` (/usr/share/datasets) or of `root`
  synthetic      procedural coloured shapes (bench/datasets_synthetic.py), never cached: it is cheap
The three file-backed loaders, their decoding and on-disk cache live in bench/data/files.py and
are re-exported here; hold-out and k-fold splits (`data.folds`) in bench/data/splits.py. Batches: EDM's `InfiniteSampler`, on the device.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from bench.data.cifar import load_cifar10
from bench.data.files import (  # noqa: F401
    CACHE_VERSION,
    CIFAR_ROOT,
    FASHION_ROOT,
    IMAGE_EXTENSIONS,
    TEST_DIRS,
    TRAIN_DIRS,
    Dataset,
    _caps,
    decode_image,
    load_fashion_mnist,
    load_folder,
)
from bench.data.splits import fold_split
from bench.data.synthetic import draw_shapes
from bench.errors import BenchError, choices_error
from bench.images import hw, to_float


# Infinite epoch-wise shuffled batches on the training device (EDM training/training_loop.py's
# InfiniteSampler, with the data already resident), with random horizontal flips drawn there too.
class DeviceBatches:
    def __init__(self,
        images: torch.Tensor,           # uint8 [N, C, H, W], already on the training device
        batch_size: int,                # images per batch (a batch may span two epochs)
        generator: torch.Generator,     # on the same device: drives order and flips
        flip: bool = True,              # mirror each image left-right with probability 1/2
    ):
        if generator.device.type != images.device.type or len(images) == 0:
            raise ValueError(f"need images ({len(images)}) and generator on one device, "
                             f"got {images.device} and {generator.device}")
        self.images, self.batch_size, self.generator, self.flip = images, batch_size, generator, flip
        self.images_seen = 0
        self._order = torch.empty(0, dtype=torch.long, device=images.device)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        n, bs, dev = len(self.images), self.batch_size, self.images.device
        while len(self._order) < bs:                      # next epoch: a fresh permutation
            perm = torch.randperm(n, generator=self.generator, device=dev)
            self._order = torch.cat([self._order, perm])
        idx, self._order = self._order[:bs], self._order[bs:]
        x = to_float(self.images[idx])
        if self.flip:
            mirror = torch.rand(bs, generator=self.generator, device=dev) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        self.images_seen += bs
        return x

    def state_dict(self) -> dict:
        return {"images_seen": self.images_seen, "order": self._order.cpu(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.images_seen = state["images_seen"]
        self._order = state["order"].to(self.images.device)
        self.generator.set_state(state["generator"])


def load_dataset(cfg) -> Dataset:
    """Validate `cfg` (a DataConfig) and load its dataset, from the cache when possible."""
    if cfg.dataset not in DATASETS:
        raise choices_error("data.dataset", "dataset", cfg.dataset, DATASETS)
    if cfg.channels not in (1, 3):
        raise choices_error("data.channels", "channel count", cfg.channels, (1, 3))
    if min(hw(cfg.image_size)) < 1:
        raise BenchError(f"data.image_size: must be positive, got {cfg.image_size}")
    if not 0 <= cfg.holdout < 1:
        raise BenchError(f"data.holdout: must be in [0, 1), got {cfg.holdout}")
    if cfg.limit is not None and cfg.limit < 1:
        raise BenchError(f"data.limit: must be positive or null, got {cfg.limit}")
    if cfg.dataset == "synthetic" and cfg.num_images < 1:
        raise BenchError(f"data.num_images: must be positive, got {cfg.num_images}")
    if getattr(cfg, "folds", None) is None:
        return _with_test_split(DATASETS[cfg.dataset](cfg), cfg)
    if cfg.group_by:
        raise BenchError(f"data.group_by: {cfg.group_by!r} groups the hold-out, which data.folds "
                         "replaces; set data.folds.group_by instead")
    base = DATASETS[cfg.dataset](dataclasses.replace(cfg, folds=None, holdout=0.0))
    return _with_test_split(fold_split(base, cfg.folds, cfg.seed), cfg)


def _with_test_split(dataset: Dataset, cfg) -> Dataset:
    """Attach `data.test_root` (every image under it, uncapped) as the dataset's test split."""
    test_root = getattr(cfg, "test_root", None)
    if not test_root:
        return dataset
    test = load_folder(dataclasses.replace(cfg, dataset="folder", root=test_root, holdout=0.0,
                                           group_by=None, limit=None))
    labels = None
    if test.classes and dataset.classes:
        index = {name: i for i, name in enumerate(dataset.classes)}
        if all(name in index for name in test.classes):
            labels = torch.tensor([index[test.classes[i]] for i in test.train_labels.tolist()])
    info = {**dataset.info, "test": {"root": test_root, "images": len(test.train),
                                     "cache": test.info.get("cache")}}
    return dataclasses.replace(dataset, test=test.train, test_labels=labels, info=info)


def eval_split(dataset: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(images, labels or None, description) of the split held-out metrics score (`eval.split`)."""
    if split == "heldout":
        return dataset.heldout, dataset.heldout_labels, dataset.info.get("split", "held-out")
    if split != "test":
        raise choices_error("eval.split", "split", split, ("heldout", "test"))
    if dataset.test is not None:
        return dataset.test, dataset.test_labels, f"test split {dataset.info['test']['root']}"
    if dataset.info.get("heldout_is_test"):
        return dataset.heldout, dataset.heldout_labels, dataset.info.get("split", "test")
    raise BenchError(f"eval.split: 'test': dataset {dataset.name!r} has no test split of its own "
                     f"({dataset.info.get('split', 'held-out only')}); set data.test_root or use "
                     "eval.split: heldout")


# ---------------------------------------------------------------- synthetic

def load_synthetic(cfg) -> Dataset:
    """Coloured shapes; train and held-out from disjoint seeded streams. Not cached (fast to draw)."""
    n, m = _caps(cfg.num_images, round(cfg.holdout * cfg.num_images), cfg.limit)
    train = draw_shapes(n, cfg.image_size, 2 * cfg.seed, cfg.channels, cfg.shapes)
    heldout = draw_shapes(m, cfg.image_size, 2 * cfg.seed + 1, cfg.channels, cfg.shapes)
    info = {"source": "procedural shapes", "train": n, "heldout": m, "cache": None, "cache_hit": False,
            "split": f"held-out: {m} further shapes (seed {cfg.seed})"}
    return Dataset(train, heldout, cfg.dataset, info)


DATASETS: dict[str, Callable] = {
    "cifar10": load_cifar10,
    "fashion_mnist": load_fashion_mnist,
    "folder": load_folder,
    "synthetic": load_synthetic,
}


class DatasetMemo:
    """Each distinct data section loaded once per process: `memo(cfg)` -> Dataset. Keyed by the
    section's repr (DataConfig is a frozen dataclass; its repr names every field). `load` is
    `load_dataset` or a wrapper that adds context to its errors (the preflight's)."""

    def __init__(self, load: Callable | None = None):
        self._load, self._loaded = load or load_dataset, {}

    def __call__(self, cfg) -> Dataset:
        key = repr(cfg)
        if key not in self._loaded:
            self._loaded[key] = self._load(cfg)
        return self._loaded[key]

    def __len__(self) -> int:
        return len(self._loaded)
