"""Independent judges for class images: how often do *other* models name the class an image was made for?

A class visualisation scored only by the network that produced it cannot fail (the optimiser maximised that
very score). Shown to other ImageNet models, each at its own input size and preprocessing, it either is
named as the class (top-1 / top-5) or not: exact Clopper–Pearson intervals say how sure a rate is.
Used by ``benchmarks/transfer.py``; the fooling lab's per-image table is ``fooling.transfer_table``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .fooling import clopper_pearson
from .models.base import LoadedModel


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
