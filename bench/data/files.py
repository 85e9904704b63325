"""File-backed datasets: CIFAR-10 (bench/data/cifar.py), Fashion-MNIST (idx files) and any
image folder, decoded once into uint8 tensors and cached on disk. `bench.data` re-exports all of it.

Images are resized (shorter side, antialiased, torchvision) and centre-cropped to `image_size`.
`folder` reads recursively, flat or one sub-folder per class; `train/` + `test/` sub-folders (or
Fruits-360's `Training/` + `Test/`) are used as the splits, else a seeded `holdout` fraction is kept
apart, whole groups at a time when `group_by` (a regex on the relative path) is set: study 003's
cross-validation leaked near-duplicate photos of one fruit across folds; `group_by: '^[^/]+'` keeps
each class folder on one side.

Decoded tensors are cached in `bench.cache.cache_dir("data")` ($BENCH_CACHE/data, default
~/.cache/bench/data), keyed by a hash of the source (absolute root, file names, sizes and mtimes) and of every option that changes the pixels;
files are written atomically (temp file + os.replace).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import random
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from bench.cache import cache_dir
from bench.data.labels import folder_labels
from bench.data.splits import holdout_split
from bench.errors import BenchError
from bench.images import hw, size_label

CACHE_VERSION = 2                                      # 2: class labels stored too
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}
TRAIN_DIRS, TEST_DIRS = {"train", "training"}, {"test", "testing"}
CIFAR_ROOT = Path("~/.cache/bench/datasets")          # where cifar10 looks when `root` is unset
FASHION_ROOT = Path("/usr/share/datasets")            # Debian's dataset-fashion-mnist


# A loaded dataset: uint8 training and held-out tensors, and a record of where they came from.
@dataclass
class Dataset:
    train: torch.Tensor                 # uint8 [N, C, H, W]
    heldout: torch.Tensor               # uint8 [M, C, H, W]: test split or seeded hold-out
    name: str                           # key of DATASETS
    info: dict = field(default_factory=dict)  # source, counts, split, cache file, cache_hit
    train_labels: torch.Tensor | None = None    # int64 [N] class indices (None: no classes)
    heldout_labels: torch.Tensor | None = None  # int64 [M]
    classes: list | None = None                 # class names, index = label
    test: torch.Tensor | None = None            # uint8: the dataset's own test split (`data.test_root`)
    test_labels: torch.Tensor | None = None     # int64, class indices into `classes` when named alike
    train_paths: list | None = None             # relative path of each training image (folder only)


# ---------------------------------------------------------------- cache

def _cached(cfg, key: dict, build: Callable[[], tuple]) -> Dataset:
    """The tensors for `key` from the cache, or `build()` -> (train, heldout, info, labels or None)."""
    key = {**key, "dataset": cfg.dataset, "image_size": cfg.image_size, "channels": cfg.channels,
           "limit": cfg.limit, "version": CACHE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("data") / f"{cfg.dataset}-{size_label(cfg.image_size)}px-c{cfg.channels}-{digest}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            info = {**blob["info"], "cache": str(path), "cache_hit": True}
            return Dataset(blob["train"], blob["heldout"], cfg.dataset, info, *(blob["labels"] or ()))
        except Exception as e:                              # truncated or foreign file: rebuild it
            warnings.warn(f"ignoring unreadable data cache {path}: {e}")
    train, heldout, info, labels = build()
    info = {**info, "train": len(train), "heldout": len(heldout), "key": key,
            "heldout_is_test": not info["split"].startswith("seeded")}  # the data's own test split
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"train": train, "heldout": heldout, "info": info, "labels": labels}, tmp)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write data cache {path}: {e}")
    finally:
        tmp.unlink(missing_ok=True)
    return Dataset(train, heldout, cfg.dataset, {**info, "cache": str(path), "cache_hit": False},
                   *(labels or ()))


def _fingerprint(rows: list[tuple]) -> str:
    """Hash of (name, size, mtime_ns) rows: changes when any source file does."""
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _stat_rows(paths: list[Path]) -> list[tuple]:
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def _scan_images(root: Path) -> list[tuple[str, int, int]]:
    """Sorted (relative posix path, size, mtime_ns) of every image under `root`; dot-files skipped."""
    rows = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root).as_posix()
        for f in files:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                st = os.stat(os.path.join(folder, f))
                rows.append((f if rel == "." else f"{rel}/{f}", st.st_size, st.st_mtime_ns))
    return sorted(rows)


# ---------------------------------------------------------------- shared tensor helpers

def _caps(n_train: int, n_held: int, limit: int | None) -> tuple[int, int]:
    """Training count capped at `limit`; held-out count scaled by the same factor (>= 1 if any)."""
    if limit is None or limit >= n_train:
        return n_train, n_held
    return limit, min(n_held, max(1 if n_held else 0, round(n_held * limit / n_train)))


def _pick(n: int, k: int, seed: int) -> list[int]:
    """Sorted seeded subset of k of range(n) (all of it when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def _resize_crop(x: torch.Tensor, size, chunk: int = 4096) -> torch.Tensor:
    """Resize (antialiased) to cover `size` (S or (H, W)) and centre-crop to it; [..., C, H, W].
    A square S resizes the shorter side to S; [H, W] scales by max(H/h, W/w) (neither side below)."""
    h, w = hw(size)
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if x.ndim == 4 and len(x) > chunk:
        return torch.cat([_resize_crop(x[i:i + chunk], size) for i in range(0, len(x), chunk)])
    if h == w:
        return TF.center_crop(TF.resize(x, h, antialias=True), [h, w])
    scale = max(h / x.shape[-2], w / x.shape[-1])
    cover = [max(h, round(x.shape[-2] * scale)), max(w, round(x.shape[-1] * scale))]
    return TF.center_crop(TF.resize(x, cover, antialias=True), [h, w])


def _from_arrays(train: np.ndarray, heldout: np.ndarray, cfg, labels=None) -> tuple:
    """[N, H, W(, C)] uint8 arrays -> capped, channel-converted, resized tensors (+ picked labels)."""
    k, j = _caps(len(train), len(heldout), cfg.limit)
    out, picked = [], []
    for arr, count, lab in ((train, k, labels and labels[0]), (heldout, j, labels and labels[1])):
        pick = _pick(len(arr), count, cfg.seed)
        picked.append(None if lab is None else torch.as_tensor(np.asarray(lab)[pick], dtype=torch.int64))
        x = torch.from_numpy(np.ascontiguousarray(arr[pick]))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if x.shape[1] != cfg.channels:
            x = TF.rgb_to_grayscale(x) if cfg.channels == 1 else x.expand(-1, 3, -1, -1)
        out.append(_resize_crop(x.contiguous(), cfg.image_size))
    return out[0], out[1], picked[0], picked[1]


# ---------------------------------------------------------------- loaders

def load_fashion_mnist(cfg) -> Dataset:
    """Fashion-MNIST idx files (gzipped or not) found under `root` or /usr/share/datasets."""
    root = Path(cfg.root or FASHION_ROOT).expanduser().resolve()
    stems = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    found = [sorted(root.rglob(s)) + sorted(root.rglob(s + ".gz")) if root.is_dir() else [] for s in stems]
    if not all(found):
        raise BenchError(f"data.root: Fashion-MNIST files {', '.join(stems)} (.gz) not found under {root}; "
                         "install Debian's dataset-fashion-mnist or point data.root at them")
    files = [f[0] for f in found]
    key = {"root": str(root), "files": _fingerprint(_stat_rows(files)),
           "seed": cfg.seed if cfg.limit else None}

    def build():
        train, heldout, _, _ = _from_arrays(_read_idx(files[0]), _read_idx(files[1]), cfg)
        return train, heldout, {"source": str(files[0].parent), "split": "Fashion-MNIST train/t10k"}, None

    return _cached(cfg, key, build)


def _read_idx(path: Path) -> np.ndarray:
    """LeCun's idx format: 2 zero bytes, type 0x08 (uint8), ndim, big-endian dims, then the data."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise BenchError(f"data.root: {path} is not a uint8 idx file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_folder(cfg) -> Dataset:
    """Every image under `root` (recursively); `train/`+`test/` sub-folders split it, else a hold-out."""
    if not cfg.root:
        raise BenchError("data.root: required for dataset 'folder' (a folder of images)")
    root = Path(cfg.root).expanduser().resolve()
    if not root.is_dir():
        raise BenchError(f"data.root: {root} is not a folder")
    rows = _scan_images(root)
    if not rows:
        raise BenchError(f"data.root: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}")
    key = {"root": str(root), "files": _fingerprint(rows), "holdout": cfg.holdout,
           "group_by": cfg.group_by, "seed": cfg.seed}

    train, heldout, split = _split_folder([r[0] for r in rows], cfg)   # cheap: paths only
    k, j = _caps(len(train), len(heldout), cfg.limit)
    train = [train[i] for i in _pick(len(train), k, cfg.seed)]
    heldout = [heldout[i] for i in _pick(len(heldout), j, cfg.seed)]

    def build():
        tensors = [_decode_all([root / r for r in names], cfg) for names in (train, heldout)]
        return (*tensors, {"source": str(root), "split": split},
                folder_labels(train, heldout, TRAIN_DIRS | TEST_DIRS))

    return dataclasses.replace(_cached(cfg, key, build), train_paths=train)


def _split_folder(rels: list[str], cfg) -> tuple[list[str], list[str], str]:
    """Relative paths -> (train, held-out, description): the split folders if present, else a hold-out."""
    tops = {r.split("/")[0].lower(): r.split("/")[0] for r in rels if "/" in r}
    train_dir = next((tops[t] for t in sorted(TRAIN_DIRS) if t in tops), None)
    test_dir = next((tops[t] for t in sorted(TEST_DIRS) if t in tops), None)
    if train_dir and test_dir:
        train = [r for r in rels if r.startswith(train_dir + "/")]
        test = [r for r in rels if r.startswith(test_dir + "/")]
        return train, test, f"sub-folders {train_dir}/ and {test_dir}/"
    return holdout_split(rels, cfg.holdout, cfg.group_by, cfg.seed)


def _decode_all(paths: list[Path], cfg) -> torch.Tensor:
    """Decode `paths` in parallel threads (PIL releases the GIL) into uint8 [N, C, H, W]."""
    s = cfg.image_size
    out = torch.empty(len(paths), cfg.channels, *hw(s), dtype=torch.uint8)

    def work(i):
        out[i] = decode_image(paths[i], s, cfg.channels)

    with ThreadPoolExecutor(min(32, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(paths), desc=f"decode {cfg.dataset}", unit="img", leave=False,
                 mininterval=1.0, disable=len(paths) < 1000) as bar:
        for _ in pool.map(work, range(len(paths))):
            bar.update()
    return out


def decode_image(path: Path, size, channels: int) -> torch.Tensor:
    """One file -> uint8 [C, H, W] (`size` S or (H, W)): PIL decode (JPEG draft-scaled, never below
    the size), resize, crop."""
    mode = "RGB" if channels == 3 else "L"
    h, w = hw(size)
    try:
        with Image.open(path) as im:
            im.draft(mode, (w, h))              # JPEG: DCT-domain downscale, both sides stay >= size
            x = TF.pil_to_tensor(im.convert(mode))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise BenchError(f"data.root: cannot decode {path}: {e}") from None
    return _resize_crop(x, size)

