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
from .imagenet import imagenet_labels
from .weights import check_module_finite, load_weights, read_state_dict

_cache: dict[tuple[str, str | None, str], LoadedModel] = {}
_lock = threading.Lock()


def _is_torchscript(path: Path) -> bool:
    """A zip archive with a ``code/`` folder. A file that starts like a zip but cannot be read as one
    (truncated) is a clear error here, not "a state dict"."""
    with open(path, "rb") as handle:
        starts_like_zip = handle.read(4) == b"PK\x03\x04"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        if starts_like_zip:
            raise UserInputError(f"{path.name} is a truncated or corrupt archive (a torch file or TorchScript "
                                 "module that was cut short): save it again.") from None
        return False
    return any("/code/" in name for name in names)


def _load_torchscript(file: Path) -> torch.nn.Module:
    try:
        module = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # a zip with a code/ folder that is not a TorchScript module, or a damaged one
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{file.name} looks like a TorchScript file but cannot be loaded as one: {reason}") from None
    check_module_finite(module, file.name)
    return module


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
        if file.stat().st_size == 0:
            raise UserInputError(f"{file.name} is empty (0 bytes): it holds no model.")
        if _is_torchscript(file):
            module = _load_torchscript(file)
            name = f"checkpoint:{file.name}"
        else:
            state = read_state_dict(file)  # unreadable files say why before any talk of architectures
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
            load_weights(module, state, arch, label=file.name)
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
