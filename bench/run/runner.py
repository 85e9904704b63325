"""`bench run`: every (entry, seed) of a suite -> a run folder with result.json, samples.png and a
checkpoint (`bench.cli` writes the report after it).

A run folder is named by its id (a hash of the resolved config), so re-running a suite skips what
is complete and resumes what is not from its last evaluation checkpoint (EDM's resume-from-snapshot,
with the data order and noise generators restored too). Results are written atomically; a run still
in progress (or pruned by Optuna) has `status: running|pruned` and its partial history.

The run's parts come from `bench.run.build.build_run` as one typed `RunContext`; every evaluation
hands hooks `ctx.evaluating(net, state, point)` (see `bench.metrics.hook` for the hook contract).
Under torchrun rank 0 runs this loop and announces each run to the other ranks, which train it
with it (`bench.run.distributed`); only rank 0 writes.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from bench import dist
from bench.config.schema import BudgetConfig
from bench.data import DatasetMemo
from bench.device import resolve_device
from bench.errors import BenchError, warn
from bench.metrics.cost import model_cost
from bench.metrics.quality import QualityHook, quality_hooks
from bench.run import distributed
from bench.run.build import build_run
from bench.run.claims import ClaimLost, claimed, stale_seconds
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
from bench.run.state import skip_reason, status_or_redo
from bench.run.stopping import best_point, keep_best, observe
from bench.run.tensorboard import NOT_INSTALLED, available, events_hook
from bench.train.loop import Diverged, checkpoint_state, train

Hook = Callable[[str, RunContext], dict | None]  # hook(phase "train" | "final", ctx) -> metrics


def run_suite(suite, results_root: str | Path = "results", *, progress: bool = True,
              log: Callable[[str], None] = print, retry_failed: bool = False,
              tensorboard: bool = True, datasets: DatasetMemo | None = None,
              run_ids: set[str] | None = None, wait: bool = True, keep_going: bool = False) -> Path:
    """Run every planned run not yet complete (or only `run_ids`); returns the suite's results
    folder. Each run is claimed first (`bench.run.claims`): a run another live process holds is
    waited for (`wait`) or skipped. A run that failed before this call started is skipped unless
    `retry_failed`; an unreadable result is redone. `keep_going`: a run that crashes is logged
    and the next one taken (workers). `tensorboard`: also write each run's curves as TensorBoard
    events (when installed); `datasets`: the preflight's loaded datasets, reused."""
    out, started = Path(results_root) / suite.name, time.time()
    if tensorboard and not available():
        log(NOT_INSTALLED)
    for path in remove_temp_files(out, older_than=stale_seconds()):  # a writer that died long ago
        log(f"removed {path} (a write killed part-way)")
    write_json(out / "suite.json", suite_record(suite))
    datasets = datasets or DatasetMemo()
    specs = [s for s in suite.runs if run_ids is None or s.run_id in run_ids]
    index = {s.run_id: i for i, s in enumerate(suite.runs, 1)}
    where = {r: f"[{i}/{len(suite.runs)}] {r}" for r, i in index.items()}
    bar = SuiteProgress(len(suite.runs), sum(skip_reason(out / s.run_id, retry_failed, started) is None
                                            for s in specs))

    def pending(spec) -> bool:
        reason = skip_reason(out / spec.run_id, retry_failed, started)
        if reason:
            log(f"{where[spec.run_id]}: {reason}")
        return reason is None

    crashed = []
    for spec, claim in claimed(specs, lambda s: out / s.run_id, pending, log=log, wait=wait,
                               label=lambda s: where[s.run_id]):
        try:
            _claimed_run(spec, out / spec.run_id, index[spec.run_id], where[spec.run_id], claim,
                         datasets, bar, log,
                         progress=progress, tensorboard=tensorboard, retry_failed=retry_failed,
                         started=started)
        except ClaimLost as err:  # our heartbeat went stale and another worker took the run over
            log(f"{where[spec.run_id]}: {err}; it finishes the run, this one takes the next")
        except Exception as err:
            if not keep_going:
                raise
            log(f"{where[spec.run_id]}: crashed: {type(err).__name__}: {err}; taking the next run")
            crashed.append(spec.run_id)
    distributed.release()  # torchrun: the other ranks leave; variants and report on rank 0 alone
    evaluate_variants(suite, out, lambda spec: datasets(spec.data), log, run_ids=run_ids, wait=wait)
    if crashed:
        raise RunsCrashed(f"{len(crashed)} run(s) crashed: {', '.join(crashed)}")
    return out


