"""Evaluation variants: every trained run evaluated once per `eval.variants` item, never retrained.

Studies 002 (sigma^2 = beta vs beta-tilde; their shortened schedule vs respacing) and 004 (sigma_t
choices) compare samplers on one trained network. A variant is a name plus overrides of the
evaluation-time keys of the `eval` section (sampler, steps, sampler_opts, metrics, fid_n...; a key
replaces the section's value whole: `sampler_opts` is not merged). The
run id hashes the training config without `eval.variants`, so adding a variant to a finished suite
adds evaluations of the existing checkpoints and trains nothing. Each (entry, variant) is its own
leaderboard row, labelled `entry@variant`, in its own folder `<run_id>@<variant>-<hash>` (the hash
is over the variant's resolved eval section, so a changed variant is evaluated again).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from bench.config.schema import EvalConfig, build
from bench.errors import BenchError, choices_error

# Keys that shape training, its in-training evaluation or the scored images (the validation loss
# is computed once, during training, on eval.split): a variant cannot change them.
TRAINING_KEYS = {"variants", "every_kimg", "fid_proxy_n", "fid_proxy_steps", "fid_proxy_sampler",
                 "val_images", "val_t_per_image", "keep_checkpoints", "metric", "direction",
                 "split", "val_split", "subset", "subset_seed", "untrained_reference"}
VARIANT_KEYS = sorted({f for f in EvalConfig.__dataclass_fields__} - TRAINING_KEYS)


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict               # the variant's eval keys as written

    def eval_config(self, base: EvalConfig, where: str, path: str) -> EvalConfig:
        """The base eval section with this variant's overrides, type-checked, without variants."""
        merged = {**asdict(base), "variants": [], **self.overrides}
        return build(EvalConfig, merged, where, path)


def parse_variants(items, where: str) -> tuple[Variant, ...]:
    """Validate `eval.variants`: a list of {name, <eval keys>} with unique plain names."""
    if not isinstance(items, list):
        raise BenchError(f"{where}: eval.variants: expected a list of {{name, sampler, ...}}")
    out = []
    for i, item in enumerate(items):
        path = f"eval.variants[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BenchError(f"{where}: {path}: expected a mapping with a `name:` (a plain name)")
        name = item["name"]
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise BenchError(f"{where}: {path}.name: expected letters, digits, _ or -, got {name!r}")
        for key in item:
            if key != "name" and key not in VARIANT_KEYS:
                raise choices_error(f"{where}: {path}.{key}", "variant key", key, VARIANT_KEYS)
        out.append(Variant(name, {k: v for k, v in item.items() if k != "name"}))
    names = [v.name for v in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise BenchError(f"{where}: eval.variants: variant name {dup!r} is used twice")
    return tuple(out)


def variant_id(run_id: str, name: str, eval_cfg: EvalConfig) -> str:
    """Folder name of one evaluation of a trained run."""
    blob = json.dumps(asdict(eval_cfg), sort_keys=True, default=str).encode()
    return f"{run_id}@{name}-{hashlib.sha256(blob).hexdigest()[:6]}"


def training_eval(eval_cfg: EvalConfig) -> dict:
    """The eval section as it enters the run id: without the variants."""
    return {k: v for k, v in asdict(eval_cfg).items() if k != "variants"}


@dataclass(frozen=True)
class Evaluation:
    """One planned evaluation: a trained run (`train`, whose id names the checkpoint folder) under
    an eval section; `spec` is that run with the variant's eval section (for the evaluators)."""
    train: object                 # RunSpec as trained
    spec: object                  # RunSpec with eval = the variant's
    variant: str | None           # None: the run's own evaluation (a suite without variants)

    @property
    def eval_id(self) -> str:
        return self.train.run_id if self.variant is None else variant_id(
            self.train.run_id, self.variant, self.spec.eval)

    @property
    def label(self) -> str:
        return self.train.entry.name if self.variant is None else f"{self.train.entry.name}@{self.variant}"


def plan_evaluations(runs, where: str, check) -> tuple[Evaluation, ...]:
    """Every (run, variant) of a suite; `check(spec, where, path)` validates each variant's spec."""
    out = []
    for spec in runs:
        variants = parse_variants(spec.eval.variants, where)
        if not variants:
            out.append(Evaluation(spec, spec, None))
        for i, v in enumerate(variants):
            cfg = v.eval_config(spec.eval, where, f"eval.variants[{i}]")
            checked = check(replace(spec, eval=cfg), f"{where} (eval.variants[{i}] {v.name})",
                            f"eval.variants[{i}]")
            out.append(Evaluation(spec, checked, v.name))
    return tuple(out)
