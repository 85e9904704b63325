"""Quality curves of a finished run, without retraining: FID vs N and FID vs sampling steps.

Sources: study 001's Figure 9 (FID of one checkpoint at N = 2048, 4096, ... from one large sample
set: FID is biased upwards at small N, Binkowski et al. 2018 / Chong & Forsyth 2020) and the
step-count tables of Song et al. 2021 (DDIM) and Nichol & Dhariwal 2021 (respacing): one checkpoint,
DDPM at T steps and DDIM / respaced at 10, 20, 50, 100, each with its sampling img/s so quality and
cost sit in one table.

Feature generation, the reference statistics (cached) and the protocol record are the run's own
(`bench.metrics.quality.QualityHook`), so a curve point at the run's (sampler, steps, N, seed) is the
run's FID. The run is rebuilt through the same path as `bench run` (`bench.run.build.build_run`,
from `result.json["config"]` and the run's own record) and its weights from `checkpoint.pt` (EMA
unless `raw`). The curves go into `result.json["curves"]`; every other
key of the result is left as it was.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from bench import dist
from bench.config.schema import ModelEntry, build
from bench.config.suite import SECTIONS, RunSpec
from bench.errors import BenchError, choices_error
from bench.metrics import fid as F
from bench.metrics.quality import QualityHook
from bench.metrics.sampling import sampling_cost
from bench.run.build import build_run
from bench.run.context import RunContext
from bench.run.results import (
    CHECKPOINT,
    RESULT,
    evaluated_checkpoint,
    load_checkpoint,
    read_result,
    write_json,
    write_with,
)
from bench.samplers import SAMPLER_OPTIONS, SAMPLERS, check_formulation, resolve_steps
from bench.train.optim import make_ema

PNG_DIR = "curve_samples"   # --png: the first N images of the FID-vs-N sample set, one PNG each
ROW_KEYS = {"fid_vs_n": ("n",), "fid_vs_steps": ("sampler", "steps")}


# ---------------------------------------------------------------- the run folder

def load_run(run_dir) -> tuple[dict, RunSpec]:
    """(result.json, the RunSpec rebuilt from its config) of a complete run with a checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchError(f"eval: {run_dir}: no such run folder")
    result = read_result(run_dir)
    if result is None:
        inside = sorted(p.parent.name for p in run_dir.glob(f"*/{RESULT}"))
        hint = (f"; it holds {len(inside)} run folder(s), e.g. {run_dir / inside[0]}" if inside
                else "; pass results/<suite>/<run_id>")
        raise BenchError(f"eval: {run_dir}: not a run folder (no {RESULT}){hint}")
    if result.get("status") != "complete":
        raise BenchError(f"eval: {run_dir}: the run is {result.get('status')!r}, not complete; "
                         f"finish it with `bench run` first")
    if not (run_dir / CHECKPOINT).is_file():
        raise BenchError(f"eval: {run_dir}: no {CHECKPOINT}; the run's weights are gone")
    return result, spec_from_result(result, str(run_dir / RESULT))


def spec_from_result(result: dict, where: str = RESULT) -> RunSpec:
    """The inverse of `RunSpec.config()`: each section rebuilt (and re-validated) from the record."""
    config = result.get("config")
    if not isinstance(config, dict) or "entry" not in config:
        raise BenchError(f"{where}: config: missing; not a result written by `bench run`")
    sections = {key: build(cls, config.get(key), where, f"config.{key}") for key, cls in SECTIONS.items()}
    entry = build(ModelEntry, config["entry"], where, "config.entry")
    return RunSpec(suite=result.get("suite", ""), entry=entry, seed=config["seed"],
                   capacity=result.get("capacity"), **sections)


def load_network(spec: RunSpec, ctx: RunContext, checkpoint: dict, ema: bool) -> torch.nn.Module:
    """The run's denoiser with its EMA (AveragedModel, as in training) or raw weights, eval mode."""
    model = ctx.model
    if not ema:
        model.load_state_dict(checkpoint["model"])
        return model.eval()
    averaged = make_ema(model, spec.train.ema_decay, spec.train.ema_warmup)
    averaged.load_state_dict(checkpoint["ema"])
    return averaged.module.eval()


# ---------------------------------------------------------------- the settings of a curve run

@dataclasses.dataclass(frozen=True)
class CurveSettings:
    fid_n: tuple[int, ...] = (2048, 4096)   # N of the FID-vs-N curve (prefixes of one sample set)
    steps: tuple[int, ...] | None = None    # step counts; None = those of 10, 20, 50, 100 <= T
    samplers: tuple[str, ...] | None = None  # None = the run's own eval.sampler
    curve_n: int | None = None              # N of the FID-vs-steps curve; None = max(fid_n)
    curves: tuple[str, ...] = ("n", "steps")  # which curves to compute
    raw: bool = False                       # raw weights instead of the EMA
    seed: int | None = None                 # sampling seed; None = the run's eval.fid_seed
    png: int = 0                            # export the first `png` samples of the FID-vs-N set
    device: str | None = None               # None = the run's train.device


