"""The `search:` section of a suite -> a validated `Search` (Optuna distributions, sampler, pruner).

Sources: Optuna's distributions (`FloatDistribution`, `IntDistribution`, `CategoricalDistribution`),
samplers (TPE, Bergstra et al. 2011; random; CMA-ES, Hansen 2016; NSGA-II, Deb et al. 2002) and
pruners (median; Hyperband, Li et al. 2018), configured from YAML:

    search:
      base: unet_ddpm                        # entry name, or a list of them (categorical `entry`)
      archs: [unet_ddpm, unet_ddpm_noattn]   # optional: architectures swapped in (categorical `arch`)
      space:                                 # any scalar suite key; models.kwargs.* = the entry's kwargs
        train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
        train.batch_size: {low: 32, high: 128, step: 32}
        models.kwargs.dropout: {choices: [0.0, 0.1, 0.2]}
      n_trials: 24                           # and/or timeout: seconds
      sampler: tpe                           # tpe | random | cmaes | nsga2 (+ sampler_opts, seed)
      pruner: median                         # median | hyperband | none (+ pruner_opts)
      objectives: [{metric: val_loss, direction: minimize}]
      prune_on: val_loss                     # the metric reported at every in-training eval

The whole space is refused up front like any bad suite key: unknown key paths name the valid ones,
and the suite is built (and its models on the meta device) at every bound and every choice.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import types
import typing
import warnings
from dataclasses import dataclass, field, fields, replace

import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from bench import report
from bench.config.checks import RANKABLE
from bench.config.suite import SECTIONS, parse_suite
from bench.errors import BenchError, choices_error

SEARCH_KEYS = ("base", "archs", "space", "n_trials", "timeout", "sampler", "sampler_opts", "seed",
               "pruner", "pruner_opts", "objectives", "prune_on", "heartbeat", "retries")
SPEC_KEYS = ("low", "high", "log", "step", "choices")
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler, "nsga2": optuna.samplers.NSGAIISampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
           "none": optuna.pruners.NopPruner}
DIRECTIONS = ("minimize", "maximize")



@contextlib.contextmanager
def quiet_experimental():
    """Silence Optuna's ExperimentalWarning for the documented pieces we use on purpose (heartbeat
    storage options, RetryHeartbeatStaleTrialCallback, samplers' options) for one call only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@dataclass(frozen=True)
class Search:
    entries: tuple[str, ...]          # base entry name(s); several = categorical parameter `entry`
    archs: tuple[str, ...] = ()       # architectures swapped into the entry: parameter `arch`
    space: dict = field(default_factory=dict)  # suite key path -> optuna distribution
    n_trials: int | None = None       # trials in the whole study (all workers, all sessions)
    timeout: float | None = None      # seconds after which this session starts no new trial
    sampler: str = "tpe"              # tpe | random | cmaes | nsga2 (nsga2 by default for 2+ objectives)
    sampler_opts: dict = field(default_factory=dict)
    seed: int = 0                     # sampler seed
    pruner: str = "median"            # median | hyperband | none
    pruner_opts: dict = field(default_factory=dict)
    objectives: tuple = ()            # ((metric, direction), ...)
    prune_on: tuple | None = None     # (metric, direction) reported at each eval; None = no pruning
    heartbeat: int = 60               # seconds between worker heartbeats; stale after twice that
    retries: int = 2                  # re-runs of a trial whose worker died

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    def pruning_note(self) -> str:
        if self.prune_on is None:
            why = "pruner: none" if self.pruner == "none" else \
                "Optuna cannot prune multi-objective trials and no search.prune_on proxy is set"
            return f"pruning off ({why})"
        proxy = " (a scalar proxy: Optuna cannot prune on several objectives)" \
            if len(self.objectives) > 1 else ""
        return f"{self.pruner} pruner on {self.prune_on[0]} at every eval{proxy}"


# --- the search: section ------------------------------------------------------------------------

