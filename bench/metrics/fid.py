"""FID, KID, precision/recall from Inception features, the reference-statistics cache, the protocol.

Sources:
- FID: Heusel et al. 2017, d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); numerics as pytorch-fid's
  `calculate_frechet_distance` (scipy sqrtm, eps on the diagonal if singular, drop a tiny imaginary part),
  without its deprecated `sqrtm(disp=False)`.
- KID: Binkowski et al. 2018, unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, mean and std
  over random subsets (as torch-fidelity / the paper's code).
- Precision / recall: Kynkaanniemi et al. 2019, k-NN balls around each feature vector as the manifold.
- Quantization: torchvision `save_image` (x * 255 + 0.5, clamp, truncate), so in-memory samples are
  exactly the pixels a saved PNG would hold.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from bench.errors import BenchError
from bench.metrics.inception import cache_dir

REFERENCE_KEY_FIELDS = ("dataset", "split", "n", "resolution", "weights_sha256", "preprocessing")


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8, bit-identical to `save_image((x + 1) / 2)` read back (fp32 math)."""
    return ((x.float() + 1) / 2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64, as pytorch-fid's `calculate_activation_statistics`."""
    feats = np.asarray(feats, dtype=np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (pytorch-fid's numerics)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise BenchError(f"FID: statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():   # product nearly singular
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise BenchError(f"FID: sqrtm has an imaginary component {np.abs(covmean.imag).max():.3g}; "
                             "too few samples for the feature dimension?")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(feats1, feats2) -> float:
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2))


def _poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3: the kernel diagonals are left out."""
    m, d = x.shape
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kid(feats1, feats2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over `subsets` random subsets of min(subset_size, N1, N2) rows each."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise BenchError(f"KID: needs at least 2 samples per set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    values = [_poly_mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)],
                                  f2[rng.choice(len(f2), m, replace=False)]) for _ in range(subsets)]
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
    return cache_dir() / "fid_stats" / f"{reference_key_hash(key)}.npz"


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def protocol_key(protocol) -> str:
    """One readable string per protocol; rows are ranked together only when their keys are equal."""
    p = protocol.to_dict() if isinstance(protocol, Protocol) else dict(protocol)
    return (f"inception={p['weights_sha256']} {p['preprocessing']} n={p['n_generated']} "
            f"ref={p['reference_split']}:{p['reference_n']} {p['sampler']}/{p['steps']} eta={p['eta']:g} "
            f"{'ema' if p['ema'] else 'raw'} seed={p['sampling_seed']}")


def protocol_differences(protocols) -> dict:
    """{field: sorted distinct values} for the fields on which `protocols` disagree (the "why")."""
    rows = [p.to_dict() if isinstance(p, Protocol) else dict(p) for p in protocols]
    fields = [f.name for f in dataclasses.fields(Protocol)]
    return {f: sorted({r.get(f) for r in rows}, key=str) for f in fields if len({r.get(f) for r in rows}) > 1}
