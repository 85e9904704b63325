"""The training loop: one readable function (nanoGPT's `train.py` spirit), budgeted as EDM / AlgoPerf.

Only synchronized training-step time counts against a `seconds` budget; evaluation (`on_eval`,
called every `eval.every_kimg` and at the end) never does. Mixed precision is bf16 autocast on CUDA
(fp16 with a GradScaler when asked); CPU runs in fp32. The state (model, EMA, optimizer, generators,
counters, history) is one dict so a run can be checkpointed and resumed bit-for-bit.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
from tqdm import tqdm

from bench.device import amp_in_effect, autocast, compiled
from bench.task import UNCONDITIONAL, Task
from bench.train.optim import Budget, lr_at, make_ema, make_optimizer, update_ema


def train(model, diffusion, batches, cfg, budget_cfg, *, generator: torch.Generator,
          every_kimg: float | None = None, on_eval: Callable | None = None,
          resume: dict | None = None, progress: bool = True,
          task: Task = UNCONDITIONAL) -> dict:
    """Train `model` until the budget is spent.

    Returns the state: counters (step, images, train_seconds), per-step `losses`, `history` and
    references to model, ema (AveragedModel: `.module` is the EMA network), optimizer, generator,
    batches. `on_eval(state)` sees the same dict and sets `state["last_eval_step"]`.
    """
    device = next(model.parameters()).device
    opt, ema = make_optimizer(model, cfg), make_ema(model, cfg.ema_decay, cfg.ema_warmup,
                                                        cfg.ema_impl)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda" and cfg.amp == "fp16")
    budget, state = Budget(budget_cfg, cfg.batch_size), _new_state()
    if resume is not None:
        state = _load_state(resume, model, ema, opt, generator, batches)
    state.update(model=model, ema=ema, optimizer=opt, generator=generator, batches=batches)
    step_fn = compiled(model, cfg.compile)
    next_eval = _next_eval(state["images"], every_kimg)
    bar = tqdm(total=budget.total_images(), initial=state["images"], unit="img",
               disable=not progress, dynamic_ncols=True, leave=False)
    while (n := budget.next_batch(state["images"], state["step"], state["train_seconds"])) > 0:
        started = time.perf_counter()
        lr = lr_at(cfg, state["images"] / 1000,
                   budget.progress(state["images"], state["step"], state["train_seconds"]))
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = next(batches)[:n]
        with autocast(device, amp_in_effect(device, cfg)):
            loss = diffusion.loss(task.denoiser(step_fn, x0), x0, generator=generator)[0].mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        update_ema(ema, model, state["step"], cfg.ema_start_step)
        loss_value = loss.item()  # synchronizes the device: the step is done when timed
        if not math.isfinite(loss_value):  # stop at once: nothing after a diverged step is kept
            bar.close()
            raise Diverged(state["step"] + 1, loss_value)
        state["train_seconds"] += time.perf_counter() - started
        state["step"] += 1
        state["images"] += n
        _log(state, cfg, loss_value, lr, bar, n)
        if next_eval is not None and state["images"] >= next_eval and on_eval:
            on_eval(state)
            next_eval = _next_eval(state["images"], every_kimg)
    bar.close()
    if on_eval and state.get("last_eval_step") != state["step"]:
        on_eval(state)
    return state


class Diverged(Exception):
    """The training loss went non-finite at `step` (1-based): the run stops and is `failed`."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite training loss ({loss}) at step {step}")
        self.step, self.loss = step, loss


def _new_state() -> dict:
    return {"step": 0, "images": 0, "train_seconds": 0.0, "losses": [], "history": [],
            "last_eval_step": None}


def _next_eval(images: int, every_kimg: float | None) -> int | None:
    if not every_kimg:
        return None
    period = round(every_kimg * 1000)
    return (images // period + 1) * period


def _log(state: dict, cfg, loss: float, lr: float, bar, n: int) -> None:
    """Record the step's loss; a history point every `log_every` steps; update the bar."""
    state["losses"].append(loss)
    if state["step"] % cfg.log_every == 0:
        recent = state["losses"][-cfg.log_every:]
        state["history"].append({"step": state["step"], "kimg": state["images"] / 1000,
                                 "train_loss": sum(recent) / len(recent), "lr": lr})
    rate = state["images"] / max(state["train_seconds"], 1e-9)
    bar.update(n)
    bar.set_postfix(kimg=f"{state['images'] / 1000:.2f}", loss=f"{loss:.4f}", img_s=f"{rate:.0f}")


_COUNTERS = ("step", "images", "train_seconds", "losses", "history", "last_eval_step")


def checkpoint_state(state: dict) -> dict:
    """Everything needed to resume: weights, optimizer, generator states, counters, history."""
    return {**copy.deepcopy({k: state[k] for k in _COUNTERS}), "model": state["model"].state_dict(),
            "ema": state["ema"].state_dict(), "optimizer": state["optimizer"].state_dict(),
            "generator": state["generator"].get_state(), "batches": state["batches"].state_dict()}


def _load_state(ckpt: dict, model, ema, opt, generator, batches) -> dict:
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    opt.load_state_dict(ckpt["optimizer"])
    generator.set_state(ckpt["generator"])
    batches.load_state_dict(ckpt["batches"])
    return {k: ckpt.get(k) for k in _COUNTERS}
