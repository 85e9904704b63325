"""Statistics behind the leaderboard: confidence intervals of a mean over seeds, paired comparisons
to a baseline whose interval and verdict come from one method, Pareto fronts.

A seed fixes the data order and the noise, so runs with the same seed are pairs (a blocked design).
The difference entry - baseline over paired seeds is judged by one method, and its CI is the
inversion of that very test, so "the CI excludes 0" and "p < alpha" always agree:

- `ttest`: Student's paired t-test (`scipy.stats.ttest_rel`) with the paired t-interval
  mean(d) ± t_{n-1, 1-alpha/2} · sd(d) / sqrt(n) (Student 1908; any textbook, e.g. Wasserman 2004,
  ch. 10).
- `wilcoxon`: the exact Wilcoxon signed-rank test (`scipy.stats.wilcoxon`) with its exact interval
  from the Walsh averages (Hodges & Lehmann 1963; Hollander & Wolfe 1999, sec. 3.3). Below 6 pairs
  it cannot reject at alpha = 0.05, and its interval is unbounded.

Fewer than 3 pairs give no test (`too few seeds`): a t-interval on 2 pairs has 1 degree of freedom.
No percentile bootstrap: with the 2-10 seeds of a benchmark it is narrower than the truth (it can
never be wider than the range of the seeds, Efron & Tibshirani 1993, ch. 13). The CI of one entry's
mean is the one-sample Student t-interval. Pareto dominance as in Deb 2001, ch. 2.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

TESTS = ("ttest", "wilcoxon")
DIRECTIONS = ("minimize", "maximize")
MIN_PAIRS = 3
METHODS = {"ttest": "paired t-test with its paired t-interval",
           "wilcoxon": "exact Wilcoxon signed-rank test with its Walsh-average (Hodges-Lehmann) "
                       "interval"}


def summary(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, CI low, CI high) of the finite `values`: NaN where too few (std, CI: 2)."""
    finite = values[np.isfinite(values)]
    mean = finite.mean() if len(finite) else math.nan
    return (mean, finite.std(ddof=1) if len(finite) > 1 else math.nan, *t_interval(finite, confidence))


def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Student t-interval of the mean of `values` (NaNs dropped); NaN for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    mean, se = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * se
    return mean - half, mean + half


def signed_rank_interval(diff, confidence: float = 0.95) -> tuple[float, float]:
    """Exact CI of the median difference that inverts the two-sided signed-rank test: the set of
    shifts d0 the test at level 1 - confidence does not reject, [W_(k), W_(M+1-k)] of the sorted
    M = n(n+1)/2 Walsh averages; (-inf, inf) when no k exists (too few pairs)."""
    d = np.sort(np.asarray(diff, dtype=float))
    n = len(d)
    walsh = np.sort((d[:, None] + d[None, :])[np.triu_indices(n)] / 2)
    counts = np.zeros(len(walsh) + 1)  # exact null distribution of T+ (subset sums of 1..n)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    cdf = np.cumsum(counts) / 2.0 ** n
    k = int(np.searchsorted(cdf, (1 - confidence) / 2, side="left"))  # #{s: P(T+ <= s) < a/2}
    if k == 0:
        return -math.inf, math.inf
    return float(walsh[k - 1]), float(walsh[len(walsh) - k])


def paired_p_value(a, b, test: str = "ttest") -> float:
    """Two-sided p-value that the paired values `a` and `b` (same seeds, same order) differ."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    if np.all(diff == 0):
        return 1.0
    if test == "ttest" and np.ptp(diff) <= 1e-12 * np.abs(diff).max():
        return 0.0  # a constant non-zero difference: no spread, t is infinite
    with warnings.catch_warnings():  # near-constant differences: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "ttest":
            return float(stats.ttest_rel(a, b).pvalue)
        if test == "wilcoxon":
            return float(stats.wilcoxon(a, b).pvalue)
    raise ValueError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")


def delta_interval(diff, test: str, alpha: float) -> tuple[float, float]:
    """The (1 - alpha) CI of the paired difference that belongs to `test`."""
    if test == "ttest":
        return t_interval(diff, 1 - alpha)
    if test == "wilcoxon":
        return signed_rank_interval(diff, 1 - alpha)
    raise ValueError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")


def compare_paired(entry: dict, baseline: dict, direction: str = "minimize", alpha: float = 0.05,
                   test: str = "ttest") -> dict:
    """Entry vs baseline over the seeds both have ({seed: value} each): the mean difference
    entry - baseline, the std of the differences, its (1 - alpha) CI and the p-value of `test`
    (one method, so they agree), and a verdict: `better` / `worse` / `not distinguishable`, or
    `too few seeds (n = N)` below 3 pairs (no CI, no p-value)."""
    seeds = sorted(s for s in set(entry) & set(baseline)
                   if np.isfinite(entry[s]) and np.isfinite(baseline[s]))
    a = np.array([entry[s] for s in seeds], dtype=float)
    b = np.array([baseline[s] for s in seeds], dtype=float)
    diff = a - b
    out = {"pairs": len(seeds), "delta": float(diff.mean()) if seeds else math.nan,
           "delta_std": float(diff.std(ddof=1)) if len(seeds) > 1 else math.nan,
           "delta_ci_low": math.nan, "delta_ci_high": math.nan, "p_value": math.nan}
    if len(seeds) < MIN_PAIRS:
        out["verdict"] = f"too few seeds (n = {len(seeds)})" if seeds else "n/a (no paired seeds)"
        return out
    out["delta_ci_low"], out["delta_ci_high"] = delta_interval(diff, test, alpha)
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