def parse_search(suite, check: bool = True) -> Search:
    """Validate `suite.search` (keys, entries, space, objectives) and check every bound and choice."""
    raw, where = suite.search, f"{suite.path}: search"
    if not raw:
        raise BenchError(f"{suite.path}: search: this suite has no search section to tune")
    for key in raw:
        if key not in SEARCH_KEYS:
            raise choices_error(f"{where}.{key}", "key", key, SEARCH_KEYS)
    objectives = _objectives(raw.get("objectives"), suite, where)
    search = Search(entries=_entries(raw.get("base"), suite, where),
                    archs=tuple(_names(raw.get("archs", []), f"{where}.archs")),
                    space={k: _distribution(k, v, where) for k, v in _mapping(raw, "space", where).items()},
                    n_trials=_positive(raw.get("n_trials"), f"{where}.n_trials", int),
                    timeout=_positive(raw.get("timeout"), f"{where}.timeout", float),
                    sampler=_choice(raw.get("sampler", "nsga2" if len(objectives) > 1 else "tpe"),
                                    SAMPLERS, f"{where}.sampler"),
                    sampler_opts=_mapping(raw, "sampler_opts", where),
                    seed=_positive(raw.get("seed", 0), f"{where}.seed", int, zero=True),
                    pruner=_choice(raw.get("pruner", "median"), PRUNERS, f"{where}.pruner"),
                    pruner_opts=_mapping(raw, "pruner_opts", where), objectives=objectives,
                    heartbeat=_positive(raw.get("heartbeat", 60), f"{where}.heartbeat", int),
                    retries=_positive(raw.get("retries", 2), f"{where}.retries", int, zero=True))
    search = _with_prune_on(search, raw.get("prune_on"), where)
    if search.n_trials is None and search.timeout is None:
        raise BenchError(f"{where}: give n_trials and/or timeout (seconds)")
    if not search.space and len(search.entries) == 1 and not search.archs:
        raise BenchError(f"{where}.space: nothing to search; add keys such as train.lr: "
                         "{low: 1.0e-5, high: 1.0e-3, log: true}")
    try:  # bad sampler / pruner options fail now, not in a worker
        make_sampler(search, 0), make_pruner(search, suite)
    except BenchError as err:
        raise BenchError(f"{suite.path}: {err}") from None
    if check:  # workers skip it: their coordinator has checked the same suite
        check_space(suite, search)
    return search


