"""`bench run`: every (entry, seed) of a suite -> a run folder with result.json, samples.png and a
checkpoint (`bench.cli` writes the report after it).

A run folder is named by its id (a hash of the resolved config), so re-running a suite skips what
is complete and resumes what is not from its last evaluation checkpoint (EDM's resume-from-snapshot,
with the data order and noise generators restored too). Results are written atomically; a run still
in progress (or pruned by Optuna) has `status: running|pruned` and its partial history.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torchvision.utils import save_image

from architectures import create
from bench.data import DeviceBatches, load_dataset
from bench.device import precision_flags, resolve_device
from bench.diffusion import Diffusion
from bench.errors import BenchError
from bench.metrics.cost import model_cost
from bench.metrics.quality import quality_hooks
from bench.metrics.sampling import grid_noise, sample, sampling_cost
from bench.run.evaluate import validation_loss, validation_triples
from bench.run.results import (
    CHECKPOINT,
    RESULT,
    SAMPLES,
    environment,
    is_complete,
    read_result,
    write_json,
    write_with,
)
from bench.task import composite, cond_channels, conditioned, inpaint_psnr
from bench.train.loop import checkpoint_state, train

Hook = Callable[[str, dict], dict]  # hook(phase "train" | "final", context) -> metrics


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


def build_run(spec, dataset, device: torch.device) -> dict:
    """Model, diffusion, batches and generators of a run, all seeded from the run's seed."""
    torch.manual_seed(spec.seed)  # weight init
    cond = cond_channels(spec.task, spec.data.channels)
    model = create(spec.entry.arch, in_channels=spec.data.channels, out_channels=spec.data.channels,
                   image_size=spec.data.image_size, cond_channels=cond or None,
                   **spec.entry.kwargs).to(device)
    if spec.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    data_gen = torch.Generator(device).manual_seed(spec.seed)
    noise_gen = torch.Generator(device).manual_seed(spec.seed + 1_000_003)
    batches = DeviceBatches(dataset.train.to(device), spec.train.batch_size, data_gen,
                            flip=spec.data.flip)
    diffusion = Diffusion(spec.diffusion.schedule, spec.diffusion.timesteps,
                          spec.diffusion.target, spec.diffusion.min_snr_gamma)
    triples = validation_triples(dataset.heldout, spec.eval.val_images, spec.eval.val_t_per_image,
                                 diffusion.T, device)
    return {"model": model, "diffusion": diffusion, "batches": batches, "noise_gen": noise_gen,
            "triples": triples}


def run_one(spec, run_dir: str | Path, dataset, *, hooks: list[Hook] = (), progress: bool = True) -> dict:
    """Train and evaluate one run; writes result.json, samples.png and checkpoint.pt atomically."""
    run_dir, wall_start = Path(run_dir), time.perf_counter()
    device = resolve_device(spec.train.device)
    flags = precision_flags(device, spec.train)
    parts = build_run(spec, dataset, device)
    shape = (spec.data.channels, spec.data.image_size, spec.data.image_size)
    record = _new_record(spec, device, flags, dataset)
    in_channels = spec.data.channels + cond_channels(spec.task, spec.data.channels)
    record["metrics"].update(model_cost(parts["model"], in_channels, spec.data.image_size))
    context = {"spec": spec, "dataset": dataset, "device": device, "amp": flags["amp"],
               "shape": shape, "run_dir": run_dir, "record": record, **parts}
    hooks = [*quality_hooks(spec), *hooks]  # quality first: later hooks (pruning) see fid_proxy
    resume = _resume_state(run_dir, spec)
    _reset_peak(device)
    eval_seconds = [0.0]

    def on_eval(state: dict) -> None:
        started = time.perf_counter()
        record["metrics"]["peak_mem_train_mb"] = _peak_mb(device, record["metrics"])
        net = state["ema"].module if spec.eval.use_ema else state["model"]
        point = {"step": state["step"], "kimg": state["images"] / 1000,
                 **validation_loss(net, parts["diffusion"], parts["triples"],
                                   spec.eval.sample_batch, flags["amp"], _task(spec))}
        state["history"].append(point)  # first: a trial pruned by a hook keeps this evaluation
        view = {**context, "net": net, "net_for_sampling": sampling_nets(context, net),
                "state": state, "point": point}
        for hook in hooks:  # later hooks (Optuna pruning) see earlier hooks' metrics in `point`
            point.update(hook("train", view) or {})
        state["last_eval_step"] = state["step"]
        write_with(run_dir / CHECKPOINT, lambda p: torch.save(checkpoint_state(state), p))
        _fill(record, state, eval_seconds[0] + time.perf_counter() - started, wall_start)
        write_json(run_dir / RESULT, record)
        eval_seconds[0] += time.perf_counter() - started
        _reset_peak(device)

    try:
        state = train(parts["model"], parts["diffusion"], parts["batches"], spec.train, spec.budget,
                      generator=parts["noise_gen"], every_kimg=spec.eval.every_kimg,
                      on_eval=on_eval, resume=resume, progress=progress, task=_task(spec))
        _finish(record, state, context, hooks, wall_start, eval_seconds[0])
    except BaseException as err:  # keep the partial result, say why it stopped, re-raise
        pruned = type(err).__name__ == "TrialPruned"
        record["status"] = "pruned" if pruned else "interrupted" if isinstance(
            err, KeyboardInterrupt) else "failed"
        record["error"] = None if pruned else f"{type(err).__name__}: {err}"
        write_json(run_dir / RESULT, record)
        raise
    return record


