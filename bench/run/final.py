"""What a run writes when its network is evaluated: the fixed-noise grid (at the end `samples.png`;
at every in-training evaluation `samples/kimg-000500.png`, and with `eval.keep_checkpoints: every`
the checkpoint beside it), the task metrics, the sampling cost, the one-step x̂0 panel (study 000,
Fig. 9), the hooks' metrics, and the evaluation protocol (which images, SSIM variant, eval variant,
metric library versions) merged into `record["protocol"]`.

Used by `bench.run.runner` (a run's own evaluation) and `bench.run.evaluations` (an `eval.variants`
item evaluated from a trained run's checkpoint), so both write the very same files and fields.
"""
from __future__ import annotations

import json
import shutil

import torch
from torchvision.utils import save_image

from bench.metrics.fid import library_versions
from bench.metrics.sampling import grid_noise, sample, sampling_cost
from bench.metrics.snapshots import (
    CHECKPOINTS_DIR,
    SAMPLES_DIR,
    X0_PANEL,
    panel_t,
    snapshot_name,
    x0_panel,
)
from bench.run.context import RunContext
from bench.run.results import CHECKPOINT, SAMPLES, write_json, write_with
from bench.samplers import resolve_steps

PANEL_IMAGES = 4   # held-out images in the x̂0 panel


def sample_grid(view: RunContext) -> tuple[torch.Tensor, dict]:
    """The fixed-noise grid (eval.grid images, eval.grid_seed noise) as scored, and task metrics."""
    cfg, n = view.spec.eval, view.spec.eval.grid
    noise = grid_noise(n, view.shape, cfg.grid_seed, view.device)
    grid = sample(view.net_for_sampling(n), view.diffusion, cfg, n, view.shape, noise=noise,
                  seed=cfg.grid_seed, amp=view.amp, device=view.device)
    return view.task.finish(grid)


def save_grid(grid: torch.Tensor, path) -> None:
    write_with(path, lambda p: save_image((grid + 1) / 2, p, nrow=max(1, int(len(grid) ** 0.5)),
                                          format="png"))


def snapshot(view: RunContext, state: dict) -> None:
    """At an in-training evaluation: keep its grid, and its checkpoint when eval.keep_checkpoints
    is `every` (or true). Call after the run's checkpoint.pt of this evaluation is written."""
    name = snapshot_name(state["images"])
    save_grid(sample_grid(view)[0], view.run_dir / SAMPLES_DIR / name)
    if view.spec.eval.keep_checkpoints in (True, "every"):
        target = view.run_dir / CHECKPOINTS_DIR / snapshot_name(state["images"], "pt")
        write_with(target, lambda p: shutil.copyfile(view.run_dir / CHECKPOINT, p))


def final_evaluation(view: RunContext, hooks, variant: dict | None = None) -> None:
    """The end-of-run metrics and files of `view.net` under `view.spec.eval` into `view.record`."""
    record, cfg = view.record, view.spec.eval
    grid, task_metrics = sample_grid(view)
    record["metrics"].update(task_metrics)
    save_grid(grid, view.run_dir / SAMPLES)
    record["metrics"].update(sampling_cost(view.net_for_sampling(cfg.sample_batch), view.diffusion,
                                           cfg, view.shape, amp=view.amp, device=view.device))
    write_panel(view)
    for hook in hooks:
        record["metrics"].update(hook("final", view) or {})
    record["protocol"] = {**record.get("protocol", {}), **eval_protocol(view, variant)}


def write_panel(view: RunContext) -> None:
    """`x0_panel.png` (rows: held-out images; columns: x0, then x_t | x̂0 per t) and its t list."""
    images = view.scored.images[:PANEL_IMAGES]
    if not len(images):
        return
    ts = panel_t(view.diffusion.T)
    net = view.task.denoiser(view.net, view.heldout(len(images)))
    panel = x0_panel(net, view.diffusion, images, ts, seed=view.spec.eval.grid_seed, device=view.device)
    write_with(view.run_dir / X0_PANEL,
               lambda p: save_image(panel, p, nrow=1 + 2 * len(ts), format="png"))
    write_json(view.run_dir / X0_PANEL.replace(".png", ".json"), {"t": ts, "images": len(images)})


def eval_protocol(view: RunContext, variant: dict | None) -> dict:
    """Which images each held-out metric scored, the SSIM variant, the eval variant, the libraries."""
    cfg = view.spec.eval
    images = {"val_loss": view.val_scored.protocol(cfg.val_images)}
    if {"recon", "roundtrip"} & set(cfg.metrics):
        images["recon"] = view.scored.protocol(cfg.recon_images)
    if view.task.cond_channels:
        images["conditioning"] = view.scored.protocol(cfg.grid)
    return {"ssim": cfg.ssim, "images": images, "variant": variant, "libraries": library_versions()}


def variant_record(name: str, spec) -> dict:
    """The variant an evaluation ran under: its name and the sampling it resolved to."""
    cfg = spec.eval
    return {"name": name, "sampler": cfg.sampler,
            "steps": resolve_steps(cfg.sampler, cfg.steps, spec.diffusion.timesteps),
            "sampler_opts": json.loads(json.dumps(cfg.sampler_opts)), "use_ema": cfg.use_ema}
