"""FID, KID, precision/recall from Inception features, the reference-statistics cache, the protocol.

Sources:
- FID: Heusel et al. 2017, d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); checked against
  pytorch-fid's `calculate_frechet_distance`. The trace term comes from the eigenvalues of S1 S2
  (as torchmetrics' FID) rather than scipy's sqrtm, which is ~2x slower on a CPU; `method="sqrtm"`
  calls pytorch-fid's `calculate_frechet_distance` itself.
- KID: Binkowski et al. 2018, unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3
  (torchmetrics' `poly_mmd`), mean and std over random subsets (as torch-fidelity / the paper's code).
- Precision / recall: Kynkaanniemi et al. 2019, k-NN balls around each feature vector as the manifold.
- Quantization of the samples scored: `bench.images.to_uint8`, torchvision `save_image`'s rounding
  (x * 255 + 0.5, clamp, truncate), so in-memory samples are exactly the pixels a saved PNG holds.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy import linalg
from torchmetrics.image.kid import poly_mmd

from bench.cache import cache_dir
from bench.errors import BenchError, choices_error

REFERENCE_KEY_FIELDS = ("dataset", "split", "n", "resolution", "weights_sha256", "preprocessing")


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64, as pytorch-fid's `calculate_activation_statistics`."""
    feats = np.asarray(feats, dtype=np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


FRECHET_METHODS = ("eigvals", "sqrtm")


def _pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps: float) -> float:
    """pytorch-fid's own `calculate_frechet_distance` (scipy sqrtm), its ValueError a BenchError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)    # its sqrtm(disp=False), scipy >= 1.16
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular when N <= D: expected
        try:
            return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps))
        except ValueError as err:   # "Imaginary component ..."
            raise BenchError(f"FID: {err}; too few samples for the feature dimension?") from None


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "eigvals") -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^1/2) = sum of sqrt(eigenvalues of S1 S2) (they are real and >= 0 in exact arithmetic;
    the real part of the complex square roots is kept, as pytorch-fid keeps sqrtm's real part).
    `method="sqrtm"` runs pytorch-fid's own steps instead: the same number to ~1e-7 relative, but
    scipy >= 1.16's sqrtm of a 2048 x 2048 matrix takes ~2x as long as eigvals on a CPU.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise BenchError(f"FID: statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    if method not in FRECHET_METHODS:
        raise choices_error("frechet_distance", "method", method, FRECHET_METHODS)
    if method == "sqrtm":
        return _pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps)
    tr_covmean = float(np.sqrt(np.linalg.eigvals(sigma1 @ sigma2).astype(complex)).real.sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(feats, reference) -> float:
    """FID of features [N, D] against reference features [M, D] or reference stats (mu, sigma).

    With N - 1 < D, S1 = A^T A for the centred rows A = (f - mu1) / sqrt(N - 1), and the nonzero
    eigenvalues of S1 S2 are those of the N x N symmetric matrix A S2 A^T: the same trace, exactly,
    without a D x D eigenproblem (small-N proxies and tests take milliseconds instead of seconds).
    """
    if not isinstance(reference, tuple) and len(reference) < len(feats):
        feats, reference = reference, feats   # FID is symmetric: put the smaller set first
    feats = np.asarray(feats, dtype=np.float64)
    mu2, sigma2 = reference if isinstance(reference, tuple) else feature_stats(reference)
    n, d = feats.shape
    if n - 1 >= d:
        return frechet_distance(*feature_stats(feats), mu2, sigma2)
    mu1 = feats.mean(axis=0)
    if mu1.shape != np.shape(mu2) or np.shape(sigma2) != (d, d):
        raise BenchError(f"FID: features have dimension {d}, the reference {np.shape(mu2)}")
    a = (feats - mu1) / np.sqrt(n - 1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(a @ sigma2 @ a.T), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + np.trace(sigma2) - 2 * tr_covmean)


def kid(feats1, feats2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over `subsets` random subsets of min(subset_size, N1, N2) rows each."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise BenchError(f"KID: needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    t1, t2 = torch.from_numpy(f1), torch.from_numpy(f2)
    values = [float(poly_mmd(t1[rng.choice(len(f1), m, replace=False)],
                             t2[rng.choice(len(f2), m, replace=False)])) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the self-distance 0 is skipped)."""
    return torch.cat([torch.cdist(rows, feats).kthvalue(k + 1, dim=1).values for rows in feats.split(block)])


def _covered(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, block: int) -> float:
    """Fraction of query rows inside at least one ball (ref_i, radii_i)."""
    inside = [(torch.cdist(rows, ref) <= radii[None]).any(dim=1) for rows in query.split(block)]
    return float(torch.cat(inside).double().mean())


