"""CIFAR-10 from its python batches (cifar-10-python.tar.gz, the files torchvision's `CIFAR10`
downloads), lossless: `data_batch_1..5` train, `test_batch` is the held-out split, `batches.meta` names
the classes. Read as torchvision reads them (Krizhevsky's pickles, CHW rows) without its md5 check, so
tests can build a tiny fake batch; decoded tensors are cached as every file-backed dataset's are.
Offline, the JPEG copy (../shared/data/cifar10-jpeg.tar.gz, `dataset: folder`) is the fallback; its
pixels are not the original ones, so its FIDs are not comparable with published CIFAR-10 numbers.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10

from bench.data.files import (
    CIFAR_ROOT,
    Dataset,
    _cached,
    _fingerprint,
    _from_arrays,
    _stat_rows,
)
from bench.errors import BenchError


def load_cifar10(cfg) -> Dataset:
    """CIFAR-10's python batches (cifar-10-python.tar.gz, as torchvision's `CIFAR10` downloads them)
    under `root`, lossless: train -> train, test -> held-out."""
    root = Path(cfg.root or CIFAR_ROOT).expanduser().resolve()
    root = root.parent if root.name == "cifar-10-batches-py" else root
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        if not cfg.download:
            raise BenchError(f"data.root: CIFAR-10 not found (looked for {folder}); on a machine with "
                             "internet run python -c \"import torchvision; torchvision.datasets."
                             f"CIFAR10('{root}', download=True)\" and copy {root} here, or set "
                             "data.download: true")
        CIFAR10(str(root), train=True, download=True)
    rows = _stat_rows(sorted(p for p in folder.iterdir() if p.is_file()))
    key = {"root": str(root), "files": _fingerprint(rows), "seed": cfg.seed if cfg.limit else None}

    def build():
        train, train_labels = read_cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)])
        test, test_labels = read_cifar_batches(folder, ["test_batch"])
        classes = _unpickle(folder / "batches.meta")["label_names"]
        x, h, tl, hl = _from_arrays(train, test, cfg, (train_labels, test_labels))
        return x, h, {"source": str(folder), "split": "CIFAR-10 train / test"}, (tl, hl, classes)

    return _cached(cfg, key, build)


def read_cifar_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, list[int]]:
    """Krizhevsky's python batches (what torchvision's CIFAR10 reads, without its md5 check):
    `data` uint8 [N, 3072] in CHW order -> [N, 32, 32, 3], and `labels`."""
    data, labels = [], []
    for name in names:
        entry = _unpickle(folder / name)
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels += list(entry["labels"])
    return np.vstack(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        entry["data" if "data" in entry else "label_names"]
        return entry
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise BenchError(f"data.root: {path} is not a CIFAR-10 python batch ({type(e).__name__}: "
                         f"{e}); unpack cifar-10-python.tar.gz there") from None
