"""The sync-free training loop: the same numbers as a per-step `loss.item()` loop, exact image and
step budgets, a `seconds` budget overshot by at most one step, and the clock's check schedule."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch
from train_parts import parts

from bench.config.schema import BudgetConfig, TrainConfig
from bench.train import clock as clock_module
from bench.train.clock import StepClock
from bench.train.loop import train
from bench.train.optim import Budget, lr_at, make_ema, make_optimizer, update_ema

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = TrainConfig(batch_size=8, lr=1e-3, ema_decay=0.9, device="cpu", log_every=3,
                  warmup_kimg=0.016, lr_schedule="cosine", grad_clip=0.5)


def reference_loop(budget_images: int, cfg: TrainConfig = CFG):
    """The loop before issue 13, step by step: `loss.item()` after every step, the stock
    AveragedModel EMA, a history point every `log_every` steps."""
    model, diffusion, batches, gen = parts(0)
    opt, ema = make_optimizer(model, cfg), make_ema(model, cfg.ema_decay, cfg.ema_warmup, "averaged_model")
    losses, history, images, step = [], [], 0, 0
    budget = Budget(BudgetConfig(kimg=budget_images / 1000), cfg.batch_size)
    while (n := budget.next_batch(images, step, 0.0)) > 0:
        lr = lr_at(cfg, images / 1000, budget.progress(images, step, 0.0))
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = next(batches)[:n]
        loss = diffusion.loss(model, x0, generator=gen)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        update_ema(ema, model, step, cfg.ema_start_step)
        losses.append(loss.item())
        step, images = step + 1, images + n
        if step % cfg.log_every == 0:
            recent = losses[-cfg.log_every:]
            history.append({"step": step, "kimg": images / 1000,
                            "train_loss": sum(recent) / len(recent), "lr": lr})
    return losses, history, model, ema


def test_losses_history_and_weights_equal_the_per_step_sync_loop():
    losses, history, model, ema = reference_loop(60)  # 7 full steps and one of 4
    model2, diffusion, batches, gen = parts(0)
    state = train(model2, diffusion, batches, CFG, BudgetConfig(kimg=0.06), generator=gen,
                  progress=False)
    assert state["losses"] == losses and state["history"] == history
    assert state["step"] == 8 and state["images"] == 60
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.state_dict().values(), state["ema"].state_dict().values()):
        assert torch.equal(a, b)


def test_eval_points_see_every_loss_so_far_and_exact_counters():
    seen = []

    def hook(state):
        seen.append((state["step"], state["images"], len(state["losses"]), state["train_seconds"] > 0))
        state["last_eval_step"] = state["step"]

    model, diffusion, batches, gen = parts(0)
    train(model, diffusion, batches, replace(CFG, log_every=5), BudgetConfig(steps=7), generator=gen,
          progress=False, every_kimg=0.016, on_eval=hook)
    assert seen == [(2, 16, 2, True), (4, 32, 4, True), (6, 48, 6, True), (7, 56, 7, True)]


class Slow(torch.nn.Module):
    """A denoiser whose steps take at least 20 ms; records when each forward starts."""

    def __init__(self, model):
        super().__init__()
        self.model, self.starts = model, []

    def forward(self, x, t):
        self.starts.append(time.perf_counter())
        time.sleep(0.02)
        return self.model(x, t)


def test_seconds_budget_is_overshot_by_at_most_one_step():
    model, diffusion, batches, gen = parts(0)
    slow = Slow(model)
    state = train(slow, diffusion, batches, replace(CFG, log_every=1000), BudgetConfig(seconds=0.5),
                  generator=gen, progress=False)
    step_times = [b - a for a, b in zip(slow.starts, slow.starts[1:])]
    assert state["train_seconds"] >= 0.5
    assert state["train_seconds"] - 0.5 <= max(step_times)
    assert state["step"] == len(slow.starts) and state["images"] == 8 * state["step"]


def test_clock_checks_a_seconds_budget_logarithmically_and_lands_on_it(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now[0])
    clock, checks, steps = StepClock(torch.device("cpu")), [], 0
    while clock.done < 100:
        now[0] += 1.0  # every step takes one second
        clock.step()
        steps += 1
        before = clock.done
        if clock.check_seconds(100) != before:
            checks.append(steps)
    assert steps == 100 and clock.done == 100  # no overshoot at a steady step time
    assert checks[:4] == [1, 50, 75, 87] and len(checks) <= 12  # remaining time halves per check


def test_clock_estimate_and_pause_exclude_untimed_work(monkeypatch):
    now = [10.0]
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now[0])
    clock = StepClock(torch.device("cpu"), done=5.0)
    now[0] += 2.0
    clock.step()
    clock.step()
    assert clock.estimate() == 5.0  # no step time measured yet
    assert clock.pause() == 7.0 and clock.tau == 1.0
    now[0] += 30.0  # evaluation: not counted
    clock.resume()
    now[0] += 1.0
    clock.step()
    assert clock.estimate() == 8.0 and clock.measure() == 8.0
