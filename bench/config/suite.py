"""YAML suite -> validated, frozen `Suite` and its planned runs (one per model entry and seed).

Everything a run needs is checked here, before any work starts (nanoGPT's loud config errors,
diffusers' teaching messages): unknown keys, wrong types, unknown dataset / schedule / sampler /
architecture names, bad architecture kwargs, impossible budgets and image sizes. Each failure is a
`BenchError` whose one line names the file, the key path and the valid choices.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.config.checks import check_run
from bench.config.ranges import SEEDS_RULE, allowed, check_finite, check_ranges
from bench.config.schema import (
    BudgetConfig,
    DataConfig,
    DiffusionConfig,
    EDMConfig,
    EvalConfig,
    ModelEntry,
    ShapesConfig,
    TaskConfig,
    TrainConfig,
    build,
)
from bench.config.variants import Evaluation, plan_evaluations, training_eval
from bench.config.yamlfile import parse_yaml, read_yaml
from bench.errors import BenchError, choices_error

SECTIONS = {"data": DataConfig, "task": TaskConfig, "diffusion": DiffusionConfig,
            "budget": BudgetConfig, "train": TrainConfig, "eval": EvalConfig}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")   # entry names become folder names
# Keys added after run ids existed (dotted paths, at any depth): at their schema default they stay
# out of the hashed config, so the run ids of suites that do not use them never change.
OPTIONAL_KEYS = ("train.early_stop", "data.folds", "task.condition", "task.loss_on",
                 "diffusion.formulation", "diffusion.edm", "train.micro_batch",
                 "eval.untrained_reference", "data.shapes", "data.shapes.rotate", "data.shapes.palette")
TOP_KEYS = {"name", "description", "baseline", "seeds", "folds", "models", "search", *SECTIONS}


@dataclass(frozen=True)
class RunSpec:
    """One planned run: a model entry with its resolved sections, and a seed."""
    suite: str
    entry: ModelEntry
    seed: int
    data: DataConfig
    diffusion: DiffusionConfig
    budget: BudgetConfig
    train: TrainConfig
    eval: EvalConfig
    task: TaskConfig = field(default_factory=TaskConfig)
    capacity: dict | None = None      # capacity-matching record (target, achieved, width)
    params: int | None = None         # parameter count (from a meta-device build)

    def config(self) -> dict:
        """The resolved configuration that defines this run (hashed into its id)."""
        config = {"entry": asdict(self.entry), "seed": self.seed, "data": asdict(self.data),
                  "diffusion": asdict(self.diffusion), "budget": asdict(self.budget),
                  "train": asdict(self.train), "eval": training_eval(self.eval)}
        if self.task.kind != "unconditional":  # keeps unconditional run ids unchanged
            config["task"] = asdict(self.task)
        for path in OPTIONAL_KEYS:  # at their default: left out, older run ids unchanged
            _drop_default(self, config, path.split("."))
        if self.data.shapes == ShapesConfig():  # the default drawing: the images of no key
            config["data"].pop("shapes", None)
        if self.diffusion.formulation == "edm" and self.diffusion.edm is None:
            config["diffusion"]["edm"] = asdict(EDMConfig())  # edm: {} and edm: null are one run
        return config

    @property
    def fold(self) -> int | None:
        """The validation fold of a k-fold run (`data.folds`), else None."""
        return None if self.data.folds is None else self.data.folds.fold

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str).encode()
        fold = "" if self.fold is None else f"-f{self.fold}"
        return f"{self.entry.name}{fold}-s{self.seed}-{hashlib.sha256(blob).hexdigest()[:10]}"


def default(cls: type, key: str) -> Any:
    """The schema default of dataclass `cls`'s `key` (its default factory's value for lists, dicts)."""
    f = next(f for f in fields(cls) if f.name == key)
    return f.default_factory() if f.default is MISSING else f.default


def _drop_default(spec: RunSpec, config: dict, path: list[str]) -> None:
    """Pop `config[path]` where the spec's value there is its schema default (sections absent from
    the config, such as `task` of an unconditional run, or a None parent are left alone)."""
    *parents, key = path
    obj, node = spec, config
    for name in parents:
        obj, node = getattr(obj, name, None), node.get(name) if isinstance(node, dict) else None
    if obj is not None and isinstance(node, dict) and key in node and \
            getattr(obj, key) == default(type(obj), key):
        node.pop(key)


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    models: tuple[ModelEntry, ...]
    seeds: tuple[int, ...] = (0,)
    folds: str | tuple[int, ...] = "all"  # the fold axis of entries with data.folds: all or indices
    description: str = ""
    baseline: str | None = None       # entry the report compares against (default: the first)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    search: dict | None = None        # Optuna search space (bench.tune validates it)
    raw: dict = field(default_factory=dict, repr=False, compare=False)
    runs: tuple[RunSpec, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()  # (run, eval.variants item): one leaderboard row each


def load_suite(path: str | Path, overrides: list[str] = (), check_models: bool = True) -> Suite:
    """Read, override, validate and plan a suite; raises BenchError on any bad input."""
    where = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: expected a mapping of suite sections at the top level, got "
                         f"{type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item, where)
    return parse_suite(raw, where, check_models)


def apply_override(raw: dict, item: str, where: str) -> None:
    """`--set a.b.c=value` (value parsed as YAML; list indices as numbers: models.0.kwargs.x=1)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise BenchError(f"{where}: --set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
    node, parts = raw, key.split(".")
    if not all(parts):
        raise BenchError(f"{where}: --set {key}: empty key part; write section.key, e.g. train.lr")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_index(part, node, key, where)]
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            raise BenchError(f"{where}: --set {key}: {part!r} is not a section")
    value = parse_yaml(text, f"{where}: --set {key}") if text else None
    if isinstance(node, list):
        node[_index(parts[-1], node, key, where)] = value
    else:
        node[parts[-1]] = value