def precision_recall(f_real, f_fake, k: int = 3, *, device="cpu", block: int = 1024) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds."""
    real, fake = (torch.as_tensor(np.asarray(f), dtype=torch.float32, device=device) for f in (f_real, f_fake))
    if min(len(real), len(fake)) <= k:
        raise BenchError(f"precision_recall: needs more than k={k} samples per set")
    precision = _covered(fake, real, _knn_radii(real, k, block), block)
    recall = _covered(real, fake, _knn_radii(fake, k, block), block)
    return {"precision": precision, "recall": recall}


# ---------------------------------------------------------------- reference statistics cache

def reference_key_hash(key: dict) -> str:
    """Hash of the whole key: any changed field names a different file."""
    missing = [f for f in REFERENCE_KEY_FIELDS if f not in key]
    if missing:
        raise BenchError(f"reference statistics key: missing {', '.join(missing)}; "
                         f"needs {', '.join(REFERENCE_KEY_FIELDS)}")
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def reference_path(key: dict) -> Path:
    return cache_dir("fid_stats") / f"{reference_key_hash(key)}.npz"


def _load_reference(key: dict, names: tuple[str, ...]) -> dict | None:
    """The cached arrays `names` for `key`, or None when absent (or stored under another key)."""
    path = reference_path(key)
    if not path.is_file():
        return None
    with np.load(path) as data:
        if json.loads(str(data["key"])) != json.loads(json.dumps(key, sort_keys=True, default=str)):
            return None   # a hash collision or a hand-edited file: recompute
        return {n: data[n] for n in names} if all(n in data for n in names) else None


def _save_reference(key: dict, computed) -> None:
    """Store mu, sigma (float64) and, when given features, the features (float32: lossless for fp32 nets)."""
    if isinstance(computed, tuple):
        arrays = {"mu": computed[0], "sigma": computed[1]}
    else:
        mu, sigma = feature_stats(computed)
        arrays = {"mu": mu, "sigma": sigma, "feats": np.asarray(computed, np.float32)}
    path = reference_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    with open(tmp, "wb") as f:
        np.savez(f, key=json.dumps(key, sort_keys=True, default=str), **arrays)
    os.replace(tmp, path)   # atomic: readers see the old file or the whole new one


def reference_stats(key: dict, compute_fn) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the reference set named by `key`, computed once by `compute_fn` and cached.

    `key` holds at least REFERENCE_KEY_FIELDS; `compute_fn()` returns features [N, D] or (mu, sigma).
    """
    data = _load_reference(key, ("mu", "sigma"))
    if data is None:
        _save_reference(key, compute_fn())
        data = _load_reference(key, ("mu", "sigma"))
    return data["mu"], data["sigma"]


def reference_features(key: dict, compute_fn) -> np.ndarray:
    """Reference features [N, D] (float64) for KID / precision-recall, cached with the statistics."""
    data = _load_reference(key, ("feats",))
    if data is None:
        _save_reference(key, compute_fn())
        data = _load_reference(key, ("feats",))
    if data is None:
        raise BenchError("reference features: compute_fn returned (mu, sigma); KID needs features")
    return data["feats"].astype(np.float64)


# ---------------------------------------------------------------- protocol

@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything that makes two FID/KID numbers comparable; recorded with every result."""
    weights_sha256: str      # sha256 of the Inception weights file
    preprocessing: str       # inception.PREPROCESSING
    n_generated: int         # generated samples scored
    reference_split: str     # train (default, as DDPM) | test
    reference_n: int         # reference images behind (mu, sigma)
    sampler: str             # ddpm | ddim | respaced ...
    steps: int               # sampling steps
    eta: float               # DDIM eta (1.0 for ancestral DDPM)
    ema: bool                # EMA weights (True) or raw weights
    sampling_seed: int       # seed of the sampling noise
    inception_dtype: str = "fp32"  # Inception precision (fp32: strict, no TF32; bf16: autocast)
    noise: str = "per_image"  # per_image: image i's noise from (seed, i) (bench.noise); per_batch: before

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# What a sampler ablation varies (study 002, 004; `eval.variants`): recorded with every result and
# shown when rows differ, but not part of the key, so the sampler rows of one suite rank together.
SAMPLING_FIELDS = ("sampler", "steps", "eta")
METRIC_LIBRARIES = ("torchmetrics", "pytorch-fid", "scipy", "torch", "torchvision")


def protocol_key(protocol) -> str:
    """One readable string per protocol; rows are ranked together only when their keys are equal.
    The sampling fields are the treatment a suite compares, like the architecture, not the key."""
    p = protocol.to_dict() if isinstance(protocol, Protocol) else dict(protocol)
    return (f"inception={p['weights_sha256']} {p['preprocessing']} n={p['n_generated']} "
            f"ref={p['reference_split']}:{p['reference_n']} "
            f"{'ema' if p['ema'] else 'raw'} seed={p['sampling_seed']}"
            + (f" inception_dtype={p['inception_dtype']}" if p.get("inception_dtype", "fp32") != "fp32" else "")
            + f" noise={p.get('noise', 'per_batch')}")  # results older than per-image noise: per_batch


def library_versions() -> dict:
    """Installed versions of the libraries behind the metrics (SSIM/PSNR, FID, sqrtm), for the protocol."""
    out = {}
    for name in METRIC_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def protocol_differences(protocols) -> dict:
    """{field: sorted distinct values} for the fields on which `protocols` disagree (the "why")."""
    rows = [p.to_dict() if isinstance(p, Protocol) else dict(p) for p in protocols]
    fields = [f.name for f in dataclasses.fields(Protocol)]
    return {f: sorted({r.get(f) for r in rows}, key=str) for f in fields if len({r.get(f) for r in rows}) > 1}


def fid_kid_at_n(feats: np.ndarray, stats, ref: np.ndarray, ns, subsets: int, subset_size: int,
                 seed: int) -> list[dict]:
    """FID and KID of the first n features for each n (study 001, Fig. 9: prefixes of one set)."""
    rows = []
    for n in sorted(set(ns)):
        kid_mean, kid_std = kid(feats[:n], ref, subsets, min(subset_size, n, len(ref)), seed=seed)
        rows.append({"n": n, "fid": fid_from_features(feats[:n], stats), "kid_mean": kid_mean,
                     "kid_std": kid_std})
    return rows