def _finish(record: dict, state: dict, context: dict, hooks, wall_start: float, eval_s: float) -> None:
    """Final metrics (sample grid, sampling cost, hooks) and the complete result."""
    spec, device, run_dir = context["spec"], context["device"], context["run_dir"]
    started = time.perf_counter()
    net = state["ema"].module if spec.eval.use_ema else state["model"]
    noise = grid_noise(spec.eval.grid, context["shape"], spec.eval.grid_seed, device)
    given = _heldout(context, spec.eval.grid)
    grid = sample(conditioned(net, spec.task, given), context["diffusion"], spec.eval,
                  spec.eval.grid, context["shape"], noise=noise, seed=spec.eval.grid_seed,
                  amp=context["amp"], device=device)
    if given is not None:
        grid = composite(spec.task, grid, given)
        record["metrics"]["inpaint_psnr"] = inpaint_psnr(spec.task, grid, given)
    write_with(run_dir / SAMPLES, lambda p: save_image((grid + 1) / 2, p, nrow=_nrow(spec.eval.grid),
                                                      format="png"))
    given = _heldout(context, spec.eval.sample_batch)
    record["metrics"].update(sampling_cost(conditioned(net, spec.task, given), context["diffusion"],
                                           spec.eval, context["shape"], amp=context["amp"],
                                           device=device))
    last = next(p for p in reversed(state["history"]) if "val_loss" in p)
    record["metrics"].update({k: v for k, v in last.items() if k.startswith("val_loss")})
    view = {**context, "net": net, "net_for_sampling": sampling_nets(context, net), "state": state}
    for hook in hooks:
        record["metrics"].update(hook("final", view) or {})
    _fill(record, state, eval_s + time.perf_counter() - started, wall_start)
    record["status"] = "complete"
    write_json(run_dir / RESULT, record)


def sampling_nets(context: dict, net):
    """A factory (batch size, offset) -> the denoiser to sample with (conditioned on held-out
    images [offset, offset + batch) for conditional tasks)."""
    def make(n: int, offset: int):
        if _task(context["spec"]) is None:
            return net
        return conditioned(net, context["spec"].task, _heldout(context, n, offset))

    return lambda: make


def _task(spec):
    return None if spec.task.kind == "unconditional" else spec.task


def _heldout(context: dict, n: int, offset: int = 0):
    """Held-out images [offset, offset + n) in [-1, 1] on the device (conditional tasks), else None."""
    if _task(context["spec"]) is None:
        return None
    held = context["dataset"].heldout
    if len(held) < offset + n:
        raise BenchError(f"eval: the task needs {offset + n} held-out images to condition on; the "
                         f"held-out split has {len(held)}")
    return held[offset:offset + n].to(context["device"]).float().div(127.5).sub(1)


def _new_record(spec, device, flags, dataset) -> dict:
    return {"suite": spec.suite, "entry": spec.entry.name, "arch": spec.entry.arch,
            "seed": spec.seed, "run_id": spec.run_id, "status": "running",
            "config": spec.config(), "capacity": spec.capacity, "metrics": {}, "history": [],
            "budget": {}, "timing": {}, "data": dataset.info,
            "environment": environment(device, flags),
            "files": {"samples": SAMPLES, "checkpoint": CHECKPOINT}}


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
