"""`train.early_stop` inside a run: each in-training evaluation folds its metric into the
early-stop state (bench.train.early_stop), the checkpoint of the best one is kept as `best.pt`
(the weights as evaluated: EMA when `eval.use_ema`), and the end-of-run evaluation scores that
checkpoint. The record gets `early_stop`: budget, `best_kimg`, `stopped_at_kimg` (study 003 §3.2,
where folds 2 and 3 stopped at epochs 21 and 33 of 40).
"""
from __future__ import annotations

import math
import shutil

from bench.metrics import registry
from bench.run.context import RunContext
from bench.run.curves import load_network
from bench.run.results import BEST, CHECKPOINT, load_checkpoint, write_with
from bench.train import early_stop
from bench.train.optim import Budget


def observe(spec, state: dict, point: dict) -> bool:
    """Fold this evaluation into `state["early_stop"]`; True when it is the new best."""
    cfg = spec.train.early_stop
    if cfg is None:
        return False
    state["early_stop"] = state.get("early_stop") or early_stop.new_state()
    value = point.get(cfg.metric)
    value = float(value) if isinstance(value, (int, float)) else math.nan
    return early_stop.update(state["early_stop"], value, state["step"], point["kimg"],
                             cfg.patience, cfg.min_delta, registry.direction(cfg.metric))


def keep_best(ctx: RunContext) -> None:
    """Copy this evaluation's checkpoint.pt to best.pt (call after checkpoint.pt is written)."""
    write_with(ctx.run_dir / BEST, lambda p: shutil.copyfile(ctx.run_dir / CHECKPOINT, p))


def best_point(spec, state: dict, ctx: RunContext):
    """(network, history point) the final evaluation uses: the best evaluation's when early
    stopping is on (its weights from best.pt), else None. Records the summary in ctx.record."""
    es = state.get("early_stop")
    if spec.train.early_stop is None or not es or es.get("best_step") is None:
        return None
    images = Budget(spec.budget, spec.train.batch_size).total_images()   # None: a seconds budget
    budget = images / 1000 if images is not None else None
    ctx.record["early_stop"] = {"metric": spec.train.early_stop.metric,
                                **early_stop.summary(es, budget, state["images"] / 1000)}
    ctx.record["metrics"].update(budget_kimg=budget, stopped_at_kimg=state["images"] / 1000,
                                 best_kimg=es["best_kimg"])  # the leaderboard's cost table
    point = next(p for p in state["history"] if p.get("step") == es["best_step"] and "val_loss" in p)
    net = load_network(spec, ctx, load_checkpoint(ctx.run_dir / BEST), ema=spec.eval.use_ema)
    return net, point