def _index(part: str, node: list, key: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise BenchError(f"{where}: --set {key}: {part!r} is not an index of a {len(node)}-item list")
    return int(part)


def parse_suite(raw: dict, where: str, check_models: bool = True) -> Suite:
    """Validate a suite mapping (keys, types, names, values) and plan its runs."""
    for key in raw:
        if key not in TOP_KEYS:
            raise choices_error(f"{where}: {key}", "section", key, TOP_KEYS)
    check_finite(raw, where)
    name = raw.get("name") or Path(where).stem
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise BenchError(f"{where}: name: expected a plain name (letters, digits, _ or -), got {name!r}")
    sections = {k: _section(cls, raw.get(k), where, k, k) for k, cls in SECTIONS.items()}
    models = _parse_models(raw.get("models"), where)
    seeds = _parse_seeds(raw.get("seeds", [0]), where)
    folds = _parse_folds(raw.get("folds", "all"), where)
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in [m.name for m in models]:
        raise choices_error(f"{where}: baseline", "entry", baseline, [m.name for m in models])
    search = raw.get("search")
    if search is not None and not isinstance(search, dict):
        raise BenchError(f"{where}: search: expected a mapping")
    suite = Suite(name=name, path=where, models=models, seeds=seeds, folds=folds,
                  description=str(raw.get("description", "")), baseline=baseline,
                  search=search, raw=copy.deepcopy(raw), **sections)
    runs = tuple(spec for i, m in enumerate(models) for spec in _plan(suite, i, m, check_models))
    if "folds" in raw and all(spec.fold is None for spec in runs):
        raise BenchError(f"{where}: folds: no entry sets data.folds (e.g. data.folds: {{k: 5}}), "
                         "so there is no fold to choose")
    evaluations = plan_evaluations(runs, where, lambda spec, w, path: check_run(spec, w, path, False))
    return replace(suite, runs=runs, evaluations=evaluations)


def _parse_models(items: Any, where: str) -> tuple[ModelEntry, ...]:
    if not isinstance(items, list) or not items:
        raise BenchError(f"{where}: models: expected a non-empty list of {{arch, name?, kwargs?}}")
    entries = []
    for i, item in enumerate(items):
        entry = build(ModelEntry, item, where, f"models[{i}]")
        entry = replace(entry, name=entry.name or entry.arch)
        if not isinstance(entry.arch, str) or not entry.arch:
            raise BenchError(f"{where}: models[{i}].arch: expected an architecture name (python -m "
                             f"bench list), got {entry.arch!r}")
        if not isinstance(entry.name, str) or not _NAME.match(entry.name) or ".." in entry.name:
            raise BenchError(f"{where}: models[{i}].name: expected a plain name (letters, digits, "
                             f"_ . + -; no / or ..), got {entry.name!r}")
        _check_overrides(entry.overrides, where, f"models[{i}].overrides")
        entries.append(entry)
    names = [e.name for e in entries]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise BenchError(f"{where}: models: entry name {dup!r} is used twice; give each a `name:`")
    return tuple(entries)


def _parse_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))  # `seeds: 3` means seeds 0, 1, 2
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise BenchError(f"{where}: seeds: expected a list of integers or a count, got {seeds!r}")
    dup = next((s for s in seeds if seeds.count(s) > 1), None)
    if dup is not None:
        raise BenchError(f"{where}: seeds: seed {dup} is listed twice; each seed is one run")
    for s in seeds:
        if not allowed(SEEDS_RULE, s):
            raise BenchError(f"{where}: seeds: {s} is out of range; the documented range is {SEEDS_RULE}")
    return tuple(seeds)


