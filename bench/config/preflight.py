"""Every file and device a suite names, checked after validation and before any work (nothing is
written yet): each distinct data config is loaded once (decoding into the data cache, so bad, truncated
or missing images are refused now, not after a run has trained), the held-out and FID reference
splits are large enough, the Inception weights file exists, and the devices are there.

Decision on broken images: a folder with one undecodable file (truncated, or not an image under an
image extension) is refused with the file named, never skipped: a silently smaller data set would
change every metric of the suite without a word.
"""
from __future__ import annotations

from pathlib import Path

from bench.data import CIFAR_ROOT, Dataset, DatasetMemo, load_dataset
from bench.device import resolve_device
from bench.errors import BenchError, located
from bench.metrics.inception import FEATURE_DIM, find_weights
from bench.metrics.quality import FEATURE_METRICS

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def preflight(suite) -> DatasetMemo:
    """Check every run's inputs; returns the datasets it loaded, for the run to reuse."""
    where = suite.path
    datasets = DatasetMemo(lambda cfg: _load(cfg, where))
    for spec in suite.runs:
        dataset = datasets(spec.data)
        try:
            resolve_device(spec.train.device)
            _check_splits(spec, dataset)
        except BenchError as err:
            raise located(where, err) from None
        if FEATURE_METRICS & set(spec.eval.metrics) or spec.eval.fid_proxy_n:
            try:
                find_weights(spec.eval.inception_weights)
            except BenchError as err:
                raise BenchError(f"{where}: eval.inception_weights: {err}") from None
    return datasets


def _load(cfg, where: str) -> Dataset:
    if cfg.dataset == "cifar10" and not cfg.download:
        _check_cifar(cfg, where)
    try:
        return load_dataset(cfg)
    except BenchError as err:
        raise located(where, err) from None
    except (OSError, RuntimeError, ValueError, EOFError) as err:  # torchvision's own refusals
        raise BenchError(f"{where}: data.root: cannot load {cfg.dataset} from {cfg.root}: "
                         f"{type(err).__name__}: {err}") from None


def _check_cifar(cfg, where: str) -> None:
    """torchvision's CIFAR-10 python batches are all there (else it fails mid-run, unnamed)."""
    root = Path(cfg.root or CIFAR_ROOT).expanduser()
    folder = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    missing = [f for f in CIFAR_FILES if not (folder / f).is_file()]
    if folder.is_dir() and missing:
        raise BenchError(f"{where}: data.root: {folder} lacks {', '.join(missing)}; unpack "
                         f"cifar-10-python.tar.gz there or set data.download: true")


def _check_splits(spec, dataset: Dataset) -> None:
    """Held-out images for the validation loss and conditioning; enough FID reference images."""
    held, ev = len(dataset.heldout), spec.eval
    if held < 1 or len(dataset.train) < 1:
        raise BenchError(f"data.holdout: the split leaves {len(dataset.train)} training and {held} "
                         f"held-out images; both need at least 1 (raise data.holdout or add images)")
    if spec.task.kind != "unconditional":
        need = max(ev.grid, ev.sample_batch, *([ev.fid_n] if FEATURE_METRICS & set(ev.metrics) else []))
        if held < need:
            raise BenchError(f"data.holdout: task {spec.task.kind} conditions on held-out images: "
                             f"needs {need} (eval.grid, eval.sample_batch, eval.fid_n), has {held}")
    wanted = [ev.fid_n] if FEATURE_METRICS & set(ev.metrics) else []
    wanted += [ev.fid_proxy_n] if ev.fid_proxy_n else []
    if not wanted:
        return
    split = dataset.train if ev.fid_reference == "train" else dataset.heldout
    if ev.fid_reference_n and ev.fid_reference_n > len(split):
        raise BenchError(f"eval.fid_reference_n: {ev.fid_reference_n} reference images asked for; "
                         f"the {ev.fid_reference} split has {len(split)}")
    have, need = min(len(split), ev.fid_reference_n or len(split)), min(max(wanted), FEATURE_DIM)
    if have < need:
        raise BenchError(f"eval.fid_reference: {ev.fid_reference} gives {have} reference images; "
                         f"FID needs at least min(N generated, {FEATURE_DIM}) = {need} (use "
                         f"fid_reference: train, a larger data.holdout or a smaller eval.fid_n)")
