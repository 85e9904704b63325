"""Denoiser registry: name -> factory, as torchvision `models/_api.py` and timm `create_model`.

A factory is a plain function decorated with `@register`; its function name is its registry key.
Every factory takes the harness-injected keywords `in_channels`, `out_channels` and `image_size`
plus its own design keywords, and returns an `nn.Module` with the denoiser contract

    model(x: [B, C_in, H, W], t: [B] long) -> [B, C_out, H, W]

and an integer attribute `downsample_factor` (image sizes must be divisible by it). Factories that
can be capacity-matched name the keyword that sets their base width with `register(width="...")`.

Adding a denoiser = adding one module next to this file; it is imported automatically.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_WIDTH_KWARG: dict[str, str] = {}


class UnknownArchitectureError(KeyError):
    """Raised by `create` for a name that is not registered; `str()` is the one-line message."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(fn: Callable | None = None, *, width: str | None = None):
    """Register a factory under its function name; `width` names its base-width keyword."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = factory
        if width is not None:
            _WIDTH_KWARG[name] = width
        return factory

    return wrap(fn) if fn is not None else wrap


def _unknown(name: str) -> UnknownArchitectureError:
    close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return UnknownArchitectureError(
        f"unknown architecture {name!r}{hint}; available: {', '.join(sorted(_REGISTRY))}"
    )


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The factory registered as `name`, or a teaching error listing close matches."""
    _import_all()
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name]


def width_kwarg(name: str) -> str | None:
    """The keyword that sets `name`'s base width (for capacity matching), or None."""
    get_factory(name)
    return _WIDTH_KWARG.get(name)


def create(name: str, **kwargs) -> nn.Module:
    """Build a registered denoiser; keyword arguments that are None are dropped."""
    factory = get_factory(name)
    return factory(**{k: v for k, v in kwargs.items() if v is not None})


def list_architectures(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style pattern ('s001_*')."""
    _import_all()
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]


_IMPORTED = False


def _import_all() -> None:
    """Import every sibling module once so their @register decorators run."""
    global _IMPORTED
    if _IMPORTED:
        return
    _IMPORTED = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
