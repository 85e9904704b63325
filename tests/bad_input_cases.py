"""The bad-input corpus table (read by `tests/test_bad_inputs.py`): the case type and its builders,
the rows generated from the schema, and the structural and model rows (the YAML-file and `--set`
rows are in `tests/bad_input_text_cases.py`, the study-protocol rows in
`tests/bad_input_protocol_cases.py`).

The corpus as a whole: malformed suites, `--set` flags, data folders and files.

Every case runs `bench run` (in process, through `bench.cli.main`) and must exit 2 with exactly one
stderr line that names the file and the key path, with no traceback and nothing written under the
results root. Rows are generated from the schema (every numeric key: NaN, infinity, and values
just outside its documented range in `bench.config.ranges`) plus a hand-listed table of structural,
YAML, `--set`, model-keyword and data-side inputs, all derived from a tiny smoke-like suite.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.config.ranges import _INTERVAL, RANGES, allowed, numeric_fields
from bench.config.schema import (
    BudgetConfig,
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    TaskConfig,
    TrainConfig,
)

SECTIONS = {"data": DataConfig, "task": TaskConfig, "diffusion": DiffusionConfig,
            "budget": BudgetConfig, "train": TrainConfig, "eval": EvalConfig}
BASE = {
    "name": "bad",
    "data": {"dataset": "synthetic", "image_size": 8, "num_images": 40},
    "budget": {"kimg": 0.016},
    "train": {"batch_size": 8, "device": "cpu"},
    "eval": {"steps": 2, "grid": 4, "sample_batch": 4, "val_images": 4},
    "models": [{"arch": "unet_tiny", "name": "tiny", "kwargs": {"base_channels": 8}}],
    "seeds": [0],
}


@dataclass
class Case:
    id: str
    make: Callable[[Path], list[str]]   # tmp folder -> `bench` argv (writes the files it needs)
    expect: tuple[str, ...]              # substrings of the error line besides the file
    file: str = "suite"                  # which file the line must name: "suite" or a tmp-relative path


def suite_file(tmp: Path, suite: Any = None, text: str | bytes | None = None) -> Path:
    path = tmp / "suite.yaml"
    if text is None:
        text = yaml.safe_dump(BASE if suite is None else suite, sort_keys=False)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_args(path: Path, *extra: str) -> list[str]:
    return ["run", str(path), "--no-progress", *extra]


def patched(changes: dict) -> dict:
    """BASE with dotted keys set (`models.0.kwargs.x`); a value `DELETE` removes the key."""
    suite = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = suite
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return suite


DELETE = object()


def suite_case(id: str, changes: dict, *expect: str) -> Case:
    return Case(id, lambda tmp: run_args(suite_file(tmp, patched(changes))), expect)


def text_case(id: str, text: str | bytes, *expect: str) -> Case:
    return Case(id, lambda tmp: run_args(suite_file(tmp, text=text)), expect)


def set_case(id: str, flag: str, *expect: str) -> Case:
    return Case(id, lambda tmp: run_args(suite_file(tmp), "--set", flag), expect)


# ---------------------------------------------------------------- generated from the schema

def _budget_changes(key: str, value) -> dict:
    """Budget keys are exclusive: replace the whole budget with the one key under test."""
    return {"budget": {key: value}} if key in ("kimg", "steps", "seconds") else {}


def _number_changes(section: str, key: str, value) -> dict:
    if section == "budget":
        return _budget_changes(key, value)
    if key == "betas":
        return {f"{section}.{key}": [value, 0.999]}
    return {f"{section}.{key}": value}


def outside(rule: str, integer: bool) -> list[float]:
    """Values just outside `rule` (at an open bound, one below/above, half a step off)."""
    bounds = []
    for part in rule.split("|"):
        part = part.strip()
        if part.startswith("{"):
            bounds += [float(v) for v in part.strip("{}").split(",")]
        else:
            m = _INTERVAL.match(part)
            bounds += [float(m.group(2)), float(m.group(3))]
    candidates = []
    for b in bounds:
        if math.isfinite(b):
            candidates += [b, b - 1, b + 1] + ([] if integer else [b - 0.5 * max(abs(b), 1e-3)])
    bad = sorted({v for v in candidates if not allowed(rule, v) and (not integer or v == int(v))})
    return [int(v) if integer else v for v in bad][:2]


def generated() -> list[Case]:
    cases = []
    for section, cls in SECTIONS.items():
        hints = {f.name: f.type for f in cls.__dataclass_fields__.values()}
        for key in numeric_fields(cls):
            path = f"{section}.{key}" + ("[0]" if key == "betas" else "")
            for text, value in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)):
                cases.append(suite_case(f"{section}.{key}={text}", _number_changes(section, key, value),
                                        path, "not a finite number"))
            integer = "int" in str(hints[key]) and "float" not in str(hints[key])
            for value in outside(RANGES[f"{section}.{key}"], integer):
                cases.append(suite_case(f"{section}.{key}={value}", _number_changes(section, key, value),
                                        path, "out of range"))
    return cases


# ---------------------------------------------------------------- hand-listed

NAME = "models[0].name"

STRUCTURE = [
    suite_case("top.unknown-section", {"epochs": 3}, "epochs: unknown section"),
    suite_case("top.name-path", {"name": "../x"}, "name: expected a plain name"),
    suite_case("top.name-int", {"name": 3}, "name: expected a plain name"),
    suite_case("top.search-int", {"search": 3}, "search: expected a mapping"),
    suite_case("top.baseline-unknown", {"baseline": "nope"}, "baseline: unknown entry"),
    suite_case("section.not-mapping", {"train": 3}, "train: expected a mapping"),
    suite_case("section.list", {"eval": [1, 2]}, "eval: expected a mapping"),
    suite_case("key.unknown", {"train.learning_rate": 1e-4}, "train.learning_rate: unknown key"),
    suite_case("key.wrong-type", {"train.lr": "fast"}, "train.lr: expected a number"),
    suite_case("key.int-float", {"train.batch_size": 2.5}, "train.batch_size: expected an integer"),
    suite_case("key.bool-int", {"train.batch_size": True}, "train.batch_size: expected an integer"),
    suite_case("key.str-bool", {"data.flip": "yes please"}, "data.flip: expected true or false"),
    suite_case("key.literal", {"train.lr_schedule": "cosin"}, "train.lr_schedule: unknown value"),
    suite_case("key.betas-short", {"train.betas": [0.9]}, "train.betas: expected a list of 2"),
    suite_case("key.nan-string", {"train.lr": "nan"}, "train.lr: 'nan' is not a finite number"),
    suite_case("key.inf-string", {"eval.every_kimg": "inf"}, "eval.every_kimg: 'inf' is not a finite"),
    suite_case("name.dataset", {"data.dataset": "cifar"}, "data.dataset: unknown dataset"),
    suite_case("name.schedule", {"diffusion.schedule": "cosin"}, "diffusion.schedule: unknown schedule"),
    suite_case("name.sampler", {"eval.sampler": "ddpx"}, "eval.sampler: unknown sampler"),
    suite_case("name.sampler-opt", {"eval.sampler_opts": {"nonsense": 1}}, "eval.sampler_opts"),
    suite_case("name.sampler-opt-nan", {"eval.sampler_opts": {"eta": math.nan}},
               "eval.sampler_opts.eta", "not a finite"),
    suite_case("name.device", {"train.device": "tpu"}, "train.device: unknown device"),
    suite_case("name.metric", {"eval.metrics": ["fidd"]}, "eval.metrics: unknown metric"),
    suite_case("name.rank-metric", {"eval.metric": "fid"}, "eval.metric: ranking by fid needs"),
    suite_case("value.recon-t", {"eval.recon_t": [0]}, "eval.recon_t: 0 is out of range"),
    suite_case("value.recon-t-nan", {"eval.recon_t": [math.nan]}, "eval.recon_t[0]", "not a finite"),
    suite_case("value.budget-none", {"budget": {}}, "budget: give exactly one"),
    suite_case("value.budget-two", {"budget": {"kimg": 1, "steps": 5}}, "budget: give exactly one"),
    suite_case("value.lr-min-above-lr", {"train.lr_min": 1.0}, "train.lr_min: 1.0 is above"),
    suite_case("value.synthetic-no-holdout", {"data.num_images": 4}, "data.holdout"),
    suite_case("value.timesteps-schedule", {"diffusion.timesteps": 10}, "diffusion.timesteps: 10"),
    suite_case("value.beta-start-range", {"diffusion.beta_start": 0}, "diffusion.beta_start: 0",
               "out of range"),
    suite_case("value.beta-end-range", {"diffusion.beta_end": 1.5}, "diffusion.beta_end: 1.5",
               "out of range"),
    suite_case("value.beta-cosine", {"diffusion.schedule": "cosine", "diffusion.beta_start": 1e-3},
               "diffusion.beta_start/beta_end", "'cosine'"),
    suite_case("value.beta-end-scaled", {"diffusion.timesteps": 100, "diffusion.beta_end": 0.2},
               "diffusion.beta_start/beta_end"),
    suite_case("value.steps-above-T", {"eval.steps": 5000}, "eval.steps"),
    suite_case("value.sgdr-zero-cycle", {"train.lr_schedule": "cosine_restarts", "train.cycle_kimg": 0},
               "train.cycle_kimg: 0.0 is out of range"),
    suite_case("value.sgdr-zero-mult", {"train.lr_schedule": "cosine_restarts", "train.cycle_mult": 0},
               "train.cycle_mult: 0.0 is out of range"),
    suite_case("value.budget-below-one-image", {"budget": {"kimg": 0.0001}}, "budget.kimg"),
    suite_case("value.fid-proxy-one", {"eval.fid_proxy_n": 1}, "eval.fid_proxy_n"),
    suite_case("value.task-kind", {"task": {"kind": "outpaint"}}, "task.kind: unknown value"),
    suite_case("value.inpaint-arch", {"task": {"kind": "inpaint"}, "models.0.arch": "s003_unet",
                                      "models.0.kwargs": {}}, "inpaint needs an architecture"),
    suite_case("seeds.duplicate", {"seeds": [0, 0]}, "seeds: seed 0 is listed twice"),
    suite_case("seeds.negative", {"seeds": [-1]}, "seeds: -1 is out of range"),
    suite_case("seeds.huge", {"seeds": [2 ** 40]}, "seeds:", "out of range"),
    suite_case("seeds.float", {"seeds": [1.5]}, "seeds: expected a list of integers"),
    suite_case("seeds.bool", {"seeds": [True]}, "seeds: expected a list of integers"),
    suite_case("seeds.zero-count", {"seeds": 0}, "seeds: expected a list of integers"),
    suite_case("seeds.string", {"seeds": "many"}, "seeds: expected a list of integers"),
    suite_case("seeds.nan", {"seeds": [math.nan]}, "seeds[0]", "not a finite"),
]

MODELS = [
    suite_case("models.missing", {"models": DELETE}, "models: expected a non-empty list"),
    suite_case("models.empty", {"models": []}, "models: expected a non-empty list"),
    suite_case("models.int", {"models": 3}, "models: expected a non-empty list"),
    suite_case("models.item-int", {"models": [3]}, "models[0]: expected a mapping"),
    suite_case("models.no-arch", {"models": [{"name": "x"}]}, "models[0].arch: required key"),
    suite_case("models.arch-int", {"models.0.arch": 123}, "models[0].arch: expected a string"),
    suite_case("models.arch-unknown", {"models.0.arch": "unet_tinny"}, "models[0].arch: unknown architecture"),
    suite_case("models.unknown-key", {"models.0.size": 3}, "models[0].size: unknown key"),
    suite_case("models.name-abs", {"models.0.name": "/abs/path"}, NAME, "no / or .."),
    suite_case("models.name-up", {"models.0.name": "../../x"}, NAME, "no / or .."),
    suite_case("models.name-slash", {"models.0.name": "a/b"}, NAME, "no / or .."),
    suite_case("models.name-dotdot", {"models.0.name": "a..b"}, NAME, "no / or .."),
    suite_case("models.name-hidden", {"models.0.name": ".hidden"}, NAME, "no / or .."),
    suite_case("models.name-space", {"models.0.name": "a b"}, NAME, "no / or .."),
    suite_case("models.name-int", {"models.0.name": 7}, "models[0].name: expected a string"),
    suite_case("models.name-twice", {"models": [{"arch": "unet_tiny"}, {"arch": "unet_tiny"}]},
               "models: entry name 'unet_tiny' is used twice"),
    suite_case("kwargs.int", {"models.0.kwargs": 3}, "models[0].kwargs: expected a mapping"),
    suite_case("kwargs.unknown", {"models.0.kwargs": {"nonsense": 1}}, "models[0].kwargs: unet_tiny:"),
    suite_case("kwargs.width-zero", {"models.0.kwargs.base_channels": 0}, "models[0].kwargs.base_channels"),
    suite_case("kwargs.width-negative", {"models.0.kwargs.base_channels": -8}, "models[0].kwargs.base_channels"),
    suite_case("kwargs.width-float", {"models.0.kwargs.base_channels": 7.5}, "models[0].kwargs.base_channels"),
    suite_case("kwargs.width-string", {"models.0.kwargs.base_channels": "wide"}, "models[0].kwargs.base_channels"),
    suite_case("kwargs.width-groups", {"models.0.kwargs.base_channels": 12}, "models[0].kwargs.base_channels"),
    suite_case("kwargs.width-nan", {"models.0.kwargs.base_channels": math.nan},
               "models[0].kwargs.base_channels", "not a finite"),
    suite_case("kwargs.depth-negative", {"models.0.kwargs.num_res_blocks": -1}, "models[0].kwargs.num_res_blocks"),
    suite_case("kwargs.mult-empty", {"models.0.kwargs.channel_mult": []}, "models[0].kwargs.channel_mult"),
    suite_case("kwargs.mult-zero", {"models.0.kwargs.channel_mult": [1, 0]}, "models[0].kwargs.channel_mult"),
    suite_case("kwargs.dropout-inf", {"models.0.kwargs.dropout": math.inf}, "models[0].kwargs.dropout"),
    suite_case("kwargs.dropout-above-one", {"models.0.kwargs.dropout": 1.5}, "models[0].kwargs.dropout"),
    suite_case("kwargs.image-size", {"data.image_size": 7}, "models[0]: unet_tiny at data.image_size 7"),
    suite_case("overrides.int", {"models.0.overrides": 3}, "models[0].overrides: expected a mapping"),
    suite_case("overrides.section-int", {"models.0.overrides": {"train": 3}},
               "models[0].overrides.train: expected a mapping"),
    suite_case("overrides.section-list", {"models.0.overrides": {"train": [1]}},
               "models[0].overrides.train: expected a mapping"),
    suite_case("overrides.unknown-section", {"models.0.overrides": {"trian": {}}},
               "models[0].overrides.trian: unknown section"),
    suite_case("overrides.unknown-key", {"models.0.overrides": {"train": {"lrr": 1}}},
               "models[0].overrides.train.lrr: unknown key"),
    suite_case("overrides.range", {"models.0.overrides": {"train": {"lr": -1}}},
               "models[0].overrides.train.lr: -1.0 is out of range"),
    suite_case("overrides.nan", {"models.0.overrides": {"data": {"holdout": math.nan}}},
               "models[0].overrides.data.holdout", "not a finite"),
    suite_case("match.kind", {"models.0.match": {"size": 3}}, "models[0].match"),
    suite_case("match.inf", {"models.0.match": {"params": math.inf}}, "models[0].match.params", "not a finite"),
    suite_case("match.negative", {"models.0.match": {"params": -5}}, "models[0].match"),
]
