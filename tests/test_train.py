"""Training loop: exact budgets, eval not timed, determinism per seed, LR schedules, EMA, resume."""
from __future__ import annotations

import io
import math
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from train_parts import BATCH_SIZE, parts

from bench.config.schema import BudgetConfig, TrainConfig
from bench.train.loop import checkpoint_state, train
from bench.train.optim import Budget, ema_decay, lr_at, make_ema, sgdr_phase, update_ema

CFG = TrainConfig(batch_size=BATCH_SIZE, lr=1e-3, ema_decay=0.9, device="cpu", log_every=1)


def run(budget: BudgetConfig, seed: int = 0, cfg: TrainConfig = CFG, **kw) -> dict:
    model, diffusion, batches, gen = parts(seed)
    return train(model, diffusion, batches, cfg, budget, generator=gen, progress=False, **kw)


def test_kimg_budget_stops_at_exactly_the_requested_images():
    state = run(BudgetConfig(kimg=0.05))  # 50 images at batch 8: 6 full steps and one of 2
    assert state["images"] == 50 and state["step"] == 7


def test_steps_budget_stops_at_exactly_the_requested_steps():
    state = run(BudgetConfig(steps=5))
    assert state["step"] == 5 and state["images"] == 40


def test_seconds_budget_counts_training_time_only():
    slept = []

    def slow_eval(state):
        time.sleep(0.2)  # evaluation must not count against the budget
        slept.append(state["step"])
        state["last_eval_step"] = state["step"]

    started = time.perf_counter()
    state = run(BudgetConfig(seconds=0.3), every_kimg=0.008, on_eval=slow_eval)
    wall = time.perf_counter() - started
    assert state["train_seconds"] >= 0.3
    assert state["train_seconds"] < 0.3 + 5 * (state["train_seconds"] / state["step"]) + 0.5
    assert wall >= state["train_seconds"] + 0.2 * (len(slept) - 1)


def test_same_seed_same_loss_curve_and_different_seed_differs():
    a, b, c = (run(BudgetConfig(steps=4), seed=s)["losses"] for s in (0, 0, 1))
    assert a == b
    assert a != c


def test_eval_hook_runs_every_period_and_at_the_end():
    seen = []

    def hook(state):
        seen.append(state["images"])
        state["last_eval_step"] = state["step"]

    run(BudgetConfig(kimg=0.05), every_kimg=0.016, on_eval=hook)
    assert seen == [16, 32, 48, 50]


def test_resume_from_checkpoint_continues_bit_for_bit():
    full = run(BudgetConfig(steps=6))["losses"]
    saved = {}

    def snapshot(state):
        state["last_eval_step"] = state["step"]
        if state["step"] == 3:  # serialized as the runner does (state_dict tensors are live views)
            torch.save(checkpoint_state(state), saved.setdefault("buffer", io.BytesIO()))

    run(BudgetConfig(steps=6), every_kimg=0.024, on_eval=snapshot)
    saved["buffer"].seek(0)
    resumed = run(BudgetConfig(steps=6), resume=torch.load(saved["buffer"], weights_only=False))
    assert resumed["losses"] == full


def test_lr_warmup_cosine_and_restarts():
    cfg = replace(CFG, lr=1.0, warmup_kimg=1.0, lr_schedule="cosine", lr_min=0.1)
    assert lr_at(cfg, 0.5, 0.05) == pytest.approx(0.5)
    assert lr_at(cfg, 2.0, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 2.0, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 2.0, 1.0) == pytest.approx(0.1)
    assert lr_at(replace(cfg, lr_schedule="constant"), 5.0, 0.7) == 1.0
    sgdr = replace(cfg, lr_schedule="cosine_restarts", warmup_kimg=0.0, cycle_kimg=2.0, cycle_mult=2.0)
    assert sgdr_phase(sgdr, 1.0) == pytest.approx(0.5)
    assert sgdr_phase(sgdr, 2.0) == 0.0          # restart after the first cycle of 2 kimg
    assert sgdr_phase(sgdr, 4.0) == pytest.approx(0.5)   # second cycle lasts 4 kimg
    assert lr_at(sgdr, 2.0, 0.3) == pytest.approx(1.0)
    assert lr_at(sgdr, 1.0, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_sgdr_matches_pytorch_cosine_annealing_warm_restarts(mult):
    """lr_at(cosine_restarts) == torch's CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) at the same
    (fractional) epoch, kimg standing for epochs; includes points far beyond many restarts."""
    cfg = replace(CFG, lr=1.0, lr_min=0.1, lr_schedule="cosine_restarts", cycle_kimg=2.0,
                  cycle_mult=float(mult))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=mult, eta_min=0.1)
    for kimg in (0.0, 0.7, 1.5, 2.2, 4.5, 7.9, 40.3, 1234.5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # step(epoch) is deprecated, still the reference's API
            ref.step(kimg)
        assert lr_at(cfg, kimg, 0.0) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), kimg


def test_sgdr_is_bounded_by_construction():
    """The inputs that used to loop forever (a zero cycle, a shrinking cycle, 10^15 cycles) return
    at once from a closed form or are refused; run in a subprocess so a regression fails, not hangs."""
    code = ("from dataclasses import replace; from bench.config.schema import TrainConfig; "
            "from bench.train.optim import sgdr_phase\n"
            "cfg = TrainConfig(lr_schedule='cosine_restarts', cycle_kimg=0.001, cycle_mult=1.0)\n"
            "print(sgdr_phase(cfg, 1e12), sgdr_phase(replace(cfg, cycle_mult=1.0000001), 1e12))\n"
            "for bad in ({'cycle_kimg': 0.0}, {'cycle_mult': 0.0}, {'cycle_mult': 0.5}):\n"
            "    try: sgdr_phase(replace(cfg, **bad), 300.0)\n"
            "    except ValueError as e: print('refused', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    first, *refused = proc.stdout.strip().splitlines()
    assert all(0.0 <= float(v) < 1.0 for v in first.split())
    assert len(refused) == 3 and all(line.startswith("refused SGDR needs") for line in refused)


def test_budget_next_batch_trims_the_last_batch():
    budget = Budget(BudgetConfig(kimg=0.01), batch_size=4)
    assert [budget.next_batch(i, 0, 0.0) for i in (0, 4, 8, 10)] == [4, 4, 2, 0]
    assert Budget(BudgetConfig(steps=3), 4).total_images() == 12


def test_ema_warmup_decay_and_start_step():
    assert ema_decay(0.999, 0, True) == pytest.approx(0.1)
    assert ema_decay(0.999, 10_000, True) == 0.999
    assert ema_decay(0.999, 0, False) == 0.999
    model = torch.nn.Linear(2, 1)
    ema = make_ema(model, 0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    update_ema(ema, model, step=0, start_step=2)       # before the start: copies
    assert torch.equal(ema.module.weight, model.weight)
    update_ema(ema, model, step=5, start_step=2)
    with torch.no_grad():
        model.weight.fill_(3.0)
    update_ema(ema, model, step=6, start_step=2)       # 0.5 * 1 + 0.5 * 3
    assert torch.allclose(ema.module.weight, torch.full_like(model.weight, 2.0))


def test_training_reduces_the_loss_on_a_fixed_batch():
    model, diffusion, batches, gen = parts(0, n_images=8)
    state = train(model, diffusion, batches, replace(CFG, lr=3e-3), BudgetConfig(steps=60),
                  generator=gen, progress=False)
    first, last = sum(state["losses"][:10]) / 10, sum(state["losses"][-10:]) / 10
    assert last < 0.8 * first
