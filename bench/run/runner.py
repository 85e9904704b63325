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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from bench.config.schema import BudgetConfig
from bench.data import DatasetMemo
from bench.device import resolve_device
from bench.errors import BenchError, warn
from bench.metrics.cost import model_cost
from bench.metrics.quality import quality_hooks
from bench.run.build import build_run
from bench.run.context import RunContext
from bench.run.evaluate import validation_loss
from bench.run.evaluations import evaluate_variants
from bench.run.final import final_evaluation, snapshot
from bench.run.progress import SuiteProgress, to_stderr
from bench.run.results import (
    CHECKPOINT,
    RESULT,
    load_checkpoint,
    read_result,
    remove_temp_files,
    save_checkpoint,
    write_json,
)
from bench.run.stopping import best_point, keep_best, observe
from bench.run.tensorboard import NOT_INSTALLED, available, events_hook
from bench.train.loop import Diverged, checkpoint_state, train

Hook = Callable[[str, RunContext], dict | None]  # hook(phase "train" | "final", ctx) -> metrics


def run_suite(suite, results_root: str | Path = "results", *, progress: bool = True,
              log: Callable[[str], None] = print, retry_failed: bool = False,
              tensorboard: bool = True, datasets: DatasetMemo | None = None) -> Path:
    """Run every planned run not yet complete; returns the suite's results folder. A run that
    failed (non-finite loss) is skipped unless `retry_failed`; an unreadable result is redone.
    `tensorboard`: also write each run's curves as TensorBoard events (when it is installed);
    `datasets`: the preflight's loaded datasets, reused."""
    out = Path(results_root) / suite.name
    if tensorboard and not available():
        log(NOT_INSTALLED)
    write_json(out / "suite.json", suite_record(suite))
    datasets = datasets or DatasetMemo()
    bar = SuiteProgress(len(suite.runs), sum(_to_do(out / s.run_id, retry_failed) for s in suite.runs))
    for i, spec in enumerate(suite.runs, 1):
        run_dir, where = out / spec.run_id, f"[{i}/{len(suite.runs)}] {spec.run_id}"
        remove_temp_files(run_dir)
        status = _status(run_dir)
        if status == "complete":
            log(f"{where}: complete, skipped")
            continue
        if status == "failed" and not retry_failed:
            log(f"{where}: failed earlier, skipped (--retry-failed runs it again)")
            continue
        retry = "; failed earlier, retrying" if status == "failed" else ""
        fold = "" if spec.fold is None else f"fold {spec.fold}, "
        log(f"{where}: {spec.entry.arch}, {fold}seed {spec.seed}{retry}")
        if progress:  # the suite's line above the run's tqdm bar (stderr, as the bar)
            to_stderr(bar.begin(i, spec.entry.name, spec.seed))
        record = run_one(spec, run_dir, datasets(spec.data), progress=progress,
                         tensorboard=tensorboard)
        bar.end()
        if record.get("status") == "failed":
            log(f"{where}: failed: {record['error']}; the suite goes on (--retry-failed runs it again)")
    evaluate_variants(suite, out, lambda spec: datasets(spec.data), log)
    return out


def _recorded_status(run_dir: Path) -> str | None:
    """"complete" | "failed" | another recorded status | None (no result); BenchError if unreadable."""
    result = read_result(run_dir)
    if result is None:
        return None
    return "failed" if result.get("failure") else result.get("status")


def _status(run_dir: Path) -> str | None:
    """The run's recorded status; an unreadable result.json is reported and the run redone."""
    try:
        return _recorded_status(run_dir)
    except BenchError as err:
        warn(f"{err}; the run is redone")
        (run_dir / RESULT).unlink(missing_ok=True)
        return None


def _to_do(run_dir: Path, retry_failed: bool) -> bool:
    """Whether this invocation will train the run (for the ETA; reads, never changes, the folder)."""
    try:
        status = _recorded_status(run_dir)
    except BenchError:
        return True
    return status != "complete" and (status != "failed" or retry_failed)


def suite_record(suite) -> dict:
    """What the report needs of the suite itself: entry order, baseline, ranking metric, raw YAML."""
    return {"name": suite.name, "path": suite.path, "description": suite.description,
            "entries": list(dict.fromkeys(e.label for e in suite.evaluations))  # leaderboard rows
            or [m.name for m in suite.models], "seeds": list(suite.seeds),
            "baseline": _baseline_label(suite), "metric": suite.eval.metric,
            "direction": suite.eval.direction, "suite": suite.raw}


