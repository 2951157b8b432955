"""timm models in the registry: ``timm:NAME`` for any architecture timm knows (ViTs included).

Why: users ask to visualise their own architectures and Vision Transformers; timm has both. Weights follow
the project's offline rule — the same as torchvision's: pretrained weights come only from the local
Hugging Face hub cache (``HF_HOME``/``HF_HUB_CACHE``) or torch hub's checkpoint folder, and are downloaded only
when ``EXPLORER_ALLOW_DOWNLOAD=1``. When they cannot be had, the model loads with RANDOM weights and says so
(a :class:`RandomWeightsNotice` warning, ``LoadedModel.weights == "random"`` and its description).
Every file is read by :func:`weights.read_state_dict` (safetensors or ``weights_only``), then handed to timm,
which adapts it as its own loader would (e.g. position embeddings for another image size).

timm is imported lazily (``compat.import_timm``: it imports torchvision). Preprocessing is timm's own data
config (mean/std, input size). A model whose config says ``fixed_input_size`` (ViTs: learned position
embeddings for one grid) sees every image resized to its input size (``LoadedModel.fixed_input_size``), so
renders, DeepDream octaves and inversions of any size work; its token layers (B×N×C) are marked by
``LoadedModel.token_prefix`` (how many leading tokens are not patches: CLS, distillation, registers).
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..compat import import_timm
from ..errors import UserInputError, quoted
from .base import LoadedModel, ModelSpec, Normalize
from .labels import imagenet_labels
from .weights import WeightsUnavailable, allow_downloads, check_module_finite, read_state_dict

PREFIX = "timm:"

# Weights file names timm publishes on the hub, safest first.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class RandomWeightsNotice(UserWarning):
    """Pretrained weights were asked for but are not available offline: the model has random weights."""


def _timm():
    try:
        return import_timm()
    except ImportError as exc:
        raise WeightsUnavailable("timm models need the Python package `timm`: install it with `pip install timm` "
                                 "(pinned in requirements.txt).") from exc


def check_name(arch: str) -> str:
    """A timm model name (``arch`` or ``arch.tag``) timm knows; otherwise a one-line error with close names."""
    timm = _timm()
    base = arch.split(".", 1)[0]
    if not arch or not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
        hint = f" Did you mean: {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise UserInputError(f"timm has no model {quoted(arch)}.{hint} (timm.list_models() lists them.)")
    if "." in arch:  # a tag timm does not list would become a registry entry that fails on load
        try:
            timm.models.get_pretrained_cfg(arch)
        except RuntimeError:
            raise UserInputError(f"timm's {base} has no pretrained tag {quoted(arch.split('.', 1)[1])} "
                                 "(timm.list_pretrained() lists them).") from None
    return arch


def hub_cache_dir() -> str | None:
    """The Hugging Face hub cache as the environment names it now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default (~/.cache/huggingface/hub)


def cached_weights_file(cfg: dict) -> Path | None:
    """The pretrained weights of a timm config in the local caches (hub first, then torch hub), or None."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HUB_FILES)
        for filename in names:
            found = try_to_load_from_cache(hub_id, filename, cache_dir=hub_cache_dir())
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = cfg.get("url")
    if url and not url.endswith(".npz"):
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if local.is_file():
            return local
    return None


def _download_weights(cfg: dict, arch: str) -> Path:
    """Fetch the weights (only called when EXPLORER_ALLOW_DOWNLOAD=1)."""
    hub_id = cfg.get("hf_hub_id")
    errors = []
    if hub_id:
        from huggingface_hub import hf_hub_download

        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HUB_FILES)
        for filename in names:
            try:
                return Path(hf_hub_download(hub_id, filename, cache_dir=hub_cache_dir()))
            except Exception as exc:  # not on the hub under this name, no network, …
                errors.append(f"{hub_id}/{filename}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    url = cfg.get("url")
    if url and not url.endswith(".npz"):
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(target), progress=False)
            return target
        except Exception as exc:
            errors.append(f"{url}: {exc}")
    raise WeightsUnavailable(f"Could not download {arch} weights: {'; '.join(errors) or 'timm names no safe source'}.")


def _pretrained_state(cfg: dict, arch: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict or None, where it came from / why not)."""
    path = cached_weights_file(cfg)
    if path is None and allow_downloads():
        path = _download_weights(cfg, arch)
    if path is None:
        where = (f"the Hugging Face hub cache ({cfg['hf_hub_id']})" if cfg.get("hf_hub_id")
                 else "torch hub's checkpoints")
        return None, (f"pretrained {arch} weights are not in {where}; set EXPLORER_ALLOW_DOWNLOAD=1 to fetch them "
                      "(or copy them there)")
    return read_state_dict(path), str(path)