DEFAULT_STEPS = (10, 20, 50, 100)
CURVES = ("n", "steps")


def check_settings(settings: CurveSettings, spec: RunSpec) -> list[tuple[str, int]]:
    """Validate the settings against the run; the (sampler, steps) pairs of the FID-vs-steps curve."""
    for curve in settings.curves:
        if curve not in CURVES:
            raise choices_error("eval: --curves", "curve", curve, CURVES)
    for n in (*settings.fid_n, *([settings.curve_n] if settings.curve_n is not None else [])):
        if not isinstance(n, int) or n < 2:
            raise BenchError(f"eval: --fid-n/--curve-n: {n!r} is too small; FID and KID need N >= 2")
    if settings.png < 0:
        raise BenchError(f"eval: --png: expected a count >= 0, got {settings.png}")
    T = spec.diffusion.timesteps
    pairs = []
    for name in settings.samplers or (spec.eval.sampler,):
        if name not in SAMPLERS:
            raise choices_error("eval: --sampler", "sampler", name, SAMPLERS)
        check_formulation(spec.diffusion.formulation, name, "eval: --sampler")
        if name == "ddpm":   # the full chain only
            pairs.append((name, T))
            continue
        steps = settings.steps or tuple(s for s in DEFAULT_STEPS if s <= T) or (T,)
        pairs += [(name, resolve_steps(name, s, T, where=f"eval: --steps ({name})")) for s in steps]
    return list(dict.fromkeys(pairs))


# ---------------------------------------------------------------- one run's curves

