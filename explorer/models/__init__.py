"""Classifier registry: ``load_model(name)`` returns a shared, read-only :class:`LoadedModel`."""

from .base import Affine, LayerInfo, LoadedModel, Normalize
from .registry import DEFAULT_MODEL, ModelSpec, WeightsUnavailable, available_models, get_spec, load_model, register

__all__ = [
    "Affine",
    "DEFAULT_MODEL",
    "LayerInfo",
    "LoadedModel",
    "ModelSpec",
    "Normalize",
    "WeightsUnavailable",
    "available_models",
    "get_spec",
    "load_model",
    "register",
]
