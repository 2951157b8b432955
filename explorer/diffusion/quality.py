"""Distribution measures of generated images in a classifier's features: Fréchet distance and precision/recall.

FID's idea (Heusel et al. 2017) with the project's own probe instead of Inception (Inception features mean
little on 28-px grey images): fit a Gaussian to the probe's penultimate-layer features of two image sets and
take the Fréchet distance between them,

    FD = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}.

The trace of the matrix square root is computed from eigen-decompositions of symmetric matrices (float64):
Σ_a^{1/2} from ``eigh``, then the eigenvalues of the symmetric PSD matrix Σ_a^{1/2} Σ_b Σ_a^{1/2}; their
square roots sum to tr √(Σ_a Σ_b) (the two matrices are similar). scipy's ``sqrtm(Σ_a Σ_b)`` gives the same
value up to rounding (tests compare them); ``frechet_distance_sqrtm`` is that variant.

Precision and recall (Kynkäänniemi et al. 2019): each real feature vector gets a ball reaching its k-th
nearest real neighbour; precision is the share of generated samples inside some real ball (realism),
recall the share of real images inside some generated ball, with radii from the generated set (variety).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserInputError
from ..models.base import LoadedModel
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested

OUTPUT = "output"


def penultimate_layer(model: LoadedModel) -> str:
    """The last flat (1-D) layer before the logits that is not dropout: the features the classifier's last
    linear layer reads (``head.3``, 128 units, for ``fashion_cnn``)."""
    classes = model.num_classes
    candidates = [layer for layer in model.layers if layer.name != OUTPUT and len(layer.shape) == 1
                  and layer.kind not in ("Dropout", "Flatten", "Sequential") and layer.shape[0] != classes]
    if not candidates:
        raise UserInputError(f"{model.name} has no flat layer before its logits to take features from.")
    return candidates[-1].name


@dataclass
class ProbeOutputs:
    features: torch.Tensor  # N×D float32, CPU
    probabilities: torch.Tensor  # N×K float32, CPU
    layer: str
    stopped: str | None = None


@torch.no_grad()
def probe_outputs(model: LoadedModel, images01: torch.Tensor, *, layer: str | None = None, batch_size: int = 250,
                  callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> ProbeOutputs:
    """Penultimate features and class probabilities of images in [0, 1], from one forward pass per batch
    (fp32, the model's own capture)."""
    layer = layer or penultimate_layer(model)
    feats, probs, stopped = [], [], None
    for start in range(0, images01.shape[0], batch_size):
        if stop_requested(should_stop):
            stopped = CANCELLED
            break
        chunk = images01[start : start + batch_size].to(model.device, torch.float32)
        acts = model.activations(chunk, [layer, OUTPUT], use_autocast=False)
        feats.append(acts[layer].flatten(1).cpu())
        probs.append(torch.softmax(acts[OUTPUT], dim=-1).cpu())
        if callback:
            callback(min(images01.shape[0], start + batch_size), images01.shape[0], None, None)
    empty = torch.zeros((0, 0))
    return ProbeOutputs(torch.cat(feats) if feats else empty, torch.cat(probs) if probs else empty, layer, stopped)


def _moments(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise UserInputError("A Fréchet distance needs at least 2 feature vectors per set (N×D).")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance_from_moments(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two N×D feature sets (eigen-decomposition, float64)."""
    mu_a, cov_a = _moments(feats_a)
    mu_b, cov_b = _moments(feats_b)
    if mu_a.shape != mu_b.shape:
        raise UserInputError(f"Feature sets differ in width ({mu_a.shape[0]} vs {mu_b.shape[0]}).")
    return frechet_distance_from_moments(mu_a, cov_a, mu_b, cov_b)


def frechet_distance_sqrtm(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """The same distance with scipy's ``sqrtm(Σ_a Σ_b)`` (FID's reference code path), for comparison."""
    from scipy import linalg

    mu_a, cov_a = _moments(feats_a)
    mu_b, cov_b = _moments(feats_b)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root).real)


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    radii = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start : start + chunk], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each point: does it lie inside some ball (centre, radius)?"""
    inside = []
    for start in range(0, points.shape[0], chunk):
        d = torch.cdist(points[start : start + chunk], centres)
        inside.append((d <= radii.view(1, -1)).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray,
                     k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real`` feature sets."""
    real = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if min(real.shape[0], fake.shape[0]) <= k:
        raise UserInputError(f"Precision/recall with k = {k} needs more than {k} samples in each set.")
    precision = _covered(fake, real, _kth_neighbour_radius(real, k)).double().mean()
    recall = _covered(real, fake, _kth_neighbour_radius(fake, k)).double().mean()
    return float(precision), float(recall)