class RunsCrashed(Exception):
    """Runs of a worker (`keep_going`) crashed; the others were done."""


def _claimed_run(spec, run_dir: Path, i: int, where: str, claim, datasets, bar, log, *,
                 progress: bool, tensorboard: bool, retry_failed: bool, started: float) -> None:
    """Train one run this process has claimed (unless another finished it meanwhile)."""
    for path in remove_temp_files(run_dir):  # ours now: whoever wrote them is gone
        log(f"removed {path} (a write killed part-way)")
    status = status_or_redo(run_dir)  # an unreadable result.json is removed here, under the claim
    if skip_reason(run_dir, retry_failed, started):
        return
    retry = "; failed earlier, retrying" if status == "failed" else ""
    fold = "" if spec.fold is None else f"fold {spec.fold}, "
    log(f"{where}: {spec.entry.arch}, {fold}seed {spec.seed}{retry}")
    if progress:  # the suite's line above the run's tqdm bar (stderr, as the bar)
        to_stderr(bar.begin(i, spec.entry.name, spec.seed))
    record = run_one(spec, run_dir, datasets(spec.data), progress=progress,
                     tensorboard=tensorboard, hooks=[claim.check])
    bar.end()
    if record.get("status") == "failed":
        log(f"{where}: failed: {record['error']}; the suite goes on (--retry-failed runs it again)")


def suite_record(suite) -> dict:
    """What the report needs of the suite itself: entry order, baseline, ranking metric, raw YAML."""
    return {"name": suite.name, "path": suite.path, "description": suite.description,
            "runs": [s.run_id for s in suite.runs],  # every planned run (`bench status`)
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
    distributed.announce(spec.run_id)  # torchrun: the other ranks train it too
    progress, tensorboard = progress and dist.is_main(), tensorboard and dist.is_main()
    ctx = build_run(spec, dataset, resolve_device(spec.train.device), run_dir)
    ctx.record["metrics"].update(model_cost(ctx.model, spec.data.channels + ctx.task.cond_channels,
                                            spec.data.image_size))
    hooks = [*quality_hooks(spec), *hooks,  # quality first: later hooks (pruning) see fid_proxy
             *([events_hook] if tensorboard else [])]  # last: the events see every metric
    clock, resume = EvalClock(wall_start), _resume_state(ctx.run_dir, spec)
    _reset_peak(ctx.device)
    try:
        _untrained_reference(ctx, hooks, resume, clock)
        state = train(ctx.model, ctx.diffusion, ctx.batches, spec.train, spec.budget,
                      generator=ctx.noise_gen, every_kimg=spec.eval.every_kimg,
                      on_eval=lambda state: _evaluate(ctx, state, hooks, clock),
                      resume=resume, progress=progress, task=ctx.task)
        _finish(ctx, state, hooks, clock)
    except Diverged as err:  # a failed run, not a crash: the suite's other runs go on
        ctx.record.update(status="failed", error=f"non-finite training loss at step {err.step}",
                          failure={"reason": "non-finite training loss", "step": err.step,
                                   "loss": str(err.loss)})
        write_json(ctx.run_dir / RESULT, ctx.record)
    except ClaimLost:  # another worker owns the run now: write nothing
        raise
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


def _untrained_reference(ctx: RunContext, hooks, resume: dict | None, clock: EvalClock) -> None:
    """`eval.untrained_reference`: the network's FID/KID/PR before its first step, same protocol
    as the final evaluation (a resumed run keeps its first attempt's, from its result.json)."""
    if not ctx.spec.eval.untrained_reference:
        return
    if resume is not None:
        earlier = (read_result(ctx.run_dir) or {}).get("metrics", {})
        ctx.record["metrics"].update({k: v for k, v in earlier.items() if k.startswith("untrained_")})
        return
    started = time.perf_counter()
    quality = next(h for h in hooks if isinstance(h, QualityHook))
    ctx.record["metrics"].update(quality.untrained(ctx.evaluating(ctx.model)))
    clock.seconds = clock.so_far(started)


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
