"""The training loop: one readable function (nanoGPT's `train.py` spirit), budgeted as EDM / AlgoPerf.

Only training-step time counts against a `seconds` budget; evaluation (`on_eval`, called every
`eval.every_kimg` and at the end) never does. No step reads the device: losses stay there until a
log point (every `log_every` steps), an evaluation or the end, and time is measured over segments
of steps by `bench.train.clock.StepClock` (CUDA events), which also checks a `seconds` budget
without a per-step sync (at most one step over; the cosine LR of a seconds budget follows the
clock's host-side estimate between checks). Under torchrun the step is data-parallel
(`bench.train.parallel`: DDP, the global batch split over the ranks and micro-batches), the clock's
measurements and the logged losses are reduced over the ranks at each sync point, so every rank
takes the same decisions and stops at the same step. A non-finite loss is found at the next sync point
(at most `log_every` steps later) and stops the run with `Diverged` naming the step it happened at. Mixed precision is bf16 autocast on CUDA
(fp16 with a GradScaler when asked); CPU runs in fp32 (bf16 CPU autocast with `train.cpu_amp`). The state (model, EMA, optimizer, generators,
counters, history) is one dict so a run can be checkpointed and resumed bit-for-bit.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from tqdm import tqdm

from bench import dist
from bench.device import amp_in_effect, autocast, compiled
from bench.errors import warn
from bench.task import UNCONDITIONAL, Task
from bench.train.clock import StepClock
from bench.train.early_stop import stopped
from bench.train.optim import Budget, lr_at, make_ema, make_optimizer, update_ema
from bench.train.parallel import Split, sync_at, wrap


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
    split, net = Split.current(getattr(cfg, "micro_batch", None)), wrap(model)
    step_fn, amp = compiled(net, cfg.compile), amp_in_effect(device, cfg)
    clock, pending = StepClock(device, state["train_seconds"]), []  # losses still on the device
    next_eval = _next_eval(state["images"], every_kimg)
    bar = tqdm(total=budget.total_images(), initial=state["images"], unit="img",
               disable=not progress, dynamic_ncols=True, leave=False)
    while not stopped(state["early_stop"]) and (
            n := budget.next_batch(state["images"], state["step"], clock.done)) > 0:
        lr = lr_at(cfg, state["images"] / 1000,
                   budget.progress(state["images"], state["step"], clock.estimate()))
        chunks = split.chunks(next(batches)[:max(split.share(n), 1)], n)
        pending.append(_step(step_fn, net, model, diffusion, chunks, lr, opt, ema, scaler, cfg,
                             amp, generator, task, state["step"], split.world))
        clock.step()
        state["step"] += 1
        state["images"] += n
        if budget.unit == "seconds":
            clock.check_seconds(budget.amount)
        if state["step"] % cfg.log_every == 0:
            _flush(state, pending, clock, cfg, lr, bar)
        if next_eval is not None and state["images"] >= next_eval and on_eval:
            _evaluate(state, pending, clock, cfg, bar, on_eval)
            next_eval = _next_eval(state["images"], every_kimg)
    _flush(state, pending, clock, cfg, None, bar)
    bar.close()
    if on_eval and state.get("last_eval_step") != state["step"]:
        on_eval(state)
    return state


def _step(step_fn, net, model, diffusion, chunks, lr, opt, ema, scaler, cfg, amp, generator,
          task, step, world):
    """One optimizer step over this rank's (chunk, weight) list (bench.train.parallel) and the EMA
    update; returns this rank's part of the step's mean loss, left on the device (no sync)."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    parts = []
    for i, (x0, weight) in enumerate(chunks):
        with sync_at(net, i == len(chunks) - 1):
            with autocast(x0.device, amp):
                loss = diffusion.loss(task.denoiser(step_fn, x0), x0, generator=generator,
                                      mask=task.loss_mask(x0))[0].mean()
            scaler.scale(loss if weight == 1 else loss * weight).backward()
        parts.append(loss.detach() if weight == world else loss.detach() * (weight / world))
    if cfg.grad_clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    update_ema(ema, model, step, cfg.ema_start_step)
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum()


