"""`bench run`: every (entry, seed) of a suite -> a run folder with result.json, samples.png and a
checkpoint (`bench.cli` writes the report after it).

A run folder is named by its id (a hash of the resolved config), so re-running a suite skips what
is complete and resumes what is not from its last evaluation checkpoint (EDM's resume-from-snapshot,
with the data order and noise generators restored too). Results are written atomically; a run still
in progress (or pruned by Optuna) has `status: running|pruned` and its partial history.

The run's parts come from `bench.run.build.build_run` as one typed `RunContext`; every evaluation
hands hooks `ctx.evaluating(net, state, point)` (see `bench.metrics.hook` for the hook contract).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
import torch
from torchvision.utils import save_image

from bench.data import load_dataset
from bench.device import resolve_device
from bench.metrics.cost import model_cost
from bench.metrics.quality import quality_hooks
from bench.metrics.sampling import grid_noise, sample, sampling_cost
from bench.run.build import build_run
from bench.run.context import RunContext
from bench.run.evaluate import validation_loss
from bench.run.results import CHECKPOINT, RESULT, SAMPLES, is_complete, read_result, write_json, write_with
from bench.train.loop import checkpoint_state, train

Hook = Callable[[str, RunContext], dict | None]  # hook(phase "train" | "final", ctx) -> metrics


def run_suite(suite, results_root: str | Path = "results", *, progress: bool = True,
              log: Callable[[str], None] = print) -> Path:
    """Run every planned run not yet complete; returns the suite's results folder."""
    out = Path(results_root) / suite.name
    write_json(out / "suite.json", suite_record(suite))
    datasets: dict = {}
    for i, spec in enumerate(suite.runs, 1):
        run_dir = out / spec.run_id
        if is_complete(run_dir):
            log(f"[{i}/{len(suite.runs)}] {spec.run_id}: complete, skipped")
            continue
        log(f"[{i}/{len(suite.runs)}] {spec.run_id}: {spec.entry.arch}, seed {spec.seed}")
        key = repr(spec.data)
        if key not in datasets:
            datasets[key] = load_dataset(spec.data)
        run_one(spec, run_dir, datasets[key], progress=progress)
    return out


def suite_record(suite) -> dict:
    """What the report needs of the suite itself: entry order, baseline, ranking metric, raw YAML."""
    return {"name": suite.name, "path": suite.path, "description": suite.description,
            "entries": [m.name for m in suite.models], "seeds": list(suite.seeds),
            "baseline": suite.baseline or suite.models[0].name, "metric": suite.eval.metric,
            "direction": suite.eval.direction, "suite": suite.raw}


def run_one(spec, run_dir: str | Path, dataset, *, hooks: list[Hook] = (), progress: bool = True) -> dict:
    """Train and evaluate one run; writes result.json, samples.png and checkpoint.pt atomically."""
    wall_start = time.perf_counter()
    ctx = build_run(spec, dataset, resolve_device(spec.train.device), run_dir)
    ctx.record["metrics"].update(model_cost(ctx.model, spec.data.channels + ctx.task.cond_channels,
                                            spec.data.image_size))
    hooks = [*quality_hooks(spec), *hooks]  # quality first: later hooks (pruning) see fid_proxy
    clock = EvalClock(wall_start)
    _reset_peak(ctx.device)
    try:
        state = train(ctx.model, ctx.diffusion, ctx.batches, spec.train, spec.budget,
                      generator=ctx.noise_gen, every_kimg=spec.eval.every_kimg,
                      on_eval=lambda state: _evaluate(ctx, state, hooks, clock),
                      resume=_resume_state(ctx.run_dir, spec), progress=progress, task=ctx.task)
        _finish(ctx, state, hooks, clock)
    except BaseException as err:  # keep the partial result, say why it stopped, re-raise
        pruned = isinstance(err, optuna.TrialPruned)
        ctx.record["status"] = "pruned" if pruned else "interrupted" if isinstance(
            err, KeyboardInterrupt) else "failed"
        ctx.record["error"] = None if pruned else f"{type(err).__name__}: {err}"
        write_json(ctx.run_dir / RESULT, ctx.record)
        raise
    return ctx.record


@dataclass
class EvalClock:
    """A run's wall-clock start and its evaluation seconds so far (never part of a budget)."""
    wall_start: float
    seconds: float = 0.0              # evaluations finished so far

    def so_far(self, started: float) -> float:
        """Evaluation seconds including the evaluation that began at `started` (perf_counter)."""
        return self.seconds + time.perf_counter() - started


