"""Statistics behind the leaderboard: bootstrap confidence intervals, paired tests across seeds,
Pareto fronts.

Sources: the percentile bootstrap (Efron & Tibshirani 1993, ch. 13) via `scipy.stats.bootstrap`
with a seeded generator, so a report is reproducible; Student's paired t-test
(`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) on per-seed
differences — a seed fixes the data order and the noise, so runs with the same seed are pairs
(a blocked design); Pareto dominance as in multi-objective optimisation (Deb 2001, ch. 2).

Caveats the report states: with 2-4 seeds a bootstrap CI is narrower than the truth (it can never be
wider than the range of the seeds), and the Wilcoxon test cannot reach p < 0.05 below 6 pairs.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

TESTS = ("ttest", "wilcoxon")
DIRECTIONS = ("minimize", "maximize")
# Metrics where larger is better (everything else is minimized): SSIM, PSNR, throughput, P/R.
_MAXIMIZE = ("ssim", "psnr", "img_per_s", "precision", "recall")


def infer_direction(metric: str) -> str:
    """`maximize` for SSIM/PSNR/throughput/precision/recall, else `minimize` (losses, FID, cost)."""
    return "maximize" if any(key in metric for key in _MAXIMIZE) else "minimize"


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of `values` (NaNs dropped); NaN for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:  # identical values (parameters, FLOPs): the interval is the value itself
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_p_value(a, b, test: str = "ttest") -> float:
    """Two-sided p-value that the paired values `a` and `b` (same seeds, same order) differ."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    if np.all(diff == 0):
        return 1.0
    with warnings.catch_warnings():  # near-constant differences: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "ttest":
            return float(stats.ttest_rel(a, b).pvalue)
        if test == "wilcoxon":
            return float(stats.wilcoxon(a, b).pvalue)
    raise ValueError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")


def compare_paired(entry: dict, baseline: dict, direction: str = "minimize", alpha: float = 0.05,
                   test: str = "ttest", seed: int = 0) -> dict:
    """Entry vs baseline over the seeds both have ({seed: value} each): the mean difference
    entry - baseline, its bootstrap CI, the paired test's p-value and a verdict
    (`better` / `worse` / `not distinguishable`, or `n/a (1 seed)` with fewer than 2 pairs)."""
    seeds = sorted(s for s in set(entry) & set(baseline)
                   if np.isfinite(entry[s]) and np.isfinite(baseline[s]))
    a = np.array([entry[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    out = {"pairs": len(seeds), "delta": float(np.mean(a - b)) if seeds else math.nan,
           "delta_ci_low": math.nan, "delta_ci_high": math.nan, "p_value": math.nan}
    if len(seeds) < 2:
        out["verdict"] = "n/a (1 seed)" if seeds else "n/a (no paired seeds)"
        return out
    out["delta_ci_low"], out["delta_ci_high"] = bootstrap_ci(a - b, seed=seed)
    out["p_value"] = paired_p_value(a, b, test)
    out["verdict"] = verdict(out["delta"], out["p_value"], direction, alpha)
    return out


def verdict(delta: float, p_value: float, direction: str, alpha: float) -> str:
    """`better` / `worse` when p < alpha (the sign of delta read through `direction`)."""
    if not np.isfinite(p_value) or p_value >= alpha or delta == 0:
        return "not distinguishable"
    improved = delta < 0 if direction == "minimize" else delta > 0
    return "better" if improved else "worse"


def pareto_front(quality, cost, quality_direction: str = "minimize",
                 cost_direction: str = "minimize") -> np.ndarray:
    """True where no other point is at least as good on both axes and strictly better on one.
    Points with a NaN coordinate are never on the front (and dominate nothing)."""
    q = np.asarray(quality, dtype=float) * (1 if quality_direction == "minimize" else -1)
    c = np.asarray(cost, dtype=float) * (1 if cost_direction == "minimize" else -1)
    ok = np.isfinite(q) & np.isfinite(c)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = ok & (q <= q[i]) & (c <= c[i]) & ((q < q[i]) | (c < c[i]))
        front[i] = not others.any()
    return front
