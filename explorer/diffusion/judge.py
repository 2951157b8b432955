"""The clean judge of the imagination experiments: the project's ``fashion_cnn``, which never guides anything.

For a set of images made for one class it reports how often it names that class (top-1, exact
Clopper–Pearson interval), the Fréchet distance of the set to that class's test images in its penultimate
features (FD_cnn, :mod:`explorer.diffusion.quality`), and the set's diversity (mean pairwise distance in the
same features). FD and diversity depend on the number of images (a 64-image covariance in 128 dimensions
is biased upward), so sets are compared at equal size, beside the floor of real training images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.base import LoadedModel
from ..stats import clopper_pearson
from .data import ImageDataset
from .quality import frechet_distance, probe_outputs


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs of rows (0 for fewer than two)."""
    n = features.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(features.double(), features.double())
    return float(d.sum() / (n * (n - 1)))


def rate(hits: int, n: int) -> dict:
    """A rate with its exact 95 % interval, JSON-ready."""
    low, high = clopper_pearson(int(hits), int(n))
    return {"hits": int(hits), "n": int(n), "rate": round(hits / n, 4) if n else None,
            "ci95": [round(low, 4), round(high, 4)]}


@dataclass
class Verdicts:
    """The judge on one image set: probabilities, predicted classes and penultimate features."""

    probabilities: torch.Tensor  # N×K
    features: torch.Tensor  # N×D

    @property
    def classes(self) -> torch.Tensor:
        return self.probabilities.argmax(-1)


class Judge:
    """A clean classifier judging images in [0, 1]; keeps the features of real test images per class."""

    def __init__(self, model: LoadedModel, reference: ImageDataset | None = None, floor: ImageDataset | None = None):
        self.model = model
        self.reference = reference  # held-out real images (FD target)
        self.floor_data = floor  # other real images (the FD floor at equal size)
        self._class_features: dict[int, torch.Tensor] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    def verdicts(self, images01: torch.Tensor) -> Verdicts:
        out = probe_outputs(self.model, images01.float())
        return Verdicts(out.probabilities, out.features)

    def class_features(self, cls: int) -> torch.Tensor:
        """Penultimate features of the reference images of class ``cls`` (computed once)."""
        if self.reference is None:
            raise ValueError("This judge has no reference images.")
        if cls not in self._class_features:
            images = self.reference.images[self.reference.labels == cls]
            self._class_features[cls] = self.verdicts(images).features
        return self._class_features[cls]

    def judge_class(self, images01: torch.Tensor, cls: int) -> dict:
        """Top-1 rate for ``cls`` (with interval), FD_cnn to the class's reference images, diversity."""
        v = self.verdicts(images01)
        row = {"class": int(cls), "label": self.labels[cls] if cls < len(self.labels) else str(cls)}
        row |= rate(int((v.classes == cls).sum()), int(v.classes.numel()))
        row["mean_p_class"] = round(float(v.probabilities[:, cls].mean()), 4)
        row["diversity"] = round(mean_pairwise_distance(v.features), 4)
        if self.reference is not None and images01.shape[0] >= 2:
            row["fd"] = round(frechet_distance(v.features, self.class_features(cls)), 3)
        return row

    def floor(self, cls: int, n: int, seed: int = 0) -> dict:
        """What real images score at the same size: ``n`` floor images of ``cls`` (FD to the reference, diversity,
        the judge's rate)."""
        if self.floor_data is None:
            raise ValueError("This judge has no floor images.")
        pool = self.floor_data.images[self.floor_data.labels == cls]
        pick = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed + cls))[:n]
        return self.judge_class(pool[pick], cls)