def _baseline_label(suite) -> str:
    """The baseline entry's row label: `entry@variant` (its first variant) in a variant suite."""
    name = suite.baseline or suite.models[0].name
    rows = [e.label for e in suite.evaluations if e.train.entry.name == name]
    return rows[0] if rows else name


def run_one(spec, run_dir: str | Path, dataset, *, hooks: list[Hook] = (), progress: bool = True,
            tensorboard: bool = True) -> dict:
    """Train and evaluate one run; writes result.json, samples.png and checkpoint.pt atomically
    (and the TensorBoard events of its curves, bench.run.tensorboard, unless `tensorboard` is off)."""
    wall_start = time.perf_counter()
    ctx = build_run(spec, dataset, resolve_device(spec.train.device), run_dir)
    ctx.record["metrics"].update(model_cost(ctx.model, spec.data.channels + ctx.task.cond_channels,
                                            spec.data.image_size))
    hooks = [*quality_hooks(spec), *hooks,  # quality first: later hooks (pruning) see fid_proxy
             *([events_hook] if tensorboard else [])]  # last: the events see every metric
    clock = EvalClock(wall_start)
    _reset_peak(ctx.device)
    try:
        state = train(ctx.model, ctx.diffusion, ctx.batches, spec.train, spec.budget,
                      generator=ctx.noise_gen, every_kimg=spec.eval.every_kimg,
                      on_eval=lambda state: _evaluate(ctx, state, hooks, clock),
                      resume=_resume_state(ctx.run_dir, spec), progress=progress, task=ctx.task)
        _finish(ctx, state, hooks, clock)
    except Diverged as err:  # a failed run, not a crash: the suite's other runs go on
        ctx.record.update(status="failed", error=f"non-finite training loss at step {err.step}",
                          failure={"reason": "non-finite training loss", "step": err.step,
                                   "loss": str(err.loss)})
        write_json(ctx.run_dir / RESULT, ctx.record)
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
    improved = observe(spec, state, point)  # train.early_stop: its state goes into the checkpoint
    save_checkpoint(ctx.run_dir / CHECKPOINT, checkpoint_state(state))
    if improved:
        keep_best(ctx)
    snapshot(view, state)  # the fixed-noise grid of this evaluation (and its checkpoint if kept)
    _fill(record, spec.budget, state, clock.so_far(started), clock.wall_start)
    write_json(ctx.run_dir / RESULT, record)
    clock.seconds = clock.so_far(started)
    _reset_peak(ctx.device)


def _evaluated_net(spec, state: dict) -> torch.nn.Module:
    return state["ema"].module if spec.eval.use_ema else state["model"]


def _finish(ctx: RunContext, state: dict, hooks, clock: EvalClock) -> None:
    """Final metrics (sample grid, sampling cost, x̂0 panel, hooks, protocol) and the complete
    result (of the best evaluation's checkpoint with `train.early_stop`). A run of a suite with
    `eval.variants` is only trained here (`role: training`): each
    variant evaluates its checkpoint (`bench.run.evaluations`)."""
    started, spec, record = time.perf_counter(), ctx.spec, ctx.record
    last = next(p for p in reversed(state["history"]) if "val_loss" in p)
    net, last = best_point(spec, state, ctx) or (_evaluated_net(spec, state), last)
    record["metrics"].update({k: v for k, v in last.items() if k.startswith("val_loss")})
    if spec.eval.variants:
        record["role"] = "training"
    else:
        final_evaluation(ctx.evaluating(net, state), hooks)
    _fill(record, spec.budget, state, clock.so_far(started), clock.wall_start)
    record["status"] = "complete"
    write_json(ctx.run_dir / RESULT, record)


def _fill(record: dict, budget: BudgetConfig, state: dict, eval_seconds: float, wall_start: float) -> None:
    """Copy counters, history and derived training metrics from the train state into the record."""
    losses = state["losses"]
    window = losses[-max(1, min(50, len(losses) // 10 or 1)):]
    record["history"] = state["history"]
    record["budget"] = {"unit": budget.unit, "requested": budget.amount, "images": state["images"],
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
    try:
        return load_checkpoint(ckpt)
    except BenchError as err:
        warn(f"{err}; the run starts over")
        return None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device, metrics: dict) -> float | None:
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    return max(peak, metrics.get("peak_mem_train_mb") or 0.0)