def _mapping(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise BenchError(f"{where}.{key}: expected a mapping, got {value!r}")
    return value


def _names(value, where: str) -> list[str]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{where}: expected a name or a list of names, got {value!r}")
    return value


def _entries(base, suite, where: str) -> tuple[str, ...]:
    names = [m.name for m in suite.models]
    chosen = _names(base, f"{where}.base") if base is not None else names[:1]
    for name in chosen:
        if name not in names:
            raise choices_error(f"{where}.base", "entry", name, names)
    return tuple(chosen)


def _choice(value, options, where: str) -> str:
    if value not in options:
        raise choices_error(where, "value", value, options)
    return value


def _positive(value, where: str, kind: type, zero: bool = False):
    if value is None:
        return None
    number = _number(value)
    if number is None or (kind is int and number != int(number)) or number < (0 if zero else 1e-12):
        raise BenchError(f"{where}: expected a {'non-negative' if zero else 'positive'} "
                         f"{'integer' if kind is int else 'number'}, got {value!r}")
    return kind(number)


def _number(value):
    """int/float (or a YAML 1.1 string such as '1e-5') -> number; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def known_metrics() -> list[str]:
    """Metric names a run records (the leaderboard's columns as well, whatever it adds)."""
    names = set(RANKABLE) | {"fid_proxy", "peak_mem_train_mb", "peak_mem_sample_mb"}
    for attr in ("COLUMNS", "QUALITY", "COST"):
        names |= set(getattr(report, attr, ()))
    return sorted(names)


def _objectives(raw, suite, where: str) -> tuple:
    items = raw if raw is not None else [{"metric": suite.eval.metric,
                                          "direction": suite.eval.direction}]
    if not isinstance(items, list) or not items:
        raise BenchError(f"{where}.objectives: expected a list of {{metric, direction}}")
    parsed = []
    for i, item in enumerate(items):
        item = {"metric": item} if isinstance(item, str) else item
        path = f"{where}.objectives[{i}]"
        if not isinstance(item, dict) or set(item) - {"metric", "direction"}:
            raise BenchError(f"{path}: expected {{metric: NAME, direction: minimize|maximize}}")
        metric = _choice(item.get("metric"), known_metrics(), f"{path}.metric")
        parsed.append((metric, _choice(item.get("direction", "minimize"), DIRECTIONS,
                                       f"{path}.direction")))
    return tuple(parsed)


def _with_prune_on(search: Search, raw, where: str) -> Search:
    """Default: the single objective; none for several (Optuna prunes single-objective trials)."""
    if raw is None:
        proxy = search.objectives[0] if len(search.objectives) == 1 else None
    else:
        raw = {"metric": raw} if isinstance(raw, str) else raw
        if not isinstance(raw, dict) or set(raw) - {"metric", "direction"}:
            raise BenchError(f"{where}.prune_on: expected a metric name or {{metric, direction}}")
        metric = _choice(raw.get("metric"), known_metrics(), f"{where}.prune_on")
        default = dict(search.objectives).get(metric, "minimize")
        proxy = (metric, _choice(raw.get("direction", default), DIRECTIONS, f"{where}.prune_on"))
        if search.pruner == "none":
            raise BenchError(f"{where}.prune_on: set search.pruner (median, hyperband) to prune")
    return replace(search, prune_on=None if search.pruner == "none" else proxy)


# --- the space: key paths, distributions, and a check of every bound and choice -----------------

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


def _distribution(key: str, spec, where: str):
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
    low, high, step = (_number(spec.get(k)) for k in ("low", "high", "step"))
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
        choices = [_number(c) if _number(c) is not None else c for c in choices]
    for c in choices:
        if c is not None and not isinstance(c, (bool, int, float, str)):
            raise BenchError(f"{path}: choices must be numbers, strings, booleans or null, got {c!r}")
    return CategoricalDistribution(choices)


def bounds(dist) -> list:
    """The values that span a distribution: its choices, or low and high."""
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]


def check_space(suite, search: Search) -> int:
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


def _check(suite, search: Search, params: dict, path: str, value) -> None:
    try:
        trial_spec(suite, search, params)
    except BenchError as err:
        reason = str(err).removeprefix(f"{suite.path}: ")
        raise BenchError(f"{path}: {value!r} is refused: {reason}") from None


def trial_spec(suite, search: Search, params: dict, number: int | None = None):
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


def make_sampler(search: Search, seed: int):
    where = "search.sampler"
    if search.sampler == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise BenchError(f"{where}: cmaes needs the `cmaes` package (pip install cmaes); "
                             "choose from nsga2, random, tpe")
        if len(search.objectives) > 1:
            raise BenchError(f"{where}: cmaes is single-objective; use nsga2 or tpe")
    try:
        with quiet_experimental():
            return SAMPLERS[search.sampler](seed=seed, **search.sampler_opts)
    except (TypeError, ValueError) as err:
        raise BenchError(f"search.sampler_opts: {search.sampler}: {err}") from None


def make_pruner(search: Search, suite=None):
    """The pruner; Hyperband's smallest resource defaults to one evaluation period (in images)."""
    opts = dict(search.pruner_opts)
    every = suite.eval.every_kimg if suite is not None else None
    if search.pruner == "hyperband" and every and "min_resource" not in opts:
        opts["min_resource"] = max(1, round(every * 1000))
    try:
        return PRUNERS[search.pruner](**opts)
    except (TypeError, ValueError) as err:
        raise BenchError(f"search.pruner_opts: {search.pruner}: {err}") from None