class RunCurves:
    """One run's denoiser, data and Inception, and the generated feature sets drawn from it."""

    def __init__(self,
                 run_dir,                    # the run folder
                 spec: RunSpec,              # rebuilt by load_run
                 settings: CurveSettings,    # checked by check_settings
                 dataset,                    # bench.data.load_dataset(spec.data)
                 inception: tuple,           # (module, sha256) from load_inception, on `device`
                 device: torch.device):      # where sampling and features run
        self.run_dir, self.spec, self.settings = Path(run_dir), spec, settings
        self.inception, self.device = inception, device
        ctx = build_run(spec, dataset, device, run_dir, record=read_result(self.run_dir))
        checkpoint = load_checkpoint(evaluated_checkpoint(self.run_dir, ctx.record))
        self.ctx = ctx.evaluating(load_network(spec, ctx, checkpoint, ema=not settings.raw))
        T = spec.diffusion.timesteps
        self.base = dataclasses.replace(   # the run's sampler and steps, this evaluation's seed and weights
            spec.eval, steps=resolve_steps(spec.eval.sampler, spec.eval.steps, T),
            fid_seed=spec.eval.fid_seed if settings.seed is None else settings.seed,
            use_ema=not settings.raw)
        self._features: dict[tuple, list[np.ndarray]] = {}

    def hook(self, sampler: str, steps: int, n: int) -> QualityHook:
        """The run's QualityHook for (sampler, steps, N); the run's sampler options that apply."""
        opts = {k: v for k, v in self.spec.eval.sampler_opts.items() if k in SAMPLER_OPTIONS[sampler]}
        cfg = dataclasses.replace(self.base, sampler=sampler, steps=steps, fid_n=n, sampler_opts=opts)
        return QualityHook(dataclasses.replace(self.spec, eval=cfg), inception=self.inception)

    def features(self, sampler: str, steps: int, n: int) -> np.ndarray | None:
        """Features of the first `n` samples of the seeded stream; a set already drawn is reused
        when it holds at least n (image i's noise depends on (seed, i) alone: any prefix is the
        first n images). Under torchrun each rank draws its share; None on ranks > 0."""
        drawn = self._features.setdefault((sampler, steps), [])
        for feats in drawn:
            if len(feats) >= n:
                return feats[:n]
        feats = self.hook(sampler, steps, n).generated_features(self.ctx, n, steps)
        if feats is not None:
            drawn.append(feats)
        return feats

    def protocol(self, hook: QualityHook, drop: tuple[str, ...], **extra) -> dict:
        """The run's protocol record for `hook` (QualityHook.protocol), less the fields that
        vary along the curve, plus what else the numbers depend on."""
        protocol = {k: v for k, v in hook.protocol(self.ctx).to_dict().items() if k not in drop}
        return {**protocol, "sample_batch": hook.cfg.sample_batch, "amp": self.ctx.amp, **extra}

    def fid_vs_n(self) -> tuple[list[dict], dict]:
        """FID and KID at each N, from prefixes of one set of max(N) samples (study 001, Fig. 9)."""
        ns = sorted(set(self.settings.fid_n))
        hook = self.hook(self.base.sampler, self.base.steps, ns[-1])
        feats = self.features(self.base.sampler, self.base.steps, ns[-1])
        if feats is None:   # a torchrun rank > 0: its share is scored on rank 0
            return [], {}
        stats, ref = hook.reference(self.ctx, stats=True), hook.reference(self.ctx, stats=False)
        rows = []
        for n in ns:
            kid_mean, kid_std = F.kid(feats[:n], ref, hook.cfg.kid_subsets, hook.cfg.kid_subset_size,
                                      seed=hook.cfg.fid_seed)
            rows.append({"n": n, "fid": F.fid_from_features(feats[:n], stats),
                         "kid_mean": kid_mean, "kid_std": kid_std})
        protocol = self.protocol(hook, ("n_generated",), kid_subsets=hook.cfg.kid_subsets,
                                 kid_subset_size=hook.cfg.kid_subset_size)
        return rows, protocol

    def fid_vs_steps(self, pairs: list[tuple[str, int]]) -> tuple[list[dict], dict]:
        """FID at one N for each (sampler, steps), with the sampling img/s of each."""
        n = self.settings.curve_n or max(self.settings.fid_n)
        rows = []
        for sampler, steps in pairs:
            hook, feats = self.hook(sampler, steps, n), self.features(sampler, steps, n)
            if feats is None:   # a torchrun rank > 0
                continue
            fid = F.fid_from_features(feats, hook.reference(self.ctx, stats=True))
            cost = sampling_cost(self.ctx.net_for_sampling(hook.cfg.sample_batch), self.ctx.diffusion,
                                 hook.cfg, self.ctx.shape, amp=self.ctx.amp,
                                 device=self.device)   # after sampling: warm
            eta = self.protocol(hook, ())["eta"]
            rows.append({"sampler": sampler, "steps": steps, "eta": eta, "fid": fid,
                         "sample_img_per_s": cost["sample_img_per_s"]})
        if not dist.is_main():
            return [], {}
        protocol = self.protocol(hook, ("sampler", "steps", "eta"), device=str(self.device))
        return rows, protocol

    def export_png(self, count: int) -> Path:
        """The first `count` images of the FID-vs-N sample set as PNGs (drawn again, with
        QualityHook.generated_features' batches and seeds), for checks with other FID code."""
        total, cfg = max(max(self.settings.fid_n), count), self.base
        folder = self.run_dir / PNG_DIR
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("*.png"):
            stale.unlink()
        hook = self.hook(cfg.sampler, cfg.steps, total)
        for start, x in hook.sample_batches(self.ctx, total, cfg.steps, sharded=False):
            if start >= count:
                break
            for j, image in enumerate(x[: count - start]):
                write_with(folder / f"{start + j:06d}.png",
                           lambda p, image=image: save_image((image + 1) / 2, p, format="png"))
        return folder

    def evaluate(self, pairs: list[tuple[str, int]]) -> dict:
        """The requested curves and their protocols (not yet written)."""
        new = {"protocol": {}}
        if "n" in self.settings.curves:
            new["fid_vs_n"], new["protocol"]["fid_vs_n"] = self.fid_vs_n()
        if "steps" in self.settings.curves:
            new["fid_vs_steps"], new["protocol"]["fid_vs_steps"] = self.fid_vs_steps(pairs)
        if self.settings.png and dist.is_main():
            self.export_png(self.settings.png)
        return new


# ---------------------------------------------------------------- result.json

def merge_curves(old: dict | None, new: dict) -> dict:
    """`new` curves over `old`: rows with the same key (N, or sampler and steps) are replaced; a
    curve whose protocol changed (other seed, raw weights, N...) is replaced as a whole."""
    merged = dict(old or {})
    protocols = dict(merged.get("protocol") or {})
    for name, key in ROW_KEYS.items():
        if name not in new:
            continue
        same = protocols.get(name) == new["protocol"][name]
        rows = {tuple(r[k] for k in key): r for r in ((merged.get(name) or []) if same else [])}
        rows.update({tuple(r[k] for k in key): r for r in new[name]})
        merged[name] = [rows[k] for k in sorted(rows)]
        protocols[name] = new["protocol"][name]
    merged["protocol"] = protocols
    return merged


def write_curves(run_dir, new: dict) -> dict:
    """Merge `new` into result.json["curves"] atomically, re-reading the file first so that
    every other key (status, metrics, ...) stays exactly as it is on disk; returns the curves."""
    run_dir = Path(run_dir)
    result = read_result(run_dir)
    result["curves"] = merge_curves(result.get("curves"), new)
    write_json(run_dir / RESULT, result)
    return result["curves"]
