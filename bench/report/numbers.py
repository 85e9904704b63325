"""Numbers as a paper prints them: each value rounded to the precision its uncertainty supports.

The rule (the convention of the BIPM GUM, sec. 7.2.6, and of most ML tables): the spread (std over
seeds) is shown with 2 significant digits and the mean to the same decimal place, `0.278 ± 0.003`;
every cell of a column uses the same number of decimals (the finest any row supports); CI bounds
are printed at the mean's precision. A value with no spread (one seed, or identical seeds) is shown
with the display precision of its metric (`digits` significant digits, `bench.metrics.registry`).
The CSV keeps full precision; only the display frames go through here.
"""
from __future__ import annotations

import math

SPREAD_DIGITS = 2
MAX_DECIMALS = 10


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def decimals(value, spread=None, digits: int = 3) -> int | None:
    """Decimal places for `value`: 2 significant digits of `spread` when there is one, else
    `digits` significant digits of `value` (never negative: 1234 keeps its integer digits).
    None when the value is missing."""
    if not _finite(value):
        return None
    value = abs(float(value))
    if _finite(spread) and float(spread) > 1e-9 * max(value, 1e-300):
        return _places(float(spread), SPREAD_DIGITS)
    return _places(value, digits) if value > 0 else 0


def _places(x: float, digits: int) -> int:
    exponent = math.floor(math.log10(abs(x)))
    if round(abs(x), digits - 1 - exponent) >= 10 ** (exponent + 1):  # 0.0996 -> 0.10
        exponent += 1
    return min(MAX_DECIMALS, max(0, digits - 1 - exponent))


def column_decimals(values, spreads=None, digits: int = 3) -> int:
    """The decimals of a column: the finest precision any of its rows supports."""
    spreads = list(spreads) if spreads is not None else [None] * len(values)
    places = [decimals(v, s, digits) for v, s in zip(values, spreads)]
    return max((p for p in places if p is not None), default=0)


def fixed(value, places: int) -> str:
    """`value` with `places` decimals ('' when missing, no '-0.00', ∞ for infinities)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def mean_std(mean, std, places: int) -> str:
    """`mean ± std` at `places` decimals; the mean alone when there is no spread."""
    text = fixed(mean, places)
    if not text or not _finite(std) or float(std) <= 1e-9 * max(abs(float(mean)), 1e-300):
        return text
    return f"{text} ± {fixed(std, places)}"


def interval(low, high, places: int) -> str:
    """`[low, high]` at `places` decimals ('' when missing)."""
    if not (_finite(low) or _is_inf(low)) or not (_finite(high) or _is_inf(high)):
        return ""
    return f"[{fixed(low, places)}, {fixed(high, places)}]"


def _is_inf(value) -> bool:
    try:
        return math.isinf(float(value))
    except (TypeError, ValueError):
        return False


def p_value(p) -> str:
    """2 significant digits; `< 0.001` below that (no paper prints p = 3.2e-11)."""
    if not _finite(p):
        return ""
    p = float(p)
    if p < 0.001:
        return "< 0.001"
    return fixed(p, _places(p, 2)) if p > 0 else "0"


def integer(value) -> str:
    return "" if not _finite(value) else f"{int(round(float(value)))}"
