"""Semantic checks of one planned run, done before any work (names, values, the model itself).
The model is built on PyTorch's `meta` device (allocates nothing), so a 100 M-parameter entry is
checked (kwargs accepted, image size divisible by its down-sampling, parameter count) in ms."""
from __future__ import annotations

import functools
import json
import warnings
from dataclasses import replace

import torch

from architectures import UnknownArchitectureError, create
from bench.config.capacity import match_capacity
from bench.config.schema import EDMConfig, build
from bench.data import DATASETS
from bench.diffusion import (
    BETA_END,
    BETA_START,
    ENDPOINT_SCHEDULES,
    SCHEDULES,
    Diffusion,
)
from bench.errors import BenchError, choices_error
from bench.images import hw
from bench.metrics import registry
from bench.metrics.classify import Recipe
from bench.samplers import (
    SAMPLERS,
    check_formulation,
    check_sampler_opts,
    resolve_steps,
)
from bench.task import cond_channels


def check_run(spec, where: str, entry_path: str, check_models: bool = True):
    """Validate a RunSpec; returns it with capacity-matched kwargs and a parameter count."""
    _check_names(spec, where)
    _check_values(spec, where)
    _check_task(spec.task, where)
    _check_eval(spec, where)
    if not check_models:
        return spec
    entry = spec.entry
    kwargs, capacity = dict(entry.kwargs), None
    if entry.match is not None:
        kwargs, capacity = _match(spec, where, entry_path)
        entry = replace(entry, kwargs=kwargs)
    params, factor = model_summary(entry.arch, json.dumps(kwargs, sort_keys=True),
                                   spec.data.channels, spec.data.image_size, where, entry_path,
                                   cond_channels(spec.task, spec.data.channels))
    if any(side % factor for side in hw(spec.data.image_size)):
        raise BenchError(f"{where}: data.image_size: {_size(spec.data.image_size)} is not divisible by "
                         f"{factor}, the down-sampling factor of {entry_path} ({entry.arch})")
    return replace(spec, entry=entry, capacity=capacity, params=params)


def _check_names(spec, where: str) -> None:
    if spec.data.dataset not in DATASETS:
        raise choices_error(f"{where}: data.dataset", "dataset", spec.data.dataset, DATASETS)
    if spec.diffusion.schedule not in SCHEDULES:
        raise choices_error(f"{where}: diffusion.schedule", "schedule", spec.diffusion.schedule,
                            SCHEDULES)
    _check_diffusion(spec.diffusion, where)
    if spec.eval.sampler not in SAMPLERS:
        raise choices_error(f"{where}: eval.sampler", "sampler", spec.eval.sampler, SAMPLERS)
    check_formulation(spec.diffusion.formulation, spec.eval.sampler, f"{where}: eval.sampler")
    check_sampler_opts(spec.eval.sampler, spec.eval.sampler_opts, f"{where}: eval.sampler_opts")
    resolve_steps(spec.eval.sampler, spec.eval.steps, spec.diffusion.timesteps, f"{where}: eval.steps")
    device = spec.train.device
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise choices_error(f"{where}: train.device", "device", device, ["auto", "cpu", "cuda", "cuda:N"])


def _check_diffusion(d, where: str) -> None:
    """The schedule builds: β endpoints only where they mean something, every β in (0, 1)."""
    endpoints = (d.beta_start, d.beta_end) != (BETA_START, BETA_END)
    if endpoints and d.schedule not in ENDPOINT_SCHEDULES:
        raise BenchError(f"{where}: diffusion.beta_start/beta_end: set, but schedule {d.schedule!r} "
                         f"has no β endpoints; they apply to {', '.join(ENDPOINT_SCHEDULES)}")
    try:
        Diffusion.from_config(d)
    except ValueError as err:
        key = f"beta_start/beta_end: {d.beta_start}/{d.beta_end} with timesteps" if endpoints else "timesteps"
        raise BenchError(f"{where}: diffusion.{key}: {d.timesteps} does not work with schedule "
                         f"{d.schedule!r} (β scaled by 1000/T): {err}") from None
    _check_edm(d, where)