def _parse_folds(folds: Any, where: str) -> str | tuple[int, ...]:
    if folds == "all":
        return folds
    if (not isinstance(folds, list) or not folds
            or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds)):
        raise BenchError(f"{where}: folds: expected 'all' or a list of fold indices (0..k-1), got "
                         f"{folds!r}")
    dup = next((f for f in folds if folds.count(f) > 1), None)
    if dup is not None:
        raise BenchError(f"{where}: folds: fold {dup} is listed twice; each fold is one run per seed")
    return tuple(folds)


def _check_overrides(overrides: dict, where: str, path: str) -> None:
    """Entry overrides: a mapping of section name -> mapping of keys."""
    for key, value in overrides.items():
        if key not in SECTIONS:
            raise choices_error(f"{where}: {path}.{key}", "section", key, SECTIONS)
        if value is not None and not isinstance(value, dict):
            raise BenchError(f"{where}: {path}.{key}: expected a mapping of {key} keys, e.g. "
                             f"{{lr: 1e-4}}, got {type(value).__name__} {value!r}")


def _section(cls: type, data: Any, where: str, key: str, path: str):
    """Build a section (types) and check its numbers against their documented ranges."""
    section = build(cls, data, where, path)
    check_ranges(section, key, where, path)
    return section


def _plan(suite: Suite, i: int, entry: ModelEntry, check_models: bool) -> list[RunSpec]:
    """Resolve one entry's sections (suite defaults + entry overrides) and check each of its runs:
    one per fold (entries with data.folds) and seed."""
    where, sections = suite.path, {}
    for key, cls in SECTIONS.items():
        merged = {**asdict(getattr(suite, key)), **(entry.overrides.get(key) or {})}
        sections[key] = _section(cls, merged, where, key, f"models[{i}].overrides.{key}"
                                 if key in entry.overrides else key)
    data, runs = sections.pop("data"), []
    for fold in _entry_folds(suite, data, i):
        folded = data if fold is None else replace(data, folds=replace(data.folds, fold=fold))
        for seed in suite.seeds:
            spec = RunSpec(suite=suite.name, entry=entry, seed=seed, data=folded, **sections)
            runs.append(check_run(spec, where, f"models[{i}]", check_models))
    return runs


def _entry_folds(suite: Suite, data: DataConfig, i: int) -> list[int | None]:
    """The folds one entry runs: [None] without data.folds, else the suite's `folds:` axis."""
    if data.folds is None:
        return [None]
    if data.folds.fold is not None:
        raise BenchError(f"{suite.path}: models[{i}]: data.folds.fold: set by the suite's `folds:` "
                         f"axis (all, or a list of indices), not by hand")
    k = data.folds.k
    if suite.folds == "all":
        return list(range(k))
    bad = next((f for f in suite.folds if f >= k), None)
    if bad is not None:
        raise BenchError(f"{suite.path}: folds: fold {bad} is out of range for models[{i}] "
                         f"({suite.models[i].name}): data.folds.k is {k}, folds are 0..{k - 1}")
    return list(suite.folds)