def _default_layer(model: LoadedModel) -> str | None:
    """About two thirds down the network's blocks (ViT-Tiny: blocks.7; ResNet-18: layer3.1)."""
    names = [i.name for i in model.main_layers()
             if i.name.count(".") == 1 and (len(i.shape) == 3 or i.tokens)]
    return names[int(len(names) * 2 / 3)] if names else None


def load_timm(arch: str, weights: str = "pretrained", device: torch.device | str = "cpu",
              **model_kwargs: Any) -> LoadedModel:
    """A timm model as a :class:`LoadedModel`. ``weights``: "pretrained" (local cache or an allowed download;
    random weights with a :class:`RandomWeightsNotice` otherwise), "random", or a weights file.
    ``model_kwargs`` go to ``timm.create_model`` (tests: ``img_size=64`` for a small ViT)."""
    arch = check_name(arch)
    timm = _timm()
    net = timm.create_model(arch, pretrained=False, **model_kwargs)
    cfg = dict(net.pretrained_cfg or {})
    source, notice = "random", ""
    state = None
    if weights == "pretrained":
        state, where = _pretrained_state(cfg, arch)
        if state is None:
            notice = f"{PREFIX}{arch} has RANDOM weights: {where}."
            warnings.warn(notice, RandomWeightsNotice, stacklevel=2)
        else:
            source = where
    elif weights != "random":
        state, source = read_state_dict(weights), Path(weights).name
    if state is not None:
        try:  # timm adapts the file as its own loader does (filter_fn: position embeddings, layouts)
            net = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **model_kwargs)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserInputError(f"{source} does not fit timm's {arch}: {str(exc).splitlines()[0]}") from None
        check_module_finite(net, source)
    data = timm.data.resolve_data_config({}, model=net)
    side = model_kwargs.get("img_size") or data["input_size"][-1]
    size = (int(side), int(side)) if isinstance(side, int) else tuple(int(s) for s in side)
    classes = int(getattr(net, "num_classes", 0) or cfg.get("num_classes") or 0)
    labels = imagenet_labels() if classes == 1000 else [f"class {i}" for i in range(classes)]
    transformer = hasattr(net, "num_prefix_tokens") and hasattr(net, "blocks")
    fixed = bool(cfg.get("fixed_input_size"))
    kept = "random" if state is None else weights
    described = (notice or f"timm {arch}, {'random' if state is None else 'pretrained'} weights"
                 + ("" if state is None else f" from {Path(source).name}"))
    model = LoadedModel(
        name=f"{PREFIX}{arch}",
        module=net,
        preprocess=Normalize(data["mean"], data["std"]),
        labels=labels,
        input_size=size,
        device=torch.device(device),
        weights=kept,
        channels=int(getattr(net, "in_chans", 3) or 3),
        fixed_input_size=fixed,
        description=described + f" ({size[0]} px, timm mean/std {tuple(round(m, 3) for m in data['mean'])}).",
        token_prefix=int(net.num_prefix_tokens) if transformer else None,
    )
    model.default_layer = _default_layer(model)
    return model


def spec_for(name: str) -> ModelSpec:
    """The registry entry of ``timm:ARCH`` (the registry asks for names it does not list)."""
    return _lazy_spec(check_name(name[len(PREFIX):]))


# Listed in the model picker; any other timm name works as timm:NAME. Building a spec needs no timm import.
LISTED = ("vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_patch16_224", "resnet18", "convnext_atto")


def pretrained_available(arch: str) -> bool:
    """Whether weights="pretrained" would load real weights (a cached file, or downloads allowed)."""
    if allow_downloads():
        return True
    cfg = _timm().models.get_pretrained_cfg(arch)
    return cfg is not None and cached_weights_file(cfg.to_dict()) is not None


def _lazy_spec(arch: str) -> ModelSpec:
    def load(weights: str, device: torch.device) -> LoadedModel:
        return load_timm(arch, weights, device)

    return ModelSpec(f"{PREFIX}{arch}", f"{arch} (timm)", load, offline=False,
                     pretrained_available=lambda: pretrained_available(arch))


SPECS: list[ModelSpec] = [_lazy_spec(a) for a in LISTED]
PREFIXES = {PREFIX: spec_for}