def _evaluate(ctx: RunContext, state: dict, hooks, clock: EvalClock) -> None:
    """One in-training evaluation: validation loss, hooks, checkpoint and partial result."""
    started, spec, record = time.perf_counter(), ctx.spec, ctx.record
    record["metrics"]["peak_mem_train_mb"] = _peak_mb(ctx.device, record["metrics"])
    net = _evaluated_net(spec, state)
    point = {"step": state["step"], "kimg": state["images"] / 1000,
             **validation_loss(net, ctx.diffusion, ctx.triples, spec.eval.sample_batch, ctx.amp,
                               ctx.task)}
    state["history"].append(point)  # first: a trial pruned by a hook keeps this evaluation
    view = ctx.evaluating(net, state, point)
    for hook in hooks:  # later hooks (Optuna pruning) see earlier hooks' metrics in `point`
        point.update(hook("train", view) or {})
    state["last_eval_step"] = state["step"]
    write_with(ctx.run_dir / CHECKPOINT, lambda p: torch.save(checkpoint_state(state), p))
    _fill(record, state, clock.so_far(started), clock.wall_start)
    write_json(ctx.run_dir / RESULT, record)
    clock.seconds = clock.so_far(started)
    _reset_peak(ctx.device)


def _evaluated_net(spec, state: dict) -> torch.nn.Module:
    return state["ema"].module if spec.eval.use_ema else state["model"]


def _finish(ctx: RunContext, state: dict, hooks, clock: EvalClock) -> None:
    """Final metrics (sample grid, sampling cost, hooks) and the complete result."""
    started, spec, record = time.perf_counter(), ctx.spec, ctx.record
    view = ctx.evaluating(_evaluated_net(spec, state), state)
    n = spec.eval.grid
    noise = grid_noise(n, ctx.shape, spec.eval.grid_seed, ctx.device)
    grid = sample(view.net_for_sampling(n), ctx.diffusion, spec.eval, n, ctx.shape, noise=noise,
                  seed=spec.eval.grid_seed, amp=ctx.amp, device=ctx.device)
    grid, task_metrics = ctx.task.finish(grid)
    record["metrics"].update(task_metrics)
    write_with(ctx.run_dir / SAMPLES, lambda p: save_image((grid + 1) / 2, p, nrow=_nrow(n),
                                                          format="png"))
    record["metrics"].update(sampling_cost(view.net_for_sampling(spec.eval.sample_batch),
                                           ctx.diffusion, spec.eval, ctx.shape, amp=ctx.amp,
                                           device=ctx.device))
    last = next(p for p in reversed(state["history"]) if "val_loss" in p)
    record["metrics"].update({k: v for k, v in last.items() if k.startswith("val_loss")})
    for hook in hooks:
        record["metrics"].update(hook("final", view) or {})
    _fill(record, state, clock.so_far(started), clock.wall_start)
    record["status"] = "complete"
    write_json(ctx.run_dir / RESULT, record)


def _fill(record: dict, state: dict, eval_seconds: float, wall_start: float) -> None:
    """Copy counters, history and derived training metrics from the train state into the record."""
    losses = state["losses"]
    window = losses[-max(1, min(50, len(losses) // 10 or 1)):]
    unit, requested = next((k, v) for k, v in record["config"]["budget"].items() if v is not None)
    record["history"] = state["history"]
    record["budget"] = {"unit": unit, "requested": requested, "images": state["images"],
                        "kimg": state["images"] / 1000, "steps": state["step"],
                        "train_seconds": state["train_seconds"]}
    record["timing"] = {"train_seconds": state["train_seconds"], "eval_seconds": eval_seconds,
                        "wall_seconds": time.perf_counter() - wall_start}
    record["metrics"]["final_train_loss"] = sum(window) / len(window) if window else None
    record["metrics"]["train_img_per_s"] = state["images"] / max(state["train_seconds"], 1e-9)


def _resume_state(run_dir: Path, spec) -> dict | None:
    """The last evaluation checkpoint of an unfinished run with the same id, if any."""
    result, ckpt = read_result(run_dir), run_dir / CHECKPOINT
    if not result or result.get("run_id") != spec.run_id or not ckpt.exists():
        return None
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device, metrics: dict) -> float | None:
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    return max(peak, metrics.get("peak_mem_train_mb") or 0.0)


def _nrow(n: int) -> int:
    return max(1, int(n ** 0.5))
