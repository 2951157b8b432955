"""User checkpoints: a TorchScript file, or a state dict (.pt/.pth via weights_only, or .safetensors)
for a named torchvision architecture."""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import torch

from .. import devices
from ..errors import UserInputError
from .base import IMAGENET_NORMALIZE, LoadedModel, Normalize
from .imagenet import imagenet_labels, load_state_dict_file

_cache: dict[tuple[str, str | None, str], LoadedModel] = {}
_lock = threading.Lock()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/code/") or "/code/" in name for name in archive.namelist())


def load_checkpoint(
    path: str, arch: str | None = None, device: str | torch.device | None = "auto", input_size: int = 224
) -> LoadedModel:
    """Load a user checkpoint. State dicts need ``arch`` (a torchvision architecture name)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserInputError(f"Checkpoint not found: {file}")
    dev = devices.choose_device(device)
    key = (str(file.resolve()), arch, str(dev))
    with _lock:
        if key in _cache:
            return _cache[key]
        if _is_torchscript(file):
            module = torch.jit.load(str(file), map_location="cpu")
            name = f"checkpoint:{file.name}"
        else:
            if not arch:
                raise UserInputError(
                    f"{file.name} is a state dict: name its torchvision architecture (e.g. arch='resnet50')."
                )
            from ..compat import import_torchvision

            tv = import_torchvision()
            try:
                module = tv.models.get_model(arch, weights=None)
            except ValueError as exc:
                raise UserInputError(f"Unknown torchvision architecture {arch!r}.") from exc
            try:
                module.load_state_dict(load_state_dict_file(file))
            except RuntimeError as exc:
                raise UserInputError(f"{file.name} does not fit {arch}: {str(exc).splitlines()[0]}") from exc
            name = f"checkpoint:{file.name}"
        model = LoadedModel(
            name=name,
            module=module,
            preprocess=Normalize(*IMAGENET_NORMALIZE),
            labels=imagenet_labels(),
            input_size=(input_size, input_size),
            device=dev,
            weights=str(file),
            description=f"User checkpoint {file.name}" + (f" ({arch})" if arch else " (TorchScript)"),
        )
        _cache[key] = model
        return model
