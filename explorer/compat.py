"""The one place that imports torchvision (and, after it, Lucent, diffusers and timm).

PyPI's torchvision wheel that matches torch 2.13 is a CUDA build. Next to a CPU torch
its compiled extension cannot load, and importing torchvision then fails with
``operator torchvision::nms does not exist`` because its Python side registers fake
kernels for ops whose schemas were never defined. When (and only when) the extension
fails to load we define those schemas ourselves so the pure-Python parts (model
architectures, transforms, metadata) import. Compiled ops (nms, image decoding) stay
unavailable; the project does not use them.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from types import ModuleType

import torch

_lock = threading.Lock()
_torchvision: ModuleType | None = None
_guard_applied = False
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas

_MISSING_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _extension_loads() -> bool:
    """True when torchvision's compiled extension loads beside this torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchvision is not installed; run `make setup`.")
    import glob
    import os

    folder = list(spec.submodule_search_locations)[0]
    candidates = glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(candidates[0])
    except (OSError, RuntimeError):
        return False
    return True


def _register_missing_schemas() -> None:
    global _library, _guard_applied
    if _library is not None:
        return
    library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_SCHEMAS:
        name = schema.split("(", 1)[0]
        if not hasattr(torch.ops.torchvision, name) or not _op_defined(name):
            library.define(schema)
    _library = library
    _guard_applied = True


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name).default  # noqa: B018 - probing
        return True
    except (AttributeError, RuntimeError):
        return False


def import_torchvision() -> ModuleType:
    """Import torchvision, defining the missing op schemas first if its extension is broken."""
    global _torchvision
    with _lock:
        if _torchvision is None:
            if not _extension_loads():
                _register_missing_schemas()
            _torchvision = importlib.import_module("torchvision")
        return _torchvision


def guard_applied() -> bool:
    """Whether the schema guard had to be applied in this process (for diagnostics and tests)."""
    return _guard_applied


def import_lucent() -> ModuleType:
    """Lucent imports torchvision (through kornia): import it only after the guard."""
    import_torchvision()
    return importlib.import_module("lucent")


def import_diffusers() -> ModuleType:
    """diffusers imports torchvision when it is installed: import it only after the guard."""
    import_torchvision()
    return importlib.import_module("diffusers")


def import_timm() -> ModuleType:
    """timm imports torchvision at import time: import it only after the guard."""
    import_torchvision()
    return importlib.import_module("timm")
