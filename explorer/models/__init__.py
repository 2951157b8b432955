"""Classifier registry: ``load_model(name)`` returns a shared, read-only :class:`LoadedModel`."""

from .base import Affine, LayerInfo, LoadedModel, ModelSpec, Normalize
from .checkpoint import CHECKPOINT_PREFIX, TorchScriptTrustWarning
from .registry import DEFAULT_MODEL, available_models, get_spec, load_model, register
from .weights import WeightsUnavailable

__all__ = [
    "Affine",
    "CHECKPOINT_PREFIX",
    "DEFAULT_MODEL",
    "LayerInfo",
    "LoadedModel",
    "ModelSpec",
    "Normalize",
    "TorchScriptTrustWarning",
    "WeightsUnavailable",
    "available_models",
    "get_spec",
    "load_model",
    "register",
]
