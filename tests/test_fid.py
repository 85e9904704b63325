"""bench.metrics.fid: Frechet distance, KID, precision/recall, quantization, the reference-statistics
cache and the protocol (the real TF-Inception tests are in test_inception.py)."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance

from bench.errors import BenchError
from bench.images import to_uint8
from bench.metrics import fid, inception
from bench.metrics.fid import (
    Protocol,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid,
    precision_recall,
    protocol_differences,
    protocol_key,
    reference_features,
    reference_stats,
)


def _gauss(n, d, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# -- Frechet distance ------------------------------------------------------------------------------

def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-10)


def test_frechet_matches_closed_form_for_scaled_covariances():
    # S2 = c^2 S1  =>  Tr(S1 + S2 - 2 (S1 S2)^1/2) = (1 - c)^2 Tr(S1)
    a = np.random.default_rng(1).normal(size=(6, 6))
    s1, c = a @ a.T + np.eye(6), 1.7
    assert frechet_distance(np.zeros(6), s1, np.ones(6), c**2 * s1) == pytest.approx(
        6 + (1 - c) ** 2 * np.trace(s1), rel=1e-9)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")   # inside pytorch-fid
@pytest.mark.parametrize("method", ["eigvals", "sqrtm"])
@pytest.mark.parametrize("n", [300, 20])   # full rank, and N < D (singular covariances)
def test_frechet_equals_pytorch_fid_on_the_same_statistics(n, method):
    s1, s2 = feature_stats(np.abs(_gauss(n, 64, seed=2))), feature_stats(np.abs(_gauss(n, 64, 0.3, seed=3)))
    ours = frechet_distance(*s1, *s2, method=method)
    assert ours > 1 and ours == pytest.approx(calculate_frechet_distance(*s1, *s2), rel=1e-8)


@pytest.mark.parametrize("n", [10, 40, 100])   # N < D uses the N x N eigenproblem, N > D the D x D one
def test_fid_from_features_equals_the_statistics_route(n):
    small, big = np.abs(_gauss(n, 48, seed=13)), np.abs(_gauss(70, 48, 0.2, seed=14))
    expected = frechet_distance(*feature_stats(small), *feature_stats(big), method="sqrtm")
    assert fid_from_features(small, big) == pytest.approx(expected, rel=1e-7)
    assert fid_from_features(big, small) == pytest.approx(expected, rel=1e-7)
    assert fid_from_features(small, feature_stats(big)) == pytest.approx(expected, rel=1e-7)


def test_unknown_frechet_method_raises():
    with pytest.raises(BenchError, match="choose from eigvals, sqrtm"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


def test_identical_feature_sets_give_zero():
    f = _gauss(200, 32, seed=4)
    assert abs(fid_from_features(f, f)) < 1e-8 * np.trace(np.cov(f, rowvar=False))


def test_shape_mismatch_raises():
    with pytest.raises(BenchError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# -- KID, precision / recall -------------------------------------------------------------------

def test_kid_equals_the_unbiased_mmd_formula_on_one_full_subset():
    x, y = _gauss(12, 5, seed=5), _gauss(12, 5, 0.5, seed=6)
    k = lambda a, b: (a @ b / 5 + 1) ** 3   # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = kid(x, y, subsets=3, subset_size=12)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std < 1e-12   # subset = whole set


def test_kid_is_unbiased_on_identical_distributions_and_positive_on_shifted_ones():
    same_mean, same_std = kid(_gauss(400, 32, seed=7), _gauss(400, 32, seed=8), subsets=50, subset_size=200)
    assert abs(same_mean) < same_std
    shifted_mean, shifted_std = kid(_gauss(400, 32, seed=7), _gauss(400, 32, 0.5, seed=8), subsets=50,
                                    subset_size=200)
    assert shifted_mean > 10 * shifted_std and shifted_mean > 20 * abs(same_mean)


def test_precision_recall_identical_disjoint_and_mode_collapse():
    real = _gauss(300, 8, seed=9)
    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, _gauss(300, 8, 50.0, seed=10))
    assert far == {"precision": 0.0, "recall": 0.0}
    collapsed = real[np.linalg.norm(real, axis=1) < 2.0] * 0.5     # a few modes, all realistic
    pr = precision_recall(real, collapsed)
    assert pr["precision"] > 0.95 and pr["recall"] < 0.5


# -- quantization ------------------------------------------------------------------------------------

def test_to_uint8_matches_a_save_image_png_round_trip(tmp_path):
    from torchvision.utils import save_image

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g) * 2.4 - 1.2          # includes out-of-range values
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, (2 * 100.5 / 255) - 1, 0.0])  # edges and a .5 tie
    q = to_uint8(x)
    for i in range(len(x)):
        save_image((x[i] + 1) / 2, tmp_path / f"{i}.png")
        png = np.array(Image.open(tmp_path / f"{i}.png").convert("RGB"))
        assert np.array_equal(q[i].permute(1, 2, 0).numpy(), png)
    assert q.dtype == torch.uint8 and q.min() == 0 and q.max() == 255


# -- feature extraction with a seeded tiny CNN standing in for Inception -----------------------------

class TinyFeatureNet(torch.nn.Module):
    """pytorch-fid's interface ([0, 1] images -> [features [B, D, 1, 1]]) in a seeded random CNN."""

    def __init__(self, dim=16, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                torch.nn.Conv2d(8, dim, 3, stride=2, padding=1), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return [self.net(2 * x - 1)]


def _u8(n, seed, c=3, size=16, lo=0, hi=256):
    return torch.randint(lo, hi, (n, c, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_extract_features_batching_iterables_and_grayscale():
    net, images = TinyFeatureNet().eval(), _u8(10, 0)
    f = inception.extract_features(net, images, batch_size=10)
    assert f.shape == (10, 16) and f.dtype == np.float64
    assert np.allclose(f, inception.extract_features(net, images, batch_size=3), atol=1e-6)
    assert np.allclose(f, inception.extract_features(net, iter([images[:4], images[4:]]), batch_size=3),
                       atol=1e-6)
    gray = _u8(5, 1, c=1)
    assert np.array_equal(inception.extract_features(net, gray), inception.extract_features(net, gray.repeat(1, 3, 1, 1)))
    with pytest.raises(BenchError, match="uint8"):
        inception.extract_features(net, images.float())


def test_fid_and_kid_rank_a_shift_above_a_resample_with_the_stand_in():
    net = TinyFeatureNet().eval()
    a, b = (inception.extract_features(net, _u8(150, s, lo=40, hi=200)) for s in (1, 2))
    shifted = inception.extract_features(net, _u8(150, 3, lo=90, hi=250))
    assert fid_from_features(a, b) < 0.1 * fid_from_features(a, shifted)
    assert kid(a, b, subsets=20, subset_size=100)[0] < 0.1 * kid(a, shifted, subsets=20, subset_size=100)[0]


# -- reference-statistics cache and protocol -------------------------------------------------------

KEY = {"dataset": "cifar10", "split": "train", "n": 50, "resolution": 32, "weights_sha256": "ab" * 32,
       "preprocessing": inception.PREPROCESSING}


def test_reference_stats_computed_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    calls, feats = [], _gauss(50, 8, seed=11)
    compute = lambda: calls.append(1) or feats   # noqa: E731
    mu, sigma = reference_stats(KEY, compute)
    mu2, sigma2 = reference_stats(dict(KEY), compute)
    assert len(calls) == 1 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    assert np.allclose(mu, feats.mean(0)) and np.allclose(sigma, np.cov(feats, rowvar=False))
    assert np.allclose(reference_features(KEY, compute), feats.astype(np.float32)) and len(calls) == 1
    assert [p.name for p in (tmp_path / "fid_stats").iterdir()] == [fid.reference_path(KEY).name]


@pytest.mark.parametrize("field", sorted(KEY))
def test_any_changed_key_field_names_a_new_file_and_recomputes(tmp_path, monkeypatch, field):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    reference_stats(KEY, lambda: _gauss(50, 8, seed=12))
    changed = {**KEY, field: KEY[field] + 1 if isinstance(KEY[field], int) else KEY[field] + "x"}
    assert fid.reference_path(changed) != fid.reference_path(KEY)
    mu, _ = reference_stats(changed, lambda: _gauss(50, 8, 5.0, seed=12))
    assert mu.mean() > 4   # not the stale file


def test_reference_key_missing_field_raises():
    with pytest.raises(BenchError, match="missing weights_sha256"):
        fid.reference_path({k: v for k, v in KEY.items() if k != "weights_sha256"})


PROTOCOL = Protocol(weights_sha256="7f" * 32, preprocessing=inception.PREPROCESSING, n_generated=4096,
                    reference_split="train", reference_n=50000, sampler="ddim", steps=50, eta=0.0,
                    ema=True, sampling_seed=0)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Protocol)])
def test_protocol_key_changes_with_every_non_sampling_field_and_differences_name_it(field):
    value = getattr(PROTOCOL, field)
    other = (not value if isinstance(value, bool) else value + 1 if isinstance(value, (int, float))
             else value + "x")
    changed = dataclasses.replace(PROTOCOL, **{field: other})
    # the sampler, steps and eta are what a sampler ablation compares: same key, named as a difference
    assert (protocol_key(changed) == protocol_key(PROTOCOL)) == (field in fid.SAMPLING_FIELDS)
    assert protocol_key(changed.to_dict()) == protocol_key(changed)
    assert list(protocol_differences([PROTOCOL, changed, PROTOCOL.to_dict()])) == [field]


def test_library_versions_name_the_metric_libraries():
    versions = fid.library_versions()
    assert list(versions) == list(fid.METRIC_LIBRARIES)
    assert versions["torchmetrics"] and versions["scipy"] and versions["pytorch-fid"]


def test_protocol_round_trips_through_a_dict():
    assert Protocol(**PROTOCOL.to_dict()) == PROTOCOL and protocol_differences([PROTOCOL] * 2) == {}
