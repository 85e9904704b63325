"""`search.space` of a suite -> Optuna distributions, a check of every bound and choice, and the
RunSpec of one trial.

Sources: Optuna's distributions (`FloatDistribution`, `IntDistribution`, `CategoricalDistribution`),
configured from YAML (the rest of the `search:` section: `bench.tune.search`):

    search:
      space:                                 # any scalar suite key; models.kwargs.* = the entry's kwargs
        train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
        train.batch_size: {low: 32, high: 128, step: 32}
        models.kwargs.dropout: {choices: [0.0, 0.1, 0.2]}

The whole space is refused up front like any bad suite key: unknown key paths name the valid ones,
and the suite is built (and its models on the meta device) at every bound and every choice.
"""
from __future__ import annotations

import copy
import types
import typing
from dataclasses import fields

from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from bench.config.suite import SECTIONS, parse_suite
from bench.errors import BenchError, choices_error

SPEC_KEYS = ("low", "high", "log", "step", "choices")


def number(value):
    """int/float (or a YAML 1.1 string such as '1e-5') -> number; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None



def _hint(key: str, where: str):
    """Type of the suite field a space key sets (None for architecture kwargs)."""
    parts = key.split(".")
    sections = [*SECTIONS, "models.kwargs"]
    if parts[0] == "models":
        if len(parts) != 3 or parts[1] != "kwargs":
            raise BenchError(f"{where}.space.{key}: only models.kwargs.<name> can be searched in "
                             "models (use search.base / search.archs for entries and architectures)")
        return None
    if parts[0] not in SECTIONS or len(parts) != 2:
        raise choices_error(f"{where}.space.{key}", "section", parts[0], sections)
    hints = typing.get_type_hints(SECTIONS[parts[0]])
    if parts[1] not in hints:
        raise choices_error(f"{where}.space.{key}", "key", parts[1],
                            [f.name for f in fields(SECTIONS[parts[0]])])
    hint = hints[parts[1]]
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    return inner[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint


def distribution(key: str, spec, where: str):
    """{low, high, log?, step?} -> Int/FloatDistribution; {choices: [...]} -> Categorical."""
    hint, path = _hint(key, where), f"{where}.space.{key}"
    if not isinstance(spec, dict) or not spec:
        raise BenchError(f"{path}: expected {{low, high, log?, step?}} or {{choices: [...]}}")
    for option in spec:
        if option not in SPEC_KEYS:
            raise choices_error(path, "option", option, SPEC_KEYS)
    if hint not in (int, float, bool, str, None) and typing.get_origin(hint) is not typing.Literal:
        raise BenchError(f"{path}: only scalar keys can be searched (this one is {hint})")
    if "choices" in spec:
        return _categorical(spec, hint, path)
    low, high, step = (number(spec.get(k)) for k in ("low", "high", "step"))
    if low is None or high is None or ("step" in spec and step is None):
        raise BenchError(f"{path}: low and high (and step, if given) must be numbers, got {spec}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise BenchError(f"{path}.log: expected true or false, got {log!r}")
    integer = hint is int or (hint is None and all(isinstance(v, int) for v in (low, high, step or 1)))
    if hint not in (int, float, None) or (hint is int and not all(
            isinstance(v, int) for v in (low, high, step or 1))):
        raise BenchError(f"{path}: this key takes {getattr(hint, '__name__', hint)} values; "
                         "search it with {choices: [...]}" if hint is not int else
                         f"{path}: low, high and step must be integers")
    if not low < high:
        raise BenchError(f"{path}: low ({low}) must be below high ({high})")
    try:
        if integer:
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as err:
        raise BenchError(f"{path}: {err}") from None


def _categorical(spec: dict, hint, path: str) -> CategoricalDistribution:
    choices = spec["choices"]
    if len(spec) > 1 or not isinstance(choices, list) or not choices:
        raise BenchError(f"{path}: expected {{choices: [v1, v2, ...]}} alone (no low/high)")
    if hint is float:
        choices = [number(c) if number(c) is not None else c for c in choices]
    for c in choices:
        if c is not None and not isinstance(c, (bool, int, float, str)):
            raise BenchError(f"{path}: choices must be numbers, strings, booleans or null, got {c!r}")
    return CategoricalDistribution(choices)


def bounds(dist) -> list:
    """The values that span a distribution: its choices, or low and high."""
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]


def check_space(suite, search) -> int:
    """Build the suite for every entry/arch and every bound/choice; returns how many were built."""
    where, built = f"{suite.path}: search", 0
    for entry in search.entries:
        for arch in search.archs or [None]:
            base = {"entry": entry, **({"arch": arch} if arch else {})}
            _check(suite, search, base, f"{where}.{'archs' if arch else 'base'}", arch or entry)
            built += 1
            for key, dist in search.space.items():
                for value in bounds(dist):
                    _check(suite, search, {**base, key: value}, f"{where}.space.{key}", value)
                    built += 1
    return built


def _check(suite, search, params: dict, path: str, value) -> None:
    try:
        trial_spec(suite, search, params)
    except BenchError as err:
        reason = str(err).removeprefix(f"{suite.path}: ")
        raise BenchError(f"{path}: {value!r} is refused: {reason}") from None


def trial_spec(suite, search, params: dict, number: int | None = None):
    """The RunSpec of one trial: the base entry with the sampled values set, the suite's first seed."""
    raw = copy.deepcopy(suite.raw)
    raw.pop("search", None), raw.pop("baseline", None)
    name = params.get("entry", search.entries[0])
    entry = copy.deepcopy(next(m for m in raw["models"] if (m.get("name") or m["arch"]) == name))
    entry["arch"] = params.get("arch", entry["arch"])
    label = name if "arch" not in params else f"{name}-{entry['arch']}"
    entry["name"] = label if number is None else f"{label}-t{number:03d}"
    raw["models"], raw["seeds"] = [entry], [suite.seeds[0]]
    for key, value in params.items():
        if key in ("entry", "arch"):
            continue
        section, name = key.split(".", 1)
        if section == "models":
            entry.setdefault("kwargs", {})[name.split(".", 1)[1]] = value
        elif name in ((entry.get("overrides") or {}).get(section) or {}):
            entry["overrides"][section][name] = value  # the entry's own override would win
        else:
            raw.setdefault(section, {})[name] = value
    return parse_suite(raw, suite.path).runs[0]


