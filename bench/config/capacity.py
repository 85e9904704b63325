"""Capacity matching by base width (issue 3); the counts themselves are `bench.metrics.cost`.

`match_capacity` scales an architecture's base-width keyword (declared by `register(width=...)`)
until its parameter count, or its forward FLOPs at the suite's image size, lands within ±tol of a
target (another architecture's default, or a number). Candidates are built on the meta device (no
memory, no compute); FLOPs come from `torch.utils.flop_counter.FlopCounterMode` on a batch-1
forward with attention forced to the math SDPA kernel, so attention matmuls are counted on every
device (PyTorch's CPU flash-attention op has no FLOP formula and would count as zero).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from architectures import UnknownArchitectureError, create, width_kwarg
from bench.errors import BenchError, choices_error
from bench.metrics.cost import count_params, forward_flops

KINDS = ("params", "flops")
MAX_WIDTH = 1 << 14        # widths beyond this are not searched


def _measure(arch: str, kwargs: dict, kind: str, in_channels: int, out_channels: int, image_size: int) -> int:
    """Build `arch` on the meta device and return its parameter count or forward FLOPs."""
    with torch.device("meta"):
        model = create(arch, in_channels=in_channels, out_channels=out_channels, image_size=image_size, **kwargs)
    if kind == "params":
        return count_params(model)
    return forward_flops(model, in_channels + int(kwargs.get("cond_channels") or 0), image_size)


def _width_step(arch: str, kwargs: dict, key: str, dims: dict, limit: int = 512) -> int:
    """Smallest width the architecture accepts; valid widths are its multiples (GroupNorm, heads)."""
    for width in range(1, limit + 1):
        try:
            _measure(arch, {**kwargs, key: width}, "params", **dims)
            return width
        except Exception:  # invalid width: GroupNorm groups, heads, odd channel splits
            continue
    raise BenchError(f"{arch}: no valid {key} up to {limit}")


def _quadratic_guess(points: dict[int, int], goal: float, lo: int, hi: int) -> int:
    """Where the quadratic through the three measured points nearest [lo, hi] reaches `goal`.

    Parameters and FLOPs are (nearly) quadratic in a U-Net's or transformer's base width, so this
    lands next to the crossing; the bracket keeps the search safe when it does not.
    """
    ks = sorted(points, key=lambda k: (abs(k - lo) + abs(k - hi), -k))[:3]
    coeffs = np.polyfit(ks, [points[k] for k in ks], min(2, len(ks) - 1))
    coeffs[-1] -= goal
    roots = [r.real for r in np.roots(coeffs) if abs(r.imag) < 1e-9 and lo <= r.real <= hi]
    guess = roots[0] if roots else (lo + hi) / 2
    return int(min(max(math.floor(guess), lo + 1), hi - 1))


def _bracket(value, goal: float, max_k: int) -> tuple[int, int]:
    """Adjacent multipliers lo, hi with value(lo) < goal <= value(hi) (lo = 0 if value(1) >= goal)."""
    points = {k: value(k) for k in (1, 2, 4)}
    while all(v < goal for v in points.values()):             # extrapolate upwards, at most x4
        k = max(points)
        if k >= max_k:
            raise OverflowError
        nxt = min(_quadratic_guess(points, goal, k, 4 * k) + 1, max_k)
        points[nxt] = value(nxt)
    hi = min(k for k, v in points.items() if v >= goal)
    lo = max((k for k, v in points.items() if v < goal and k < hi), default=0)
    while hi - lo > 1:
        mid = _quadratic_guess(points, goal, lo, hi)
        points[mid] = value(mid)
        lo, hi = (mid, hi) if points[mid] < goal else (lo, mid)
    return lo, hi


def _fail(where: str | None, message: str) -> BenchError:
    return BenchError(f"{where}: {message}" if where else message)


def _target_value(target, kind: str, where: str | None, dims: dict) -> tuple[float, str | None]:
    """A numeric target as given, or the value of the named architecture at its default width."""
    if isinstance(target, str):
        try:
            return float(_measure(target, {}, kind, **dims)), target
        except UnknownArchitectureError as err:
            raise _fail(where, str(err)) from None
    if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0:
        raise _fail(where, f"target must be an architecture name or a positive number, got {target!r}")
    return float(target), None


def _width_key(arch: str, kind: str, where: str | None) -> str:
    """The architecture's width keyword; BenchError for an unknown kind, architecture or no width."""
    if kind not in KINDS:
        raise choices_error(where or "match", "capacity kind", kind, KINDS)
    try:
        key = width_kwarg(arch)
    except UnknownArchitectureError as err:
        raise _fail(where, str(err)) from None
    if key is None:
        raise _fail(where, f"architecture {arch!r} declares no width keyword, so it cannot be capacity-matched")
    return key


def match_capacity(
    arch: str,
    kwargs: dict,
    target,
    *,
    kind: str = "params",
    in_channels: int,
    out_channels: int,
    image_size: int,
    tol: float = 0.03,
    where: str | None = None,
) -> tuple[dict, dict]:
    """Return (kwargs with the width set, info {target, achieved, width, kind, ...}).

    `target` is an architecture name (its default-width value at the same channels and image size)
    or a number. Raises BenchError when the architecture has no width keyword or when no width
    lands within ±`tol`; `where`, if given, prefixes messages (e.g. the suite entry's key path).
    """
    key = _width_key(arch, kind, where)
    dims = dict(in_channels=in_channels, out_channels=out_channels, image_size=image_size)
    goal, target_arch = _target_value(target, kind, where, dims)
    base = {k: v for k, v in kwargs.items() if k != key}

    cache: dict[int, int] = {}

    def measure(width: int) -> int:
        if width not in cache:
            cache[width] = _measure(arch, {**base, key: width}, kind, **dims)
        return cache[width]

    step = _width_step(arch, base, key, dims)
    try:
        lo, hi = _bracket(lambda k: measure(k * step), goal, MAX_WIDTH // step)
    except OverflowError:
        raise _fail(where, f"{arch} needs a {key} above {MAX_WIDTH} to reach {kind} {goal:.4g}") from None
    candidates = sorted({max(lo, 1) * step, hi * step})
    width = min(candidates, key=lambda w: abs(measure(w) - goal))
    achieved = measure(width)
    if abs(achieved - goal) > tol * goal:
        near = ", ".join(f"{key}={w}: {measure(w):.4g}" for w in candidates)
        raise _fail(where, f"{arch} cannot reach {kind} {goal:.4g} within ±{tol:.0%} by width alone "
                           f"({near}; widths step by {step})")
    info = {"target": goal, "achieved": achieved, "width": width, "kind": kind,
            "width_kwarg": key, "target_arch": target_arch, "rel_error": achieved / goal - 1.0}
    return {**kwargs, key: width}, info