def _check_edm(d, where: str) -> None:
    """formulation edm: its own options only there, σ_min < σ_max, no DDPM-only loss keys."""
    if d.formulation != "edm":
        if d.edm is not None:
            raise BenchError(f"{where}: diffusion.edm: set, but diffusion.formulation is "
                             f"{d.formulation}; set formulation: edm or drop the edm options")
        return
    if d.target != "eps" or d.min_snr_gamma is not None:
        key = "target" if d.target != "eps" else "min_snr_gamma"
        raise BenchError(f"{where}: diffusion.{key}: does not apply to formulation edm (the network "
                         f"output is preconditioned, D = c_skip x + c_out F; loss weight λ(σ)); drop it")
    edm = d.edm or EDMConfig()
    if edm.sigma_min >= edm.sigma_max:
        raise BenchError(f"{where}: diffusion.edm.sigma_min: {edm.sigma_min} must be below "
                         f"sigma_max {edm.sigma_max}")


def _check_eval(spec, where: str) -> None:
    """Quality metric names, their settings, and a ranking metric the suite will record."""

    ev = spec.eval
    for name in ev.metrics:
        if name not in registry.PRODUCERS:
            raise choices_error(f"{where}: eval.metrics", "metric", name, registry.PRODUCERS)
    rankable = [m.name for m in registry.METRICS.values() if m.rankable and m.source == "run"]
    if ev.metric not in rankable:
        raise choices_error(f"{where}: eval.metric", "ranking metric", ev.metric, rankable)
    registry.check_recorded(ev.metric, ev, spec.task.kind, f"{where}: eval.metric")
    _check_early_stop(spec, where)
    for t in ev.recon_t or []:
        if not isinstance(t, int) or not 1 <= t <= spec.diffusion.timesteps:
            raise BenchError(f"{where}: eval.recon_t: {t!r} is out of range; choose integers in "
                             f"1..{spec.diffusion.timesteps} (1-based: t = T is the last step)")
    if spec.diffusion.formulation == "edm" and spec.task.condition == "paste" \
            and spec.task.kind != "unconditional":
        raise BenchError(f"{where}: task.condition: paste puts clean pixels into the noisy input, "
                         f"which formulation edm rescales by c_in; use condition: concat")
    if spec.diffusion.formulation == "edm" and "roundtrip" in ev.metrics:
        raise BenchError(f"{where}: eval.metrics: roundtrip is a DDIM encode->decode on the DDPM "
                         f"timestep chain; formulation edm has none (recon works: t -> σ via ᾱ_t)")
    if spec.task.kind != "unconditional" and {"recon", "roundtrip"} & set(ev.metrics):
        raise BenchError(f"{where}: eval.metrics: recon/roundtrip are for unconditional models; "
                         f"task.kind is {spec.task.kind}")
    for key in ("fid_n", "fid_batch", "kid_subsets", "kid_subset_size", "pr_k", "recon_images"):
        if getattr(ev, key) <= 0 or (key == "fid_n" and ev.fid_n < 2):
            raise BenchError(f"{where}: eval.{key}: must be positive (fid_n at least 2), got "
                             f"{getattr(ev, key)}")
    if ev.fid_proxy_n < 0 or ev.fid_proxy_n == 1:
        raise BenchError(f"{where}: eval.fid_proxy_n: 0 (off) or at least 2, got {ev.fid_proxy_n}")
    _check_eval_extras(spec, where)


def _check_early_stop(spec, where: str) -> None:
    """train.early_stop watches a metric every in-training evaluation records."""
    es = spec.train.early_stop
    if es is None:
        return
    registry.check_recorded(es.metric, spec.eval, spec.task.kind, f"{where}: train.early_stop.metric",
                            verb="early stopping on", when="in_training")
    if not spec.eval.every_kimg:
        raise BenchError(f"{where}: train.early_stop: needs in-training evaluations; set "
                         "eval.every_kimg (the period its patience counts in)")


