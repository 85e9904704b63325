"""Eval variants of trained runs (`eval.variants`, `bench.config.variants`): each (run, variant)
evaluated from the run's `checkpoint.pt` into its own folder `<run_id>@<variant>-<hash>/`, with a
result.json that is a leaderboard row of its own. Nothing is trained here.

The row's record is the trained run's (config, history, validation loss, budget, timing, cost) with
the variant's eval section, `entry: <entry>@<variant>`, `trained_run: <run_id>`, and the metrics
and protocol of this evaluation (`bench.run.final`), so a paired test across seeds compares two
variants on the very same networks. Used by `bench run` (every pending evaluation after the
trainings) and `bench eval RUN --variant NAME` (one evaluation of a finished run, its own sampler
settings).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from bench.device import resolve_device
from bench.errors import BenchError
from bench.metrics.quality import quality_hooks
from bench.run.build import build_run
from bench.run.claims import claimed
from bench.run.curves import load_network
from bench.run.final import final_evaluation, variant_record
from bench.run.results import (
    CHECKPOINT,
    RESULT,
    SAMPLES,
    evaluated_checkpoint,
    is_complete,
    load_checkpoint,
    read_result,
    write_json,
)


def evaluate_variants(suite, out: Path, dataset_of: Callable, log: Callable[[str], None] = print,
                      *, run_ids: set[str] | None = None, wait: bool = True) -> None:
    """Every pending (trained run, variant) evaluation of `suite` under `out` (of the trained runs
    `run_ids` only, if given), each claimed first as a run is (`bench.run.claims`)."""
    pending = [ev for ev in suite.evaluations if ev.variant is not None
               and (run_ids is None or ev.train.run_id in run_ids)]
    where = {ev.eval_id: f"[eval {i}/{len(pending)}] {ev.eval_id}" for i, ev in enumerate(pending, 1)}

    def to_do(ev) -> bool:
        if is_complete(out / ev.eval_id):
            log(f"{where[ev.eval_id]}: complete, skipped")
            return False
        return True

    for ev, _ in claimed(pending, lambda ev: out / ev.eval_id, to_do, log=log, wait=wait,
                         label=lambda ev: where[ev.eval_id]):
        if is_complete(out / ev.eval_id):
            continue  # finished by another worker between the look and the claim
        log(f"{where[ev.eval_id]}: {ev.label}, seed {ev.train.seed}")
        evaluate(ev.spec, ev.variant, out / ev.train.run_id, out / ev.eval_id, dataset_of(ev.spec))


def evaluate(spec, variant: str, train_dir: Path, eval_dir: Path, dataset, hooks=()) -> dict:
    """Evaluate the trained run in `train_dir` under `spec.eval` (a variant named `variant`)."""
    started = time.perf_counter()
    trained = read_result(train_dir)
    if not trained or trained.get("status") != "complete" or not (train_dir / CHECKPOINT).is_file():
        raise BenchError(f"eval: {train_dir}: not a complete trained run with a {CHECKPOINT}; "
                         "train it with `bench run` first")
    record = variant_start(trained, spec, variant, eval_dir)
    ctx = build_run(spec, dataset, resolve_device(spec.train.device), eval_dir, record)
    checkpoint = load_checkpoint(evaluated_checkpoint(train_dir, trained))  # best.pt if early-stopped
    view = ctx.evaluating(load_network(spec, ctx, checkpoint, ema=spec.eval.use_ema))
    try:
        final_evaluation(view, [*quality_hooks(spec), *hooks], variant_record(variant, spec))
    except BaseException as err:  # keep what was measured, say why it stopped, re-raise
        record.update(status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                      error=f"{type(err).__name__}: {err}")
        write_json(eval_dir / RESULT, record)
        raise
    record["timing"] = {**record["timing"], "variant_eval_seconds": time.perf_counter() - started}
    record["status"] = "complete"
    write_json(eval_dir / RESULT, record)
    return record


def variant_start(trained: dict, spec, variant: str, eval_dir: Path) -> dict:
    """The trained run's record as the start of one variant's row (`status: running`)."""
    record = copy.deepcopy(trained)
    for key in ("protocol", "protocol_key", "curves", "role", "error"):
        record.pop(key, None)
    record["metrics"] = {k: v for k, v in record["metrics"].items() if _training_metric(k)}
    record["config"]["eval"] = {k: v for k, v in asdict(spec.eval).items() if k != "variants"}
    record.update(entry=f"{trained['entry']}@{variant}", run_id=eval_dir.name, status="running",
                  trained_run=trained["run_id"], files={"samples": SAMPLES,
                                                        "checkpoint": f"../{trained['run_id']}/{CHECKPOINT}"})
    return record


TRAINING_METRICS = ("params", "gflops", "final_train_loss", "train_img_per_s", "peak_mem_train_mb")


def _training_metric(name: str) -> bool:
    return name in TRAINING_METRICS or name.startswith("val_loss")
