"""Independent judges: how *other* models see images made with one model.

A class visualisation or a fooling image scored only by the network that produced it cannot fail (the
optimiser maximised that very score). Shown to other models, each at its own input size and
preprocessing, it either is named as the class (top-1 / top-5) or not: exact Clopper–Pearson intervals say
how sure a rate is. :func:`judge_class_images` judges a batch of class images (the feature-vis page,
``benchmarks/transfer.py``); :func:`transfer_table` one fooling image (the fooling lab);
:func:`transfer_models` finds the judges: the registry models of the source's family that load offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

import torch

from ..capture import OUTPUT
from ..errors import UserInputError
from ..stats import clopper_pearson
from .base import LoadedModel


def top_prediction(model: LoadedModel, image: torch.Tensor) -> tuple[int, float, torch.Tensor]:
    """The model's top class, its probability and all class probabilities (CPU) for one image, as given."""
    with torch.inference_mode():
        logits = model.activations(image[None] if image.ndim == 3 else image, [OUTPUT], use_autocast=False)[OUTPUT]
    probs = torch.softmax(logits.float(), dim=-1)[0].cpu()
    return int(probs.argmax()), float(probs.max()), probs


@dataclass
class JudgeResult:
    """One judge's verdict on a batch of class images."""

    model: str
    n: int
    top1: int  # images whose own class is the judge's first choice
    top5: int  # ... among its first five
    ranks: list[int]  # per image: the rank of its class for this judge (0 = first)
    p_class: list[float]  # per image: the judge's probability of the class
    top1_interval: tuple[float, float] = field(init=False)
    top5_interval: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.top1_interval = clopper_pearson(self.top1, self.n)
        self.top5_interval = clopper_pearson(self.top5, self.n)

    @property
    def top1_rate(self) -> float:
        return self.top1 / self.n if self.n else float("nan")

    @property
    def top5_rate(self) -> float:
        return self.top5 / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        return {"model": self.model, "n": self.n, "top1": self.top1, "top5": self.top5,
                "top1_rate": self.top1_rate, "top5_rate": self.top5_rate,
                "top1_interval": list(self.top1_interval), "top5_interval": list(self.top5_interval),
                "ranks": self.ranks, "p_class": [round(p, 6) for p in self.p_class]}


@torch.no_grad()
def class_ranks(model: LoadedModel, images: torch.Tensor, classes: Sequence[int], *,
                batch_size: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """For image i and class classes[i]: the class's rank among the model's outputs (0 = top) and its
    probability, with the images shown at the model's own input size and preprocessing."""
    probs = model.probabilities(images, batch_size=batch_size, native_size=True).float()
    target = torch.as_tensor(list(classes), dtype=torch.long)
    if probs.shape[0] != target.numel():
        raise ValueError(f"{probs.shape[0]} images but {target.numel()} classes.")
    p_class = probs.gather(1, target[:, None])[:, 0]
    ranks = (probs > p_class[:, None]).sum(dim=1)
    return ranks, p_class


def judge_class_images(images: torch.Tensor, classes: Sequence[int], judges: Sequence[LoadedModel], *,
                       batch_size: int = 25) -> list[JudgeResult]:
    """Top-1 / top-5 rates (with 95 % Clopper–Pearson intervals) at which each judge names image i's class."""
    results = []
    for judge in judges:
        ranks, p_class = class_ranks(judge, images, classes, batch_size=batch_size)
        results.append(JudgeResult(judge.name, len(ranks), int((ranks == 0).sum()), int((ranks < 5).sum()),
                                   ranks.tolist(), p_class.tolist()))
    return results


def transfer_table(image: torch.Tensor, target: int, models: Iterable[LoadedModel],
                   skipped: Iterable[dict] = ()) -> list[dict]:
    """How each model sees a fooling image, shown at the model's own input size: p(target), its top class,
    whether it is fooled too."""
    rows = []
    for model in models:
        shown = model.at_input_size(image.to(model.device)[None] if image.ndim == 3 else image.to(model.device))
        top, top_p, probs = top_prediction(model, shown)
        rows.append({"model": model.name, "weights": model.weights, "status": "ok",
                     "p_target": float(probs[target]) if target < probs.numel() else float("nan"),
                     "top_class": top, "top_label": model.label(top), "top_p": top_p, "fooled": top == target})
    rows.extend(dict(row) for row in skipped)
    return rows


@lru_cache(maxsize=8)
def _offline_candidates(
    source: str, device_str: str,
) -> tuple[tuple[LoadedModel, ...], tuple[tuple[tuple[str, str], ...], ...]]:
    from . import available_models, get_spec, load_model  # the package's registry, at call time

    try:
        family = get_spec(source).family
    except UserInputError:
        return (), ()
    loaded, skipped = [], []
    for spec in available_models():
        if spec.name == source or spec.family != family:
            continue
        if spec.pretrained_available is not None and not spec.pretrained_available():  # timm: random otherwise
            skipped.append((("model", spec.name), ("weights", "pretrained"),
                            ("status", "unavailable: pretrained weights are not in the local cache")))
            continue
        try:
            loaded.append(load_model(spec.name, "pretrained", device=device_str))
        except Exception as exc:  # missing weights, missing optional package: say why
            reason = str(exc).split("\n")[0][:400]
            skipped.append((("model", spec.name), ("weights", "pretrained"), ("status", f"unavailable: {reason}")))
    return tuple(loaded), tuple(skipped)


def transfer_models(source: LoadedModel) -> tuple[list[LoadedModel], list[dict]]:
    """Registry models of the source's family whose *pretrained* weights load offline here
    (random-init architectures would say nothing about transfer), plus a row per model skipped
    and why. Cached per process: failed loads are not retried."""
    loaded, skipped = _offline_candidates(source.name, str(source.device))
    rows = [dict(row) for row in skipped]
    judges = []
    for model in loaded:  # a judge must know every class the source can name (a family shares its label set)
        if model.num_classes == source.num_classes:
            judges.append(model)
        else:
            rows.append({"model": model.name, "weights": "pretrained", "status": f"unavailable: it has "
                         f"{model.num_classes} classes, {source.name} has {source.num_classes}"})
    return judges, rows
