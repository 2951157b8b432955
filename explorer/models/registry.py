"""Classifier registry: names -> loaders. Loaded models are cached once per process."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from .. import devices
from ..errors import UserInputError
from .base import LoadedModel


class WeightsUnavailable(UserInputError):
    """Pretrained weights cannot be had offline; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    # loader(weights, device) -> LoadedModel; weights is "pretrained", "random" or a file path
    loader: Callable[[str, torch.device], LoadedModel]
    default_weights: str = "pretrained"
    offline: bool = True  # its default weights ship with the project's dependencies
    default_layer: str | None = None
    family: str = "imagenet"


_SPECS: dict[str, ModelSpec] = {}
_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()
_LOAD_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}

DEFAULT_MODEL = "efficientnet_lite0"


def register(spec: ModelSpec) -> ModelSpec:
    _SPECS[spec.name] = spec
    return spec


# Modules of explorer.models that register entries when imported.
ENTRY_MODULES = ["imagenet", "fashion"]


def _ensure_builtin_entries() -> None:
    import importlib
    import importlib.util

    for name in ENTRY_MODULES:
        if importlib.util.find_spec(f"{__package__}.{name}") is not None:
            importlib.import_module(f"{__package__}.{name}")


def available_models() -> list[ModelSpec]:
    _ensure_builtin_entries()
    return list(_SPECS.values())


def get_spec(name: str) -> ModelSpec:
    _ensure_builtin_entries()
    if name not in _SPECS:
        import difflib

        close = difflib.get_close_matches(name, list(_SPECS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserInputError(f"Unknown model {name!r}.{hint} Known: {', '.join(_SPECS)}.")
    return _SPECS[name]


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None, device: str | torch.device | None = "auto") -> LoadedModel:
    """Load (once per process) a registry model; the same object is returned to every caller."""
    if name.startswith("checkpoint:"):
        from .checkpoint import load_checkpoint

        return load_checkpoint(name.split(":", 1)[1], device=device)
    spec = get_spec(name)
    weights = weights or spec.default_weights
    dev = devices.choose_device(device)
    key = (name, weights, str(dev))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    with lock:  # one load per key, other keys load in parallel
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        model = spec.loader(weights, dev)
        if model.default_layer is None:
            model.default_layer = spec.default_layer
        with _CACHE_LOCK:
            _CACHE[key] = model
        return model


def allow_downloads() -> bool:
    """Online extras are opt-in: set EXPLORER_ALLOW_DOWNLOAD=1 to let torchvision fetch weights."""
    return os.environ.get("EXPLORER_ALLOW_DOWNLOAD", "") not in ("", "0", "false", "no")
