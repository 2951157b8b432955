"""Classifier registry: names -> loaders. Loaded models are cached once per process.

Imports run one way only: registry -> {imagenet, fashion, timm_models, checkpoint} -> {base, labels, weights}.
Every entry module in ENTRY_MODULES must import: a missing one is an error, never a silent skip. An entry module
may also declare ``PREFIXES`` ({"timm:": spec_for}): names with that prefix get their entry on first use.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from typing import Callable, Iterable

import torch

from .. import devices
from ..errors import UserInputError
from .base import LoadedModel, ModelSpec
from .checkpoint import CHECKPOINT_PREFIX, load_checkpoint
from .weights import WeightsUnavailable, allow_downloads

__all__ = ["DEFAULT_MODEL", "ENTRY_MODULES", "ModelSpec", "WeightsUnavailable", "allow_downloads", "available_models",
           "get_spec", "load_model", "register"]

DEFAULT_MODEL = "efficientnet_lite0"

# Modules of explorer.models whose ``SPECS`` list registry entries.
ENTRY_MODULES = ("imagenet", "fashion", "timm_models")

_SPECS: dict[str, ModelSpec] = {}
_PREFIXES: dict[str, Callable[[str], ModelSpec]] = {}  # "timm:" -> spec_for(name)
_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()
_LOAD_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}


def entry_specs(modules: Iterable[str] = ENTRY_MODULES) -> list[ModelSpec]:
    """The specs the entry modules declare; a module that does not import raises (no silent skip)."""
    specs: list[ModelSpec] = []
    for name in modules:
        module = importlib.import_module(f"{__package__}.{name}")
        specs.extend(module.SPECS)
        _PREFIXES.update(getattr(module, "PREFIXES", {}))
    return specs


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) an entry: how plug-ins and tests add models."""
    _SPECS[spec.name] = spec
    return spec


for _spec in entry_specs():
    register(_spec)


def available_models() -> list[ModelSpec]:
    return list(_SPECS.values())


def get_spec(name: str) -> ModelSpec:
    if name not in _SPECS:
        for prefix, make_spec in _PREFIXES.items():
            if name.startswith(prefix):
                return register(make_spec(name))  # raises a one-line error for a name it does not know
        close = difflib.get_close_matches(name, list(_SPECS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserInputError(f"Unknown model {name!r}.{hint} Available: {', '.join(_SPECS)}, "
                             f"{''.join(p + 'NAME, ' for p in _PREFIXES)}or {CHECKPOINT_PREFIX}PATH for your own file.")
    return _SPECS[name]


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None, device: str | torch.device | None = "auto",
               *, arch: str | None = None) -> LoadedModel:
    """Load (once per process) a registry model, or ``checkpoint:PATH`` (``arch`` names the architecture of a
    state dict); the same object is returned to every caller."""
    if name.startswith(CHECKPOINT_PREFIX):
        if weights not in (None, "pretrained"):
            raise UserInputError(f"{name} brings its own weights: leave out weights={weights!r}.")
        return load_checkpoint(name[len(CHECKPOINT_PREFIX):], arch=arch, device=device)
    if arch:
        raise UserInputError(f"arch={arch!r} only applies to {CHECKPOINT_PREFIX}PATH models, not to {name!r}.")
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