def _check_eval_extras(spec, where: str) -> None:
    """The FID proxy's sampler and steps, the FID-vs-N points, the classifier settings."""
    ev, T = spec.eval, spec.diffusion.timesteps
    proxy = ev.fid_proxy_sampler or ev.sampler
    if proxy not in SAMPLERS:
        raise choices_error(f"{where}: eval.fid_proxy_sampler", "sampler", proxy, SAMPLERS)
    check_formulation(spec.diffusion.formulation, proxy, f"{where}: eval.fid_proxy_sampler")
    if ev.fid_proxy_steps is not None or ev.fid_proxy_sampler:
        resolve_steps(proxy, ev.fid_proxy_steps, T, f"{where}: eval.fid_proxy_steps")
    for n in ev.fid_vs_n or []:
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise BenchError(f"{where}: eval.fid_vs_n: {n!r}; FID needs integers N >= 2")
    if ev.fid_vs_n and not {"fid", "kid"} & set(ev.metrics):
        raise BenchError(f"{where}: eval.fid_vs_n: needs 'fid' in eval.metrics")
    if ev.untrained_reference and not {"fid", "kid", "pr"} & set(ev.metrics):
        raise BenchError(f"{where}: eval.untrained_reference: scores the untrained network with "
                         f"the suite's sample metrics; add fid, kid or pr to eval.metrics")
    size = spec.data.image_size
    if ev.ssim == "wang" and {"recon", "roundtrip"} & set(ev.metrics) and min(
            size if isinstance(size, (list, tuple)) else [size]) < 11:
        raise BenchError(f"{where}: eval.ssim: 'wang' needs images of at least 11x11 px (its "
                         f"window), data.image_size is {size}; use eval.ssim: torchmetrics")
    if ev.classify_n is not None and ev.classify_n < 1:
        raise BenchError(f"{where}: eval.classify_n: must be positive or null, got {ev.classify_n}")
    if ev.classifier:
        try:
            build(Recipe, ev.classifier, where, "eval.classifier")
        except TypeError as err:
            raise BenchError(f"{where}: eval.classifier: {err}") from None


def _check_values(spec, where: str) -> None:
    """Rules across keys (each number's own range is checked by bench.config.ranges)."""
    budget = {k: v for k, v in vars(spec.budget).items() if v is not None}
    if len(budget) != 1:
        raise BenchError(f"{where}: budget: give exactly one of kimg, steps, seconds (got "
                         f"{', '.join(budget) or 'none'})")
    if spec.train.lr_min > spec.train.lr:
        raise BenchError(f"{where}: train.lr_min: {spec.train.lr_min} is above train.lr "
                         f"{spec.train.lr}; the cosine floor must be at most the peak")
    data, held = spec.data, round(spec.data.holdout * spec.data.num_images)
    if data.dataset == "synthetic" and not 1 <= held < data.num_images:
        raise BenchError(f"{where}: data.holdout: {data.holdout} of data.num_images {data.num_images} "
                         f"holds out {held} images; need at least 1 held out and 1 to train on")
    shapes = data.shapes
    if shapes and (data.dataset != "synthetic" or shapes.min_radius > shapes.max_radius):
        raise BenchError(f"{where}: data.shapes: {vars(shapes)} needs dataset synthetic (got "
                         f"{data.dataset}) and min_radius <= max_radius")


def _check_task(task, where: str) -> None:
    """Inpainting's conditioning and loss region make sense only together (study 002)."""
    for key, default in (("condition", "concat"), ("loss_on", "all")):
        if task.kind == "unconditional" and getattr(task, key) != default:
            raise BenchError(f"{where}: task.{key}: {getattr(task, key)!r} needs task.kind: inpaint "
                             "(an unconditional run has no known region)")
    if task.condition == "paste" and task.loss_on != "hole":
        raise BenchError(f"{where}: task.loss_on: task.condition 'paste' shows the network the clean "
                         "known pixels, not their noise, so it cannot be scored there; use loss_on: hole")


