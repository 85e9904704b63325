"""Early stopping on an in-training metric (`train.early_stop: {metric, patience, min_delta}`).

As Keras' `EarlyStopping` / Lightning's `EarlyStopping` (study 003 §3.2: stop when the validation
loss has not improved for 5 consecutive epochs): an evaluation improves when its value beats the
best so far by more than `min_delta` (below it when the metric is minimized, above when maximized);
after `patience` evaluations in a row without improvement the run stops. The budget stays the
maximum; the state is plain numbers so it lives in the checkpoint and a resumed run continues the
count where it was.
"""
from __future__ import annotations

import math


def new_state() -> dict:
    """The early-stop record before the first evaluation."""
    return {"best": None, "best_step": None, "best_kimg": None, "bad_evals": 0,
            "stopped_at_step": None, "stopped_at_kimg": None}


def update(state: dict, value: float, step: int, kimg: float, patience: int, min_delta: float,
           direction: str = "minimize") -> bool:
    """Fold one evaluation into `state` (in place); True when this evaluation is the new best.

    Sets `stopped_at_step` / `stopped_at_kimg` when `patience` evaluations in a row did not improve.
    A non-finite value never improves.
    """
    sign = 1.0 if direction == "minimize" else -1.0
    best = state["best"]
    improved = math.isfinite(value) and (best is None or sign * (best - value) > min_delta)
    if improved:
        state.update(best=float(value), best_step=step, best_kimg=kimg, bad_evals=0)
    else:
        state["bad_evals"] += 1
        if state["bad_evals"] >= patience:
            state.update(stopped_at_step=step, stopped_at_kimg=kimg)
    return improved


def stopped(state: dict | None) -> bool:
    return bool(state) and state.get("stopped_at_step") is not None


def summary(state: dict, budget_kimg: float | None, final_kimg: float) -> dict:
    """What result.json records: the metric's best and where, where it stopped (None = ran out the
    budget) and the budget it was allowed."""
    return {"best": state["best"], "best_step": state["best_step"], "best_kimg": state["best_kimg"],
            "stopped_at_kimg": state["stopped_at_kimg"], "stopped_at_step": state["stopped_at_step"],
            "budget_kimg": budget_kimg, "trained_kimg": final_kimg}
