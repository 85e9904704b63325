"""The documented range of every number in the suite schema, and the checks that enforce them
before any work: every number finite, every schema number inside its range.

`RANGES` maps `section.key` to a rule in interval notation: `[a, b]` closed, `(a, b)` open, `inf`
unbounded, `{1, 3}` a set, `|` a union. A test walks the schema (`bench.config.schema`): a numeric
field without a rule here fails it, so a new key cannot ship without its documented range.
Sources of the bounds: Adam's betas in [0, 1) (Kingma & Ba 2015), SGDR's T_0 > 0 and T_mult >= 1
(Loshchilov & Hutter 2017), KID's unbiased MMD needs subsets of at least 2 (Binkowski et al. 2018).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from bench.errors import BenchError

SEED = "[0, 4294967295]"           # torch.manual_seed's portable range (32 bits)
ONE_IMAGE = "[0.001, inf)"         # a kimg amount of at least one image

RANGES = {
    "data.image_size": "[1, 4096]", "data.channels": "{1, 3}", "data.holdout": "(0, 1)",
    "data.limit": "[1, inf)", "data.num_images": "[2, inf)", "data.seed": SEED,
    "data.folds.k": "[2, 1000]", "data.folds.fold": "[0, 999]",
    "data.shapes.max_count": "[1, 3]", "data.shapes.min_radius": "(0, 0.5]",
    "data.shapes.max_radius": "(0, 0.5]",
    "diffusion.timesteps": "[1, 100000]", "diffusion.min_snr_gamma": "(0, inf)",
    "diffusion.beta_start": "(0, 1)", "diffusion.beta_end": "(0, 1)",
    "diffusion.edm.sigma_data": "(0, inf)", "diffusion.edm.p_mean": "[-20, 20]",
    "diffusion.edm.p_std": "(0, 20]", "diffusion.edm.sigma_min": "(0, inf)",
    "diffusion.edm.sigma_max": "(0, inf)", "diffusion.edm.rho": "(0, inf)",
    "budget.kimg": ONE_IMAGE, "budget.steps": "[1, inf)", "budget.seconds": "(0, inf)",
    "train.batch_size": "[1, 65536]", "train.micro_batch": "[1, 65536]", "train.lr": "(0, inf)", "train.betas": "[0, 1)",
    "train.weight_decay": "[0, inf)", "train.eps": "(0, inf)", "train.warmup_kimg": "[0, inf)",
    "train.lr_min": "[0, inf)", "train.cycle_kimg": ONE_IMAGE, "train.cycle_mult": "[1, inf)",
    "train.grad_clip": "(0, inf)", "train.ema_decay": "[0, 1)", "train.ema_start_step": "[0, inf)",
    "train.log_every": "[1, inf)", "train.early_stop.patience": "[1, inf)",
    "train.early_stop.min_delta": "[0, inf)",
    "eval.every_kimg": ONE_IMAGE, "eval.steps": "[1, inf)", "eval.grid": "[1, 1024]",
    "eval.grid_seed": SEED, "eval.sample_batch": "[1, inf)", "eval.val_images": "[1, inf)",
    "eval.val_t_per_image": "[1, 1000]", "eval.fid_n": "[2, inf)", "eval.fid_proxy_n": "{0} | [2, inf)",
    "eval.fid_proxy_steps": "[1, inf)", "eval.fid_reference_n": "[2, inf)", "eval.fid_seed": SEED,
    "eval.fid_batch": "[1, inf)", "eval.kid_subsets": "[1, inf)", "eval.kid_subset_size": "[2, inf)",
    "eval.pr_k": "[1, inf)", "eval.recon_images": "[1, inf)", "eval.roundtrip_steps": "[1, inf)",
    "eval.subset_seed": SEED, "eval.classify_n": "[2, inf)",
}
SEEDS_RULE = SEED                  # the top-level `seeds` list

_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")


def allowed(rule: str, value: float) -> bool:
    """Whether `value` satisfies `rule` (see the module docstring for the notation)."""
    return any(_part(part.strip(), value) for part in rule.split("|"))


def _part(part: str, value: float) -> bool:
    if part.startswith("{"):
        return value in {float(v) for v in part.strip("{}").split(",")}
    m = _INTERVAL.match(part)
    if not m:
        raise ValueError(f"bad range rule {part!r}")
    lo, hi = float(m.group(2)), float(m.group(3))
    above = value >= lo if m.group(1) == "[" else value > lo
    below = value <= hi if m.group(4) == "]" else value < hi
    return above and below


def numeric(hint: Any) -> bool:
    """Whether a schema type hint holds numbers (int, float, a tuple of them, or Optional of one)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(numeric(a) for a in args if a is not type(None))
    if origin is tuple:
        return all(numeric(a) for a in args)
    return hint in (int, float)


def numeric_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if numeric(hints[f.name])]


def check_ranges(obj: Any, section: str, where: str, path: str) -> None:
    """Every number of a built section inside its documented range; BenchError naming the key."""
    for f in dataclasses.fields(obj):  # nested sections (train.early_stop): their own rules
        if dataclasses.is_dataclass(getattr(obj, f.name)):
            check_ranges(getattr(obj, f.name), f"{section}.{f.name}", where, f"{path}.{f.name}")
    for name in numeric_fields(type(obj)):
        value, rule = getattr(obj, name), RANGES.get(f"{section}.{name}")
        if value is None or rule is None:
            continue
        for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
            if not allowed(rule, v):
                index = f"[{i}]" if isinstance(value, tuple) else ""
                raise BenchError(f"{where}: {path}.{name}{index}: {v!r} is out of range; "
                                 f"the documented range is {rule}")


def first_nonfinite(node: Any, path: str = "") -> tuple[str, float] | None:
    """(key path, value) of the first NaN or infinity anywhere in a parsed YAML document."""
    if isinstance(node, float) and not math.isfinite(node):
        return path, node
    if isinstance(node, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for sub, value in items:
        found = first_nonfinite(value, sub)
        if found:
            return found
    return None


def check_finite(raw: Any, where: str, path: str = "") -> None:
    found = first_nonfinite(raw, path)
    if found:
        raise BenchError(f"{where}: {found[0]}: {found[1]!r} is not a finite number")