def _match(spec, where: str, entry_path: str):
    match = spec.entry.match
    if len(match) != 1 or next(iter(match)) not in ("params", "flops"):
        raise BenchError(f"{where}: {entry_path}.match: expected {{params: TARGET}} or "
                         f"{{flops: TARGET}} (TARGET an architecture name or a number)")
    (kind, target), = match.items()
    try:
        kwargs, info = _matched(spec.entry.arch, json.dumps(spec.entry.kwargs, sort_keys=True),
                                json.dumps(target), kind, spec.data.channels,
                                cond_channels(spec.task, spec.data.channels), spec.data.image_size)
    except BenchError as err:
        raise BenchError(f"{where}: {entry_path}.match: {err}") from None
    return dict(kwargs), dict(info)


@functools.lru_cache(maxsize=256)
def _matched(arch, kwargs_json, target_json, kind, channels, cond, image_size):
    """Capacity matching, once per (entry design, target, shape): seeds share the result."""

    kwargs = json.loads(kwargs_json)
    if cond:
        kwargs["cond_channels"] = cond
    matched, info = match_capacity(arch, kwargs, json.loads(target_json), kind=kind,
                                   in_channels=channels, out_channels=channels,
                                   image_size=image_size)
    matched.pop("cond_channels", None)
    return matched, info


@functools.lru_cache(maxsize=256)
def model_summary(arch: str, kwargs_json: str, channels: int, image_size: int,
                  where: str, entry_path: str, cond: int = 0) -> tuple[int, int]:
    """(parameter count, downsample_factor) of an entry, built and run once on the meta device.

    A failure is blamed on the one user keyword whose removal lets the model build (a zero width,
    a negative depth): the message names `models[i].kwargs.<key>`.
    """
    kwargs = json.loads(kwargs_json)
    try:
        model = _probe(arch, kwargs, channels, image_size, cond)
    except UnknownArchitectureError as err:
        raise BenchError(f"{where}: {entry_path}.arch: {err}") from None
    except TypeError as err:
        if "keyword argument" not in str(err):   # a wrong value deep inside the model
            raise _refused(err, arch, kwargs, channels, image_size, cond, where, entry_path) from None
        if cond and "cond_channels" in str(err):
            raise BenchError(f"{where}: task.kind: inpaint needs an architecture that accepts "
                             f"cond_channels; {entry_path} ({arch}) does not") from None
        raise BenchError(f"{where}: {entry_path}.kwargs: {arch}: {err}") from None
    except Exception as err:  # noqa: BLE001 -- the design refuses these values, whatever it raises
        raise _refused(err, arch, kwargs, channels, image_size, cond, where, entry_path) from None
    return sum(p.numel() for p in model.parameters()), int(getattr(model, "downsample_factor", 1))


def _probe(arch: str, kwargs: dict, channels: int, image_size: int, cond: int):
    """Build the entry on the meta device and run one forward (shapes only, nothing allocated)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "zero-element tensors" of a zero width
        model = create(arch, in_channels=channels, out_channels=channels, image_size=image_size,
                       cond_channels=cond or None, **kwargs)
        x = torch.zeros(2, channels + cond, *hw(image_size))
        out = model.eval()(x, torch.zeros(2, dtype=torch.long))
    if tuple(out.shape) != (2, channels, *hw(image_size)):
        raise ValueError(f"output shape {list(out.shape)} is not the input's "
                         f"{[2, channels, *hw(image_size)]}")
    return model


def _refused(err, arch, kwargs, channels, image_size, cond, where, entry_path) -> BenchError:
    """One line naming the keyword to blame (the one whose default builds), else the entry."""
    path = entry_path
    for key in sorted(kwargs):
        try:
            _probe(arch, {k: v for k, v in kwargs.items() if k != key}, channels, image_size, cond)
        except Exception:  # noqa: BLE001 -- still refused without it: not this keyword
            continue
        path = f"{entry_path}.kwargs.{key}"
        break
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return BenchError(f"{where}: {path}: {arch} at data.image_size {_size(image_size)}: {text}")


def _size(image_size) -> str:
    """`32`, or `[108, 88]` as written in YAML."""
    return str(image_size) if isinstance(image_size, int) else str(list(image_size))