def _evaluate(state, pending, clock, cfg, bar, on_eval) -> None:
    """Flush and stop the clock, evaluate (not timed), restart the clock."""
    _flush(state, pending, clock, cfg, None, bar)
    on_eval(state)
    clock.resume()


class Diverged(Exception):
    """The training loss went non-finite at `step` (1-based): the run stops and is `failed`."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite training loss ({loss}) at step {step}")
        self.step, self.loss = step, loss


def _new_state() -> dict:
    return {"step": 0, "images": 0, "train_seconds": 0.0, "losses": [], "history": [],
            "last_eval_step": None, "early_stop": None}


def _next_eval(images: int, every_kimg: float | None) -> int | None:
    if not every_kimg:
        return None
    period = round(every_kimg * 1000)
    return (images // period + 1) * period


def _flush(state: dict, pending: list, clock: StepClock, cfg, lr: float | None, bar) -> None:
    """Sync point: read the pending device losses at once, measure the clock; with `lr` (a log
    step, a multiple of `log_every`) add a history point, the mean of its last `log_every` losses."""
    if pending:
        values = dist.all_sum(torch.stack(pending).float()).tolist()  # the global mean losses
        pending.clear()
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:  # found at this sync point: the run stops, nothing after it is kept
            bar.close()
            raise Diverged(state["step"] - len(values) + bad + 1, values[bad])
        state["losses"].extend(values)
    state["train_seconds"] = clock.measure()
    if lr is not None:
        recent = state["losses"][-cfg.log_every:]
        state["history"].append({"step": state["step"], "kimg": state["images"] / 1000,
                                 "train_loss": sum(recent) / len(recent), "lr": lr})
    rate = state["images"] / max(state["train_seconds"], 1e-9)
    bar.update(state["images"] - bar.n)
    if state["losses"]:
        bar.set_postfix(kimg=f"{state['images'] / 1000:.2f}", loss=f"{state['losses'][-1]:.4f}",
                        img_s=f"{rate:.0f}")


_COUNTERS = ("step", "images", "train_seconds", "losses", "history", "last_eval_step", "early_stop")


def checkpoint_state(state: dict) -> dict:
    """Everything needed to resume: weights, optimizer, generator states, counters, history. Under
    torchrun (a collective: every rank calls it) also every rank's data and noise streams, `ranks`
    (tensors, in rank order), so each rank resumes its own."""
    streams = {"generator": state["generator"].get_state(), "batches": state["batches"].state_dict()}
    ckpt = {**copy.deepcopy({k: state[k] for k in _COUNTERS}), "model": state["model"].state_dict(),
            "ema": state["ema"].state_dict(), "optimizer": state["optimizer"].state_dict(), **streams}
    if dist.active():
        ckpt.update(ranks=dist.all_gather(streams), world_size=dist.world())
    return ckpt


def _load_state(ckpt: dict, model, ema, opt, generator, batches) -> dict:
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    opt.load_state_dict(ckpt["optimizer"])
    ranks = ckpt.get("ranks") or [{"generator": ckpt["generator"], "batches": ckpt["batches"]}]
    if len(ranks) == dist.world():
        generator.set_state(ranks[dist.rank()]["generator"])
        batches.load_state_dict(ranks[dist.rank()]["batches"])
    else:  # another world size: this rank's streams restart, seeded by (its seed, images seen)
        if dist.is_main():
            warn(f"resuming a {len(ranks)}-rank checkpoint on {dist.world()} ranks: the data "
                 f"order and noise streams restart (seeded by seed, rank and images seen)")
        generator.manual_seed(generator.initial_seed() + int(ckpt["images"]))
        batches.generator.manual_seed(batches.generator.initial_seed() + int(ckpt["images"]))
    return {k: ckpt.get(k) for k in _COUNTERS}
