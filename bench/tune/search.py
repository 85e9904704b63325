"""The `search:` section of a suite -> a validated `Search` (Optuna sampler, pruner, objectives).

Sources: Optuna's samplers (TPE, Bergstra et al. 2011; random; CMA-ES, Hansen 2016; NSGA-II, Deb
et al. 2002) and pruners (median; Hyperband, Li et al. 2018). The YAML keys:

    search:
      base: unet_ddpm                        # entry name, or a list of them (categorical `entry`)
      archs: [unet_ddpm, unet_ddpm_noattn]   # optional: architectures swapped in (categorical `arch`)
      space: {...}                           # the searched suite keys (bench.tune.space)
      n_trials: 24                           # and/or timeout: seconds
      sampler: tpe                           # tpe | random | cmaes | nsga2 (+ sampler_opts, seed)
      pruner: median                         # median | hyperband | none (+ pruner_opts)
      objectives: [{metric: val_loss, direction: minimize}]
      prune_on: val_loss                     # the metric reported at every in-training eval

Objectives must be metrics a run of each base entry records, and `prune_on` one it measures at
every in-training evaluation, as the metric table (`bench.metrics.registry`) says for the entry's
`eval.metrics`: a wrong name fails here, before any trial trains.
"""
from __future__ import annotations

import contextlib
import importlib.util
import warnings
from dataclasses import dataclass, field, replace

import optuna

from bench.errors import BenchError, choices_error
from bench.metrics import registry
from bench.tune.space import check_space, distribution, number

SEARCH_KEYS = ("base", "archs", "space", "n_trials", "timeout", "sampler", "sampler_opts", "seed",
               "pruner", "pruner_opts", "objectives", "prune_on", "heartbeat", "retries")
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
    entries = _entries(raw.get("base"), suite, where)
    objectives = _objectives(raw.get("objectives"), suite, entries, where)
    search = Search(entries=entries,
                    archs=tuple(_names(raw.get("archs", []), f"{where}.archs")),
                    space={k: distribution(k, v, where) for k, v in _mapping(raw, "space", where).items()},
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
    search = _with_prune_on(search, raw.get("prune_on"), suite, where)
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
    num = number(value)
    if num is None or (kind is int and num != int(num)) or num < (0 if zero else 1e-12):
        raise BenchError(f"{where}: expected a {'non-negative' if zero else 'positive'} "
                         f"{'integer' if kind is int else 'number'}, got {value!r}")
    return kind(num)


def _objectives(raw, suite, entries, where: str) -> tuple:
    """((metric, direction), ...): each a metric a run of every base entry records."""
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
        metric = item.get("metric")
        for spec in _base_specs(suite, entries):
            registry.check_recorded(metric, spec.eval, spec.task.kind, f"{path}.metric",
                                    "optimising")
        parsed.append((metric, _choice(item.get("direction", registry.direction(metric)),
                                       DIRECTIONS, f"{path}.direction")))
    return tuple(parsed)


def _base_specs(suite, entries) -> list:
    """The first planned run of each base entry (its sections with the entry's overrides)."""
    return [next(r for r in suite.runs if r.entry.name == name) for name in entries]


def _with_prune_on(search: Search, raw, suite, where: str) -> Search:
    """Default: the single objective; none for several (Optuna prunes single-objective trials).
    The metric must be measured at every in-training evaluation of each base entry."""
    if search.pruner == "none":
        if raw is not None:
            raise BenchError(f"{where}.prune_on: set search.pruner (median, hyperband) to prune")
        return replace(search, prune_on=None)
    if raw is None:
        if len(search.objectives) != 1:
            return replace(search, prune_on=None)
        raw, path = dict(zip(("metric", "direction"), search.objectives[0])), \
            f"{where}.prune_on (by default the objective)"
    else:
        path = f"{where}.prune_on"
    raw = {"metric": raw} if isinstance(raw, str) else raw
    if not isinstance(raw, dict) or set(raw) - {"metric", "direction"}:
        raise BenchError(f"{path}: expected a metric name or {{metric, direction}}")
    metric = raw.get("metric")
    for spec in _base_specs(suite, search.entries):
        registry.check_recorded(metric, spec.eval, spec.task.kind, path, "pruning on",
                                when="in_training")
    default = dict(search.objectives).get(metric, registry.direction(metric))
    return replace(search, prune_on=(metric, _choice(raw.get("direction", default), DIRECTIONS,
                                                     f"{where}.prune_on")))


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

