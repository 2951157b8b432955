"""One attack for adversarial training: L2 projected gradient ascent (Madry et al. 2018).

Used by every trainer that asks for a robust classifier — the noise-aware image guides
(``diffusion.noisy_classifier``) and the keyword nets (``audio.wordstrain``, on the log-mel). A classifier
trained on these points changes its mind only where the input changes in a way it can see, so its input
gradients point at what the class looks (or sounds) like rather than at small unseen patterns (Santurkar et
al. 2019; Kawar et al. 2022): what a dream or a guide ascends.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def l2_pgd(logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor,
           eps: float, steps: int) -> torch.Tensor:
    """``x`` moved, inside an L2 ball of radius ``eps`` per example (over all dimensions but the first), to
    raise the cross-entropy of ``labels`` under ``logits_of``: gradient ascent from the clean point with
    normalised steps of 2.5·eps/steps, projected back onto the ball after each. Deterministic (no random
    start), so a training step stays a pure function of (seed, step); the model's parameters get no
    gradient from it. ``eps`` ≤ 0 returns ``x`` itself."""
    if eps <= 0:
        return x
    x = x.detach()
    shape = (-1, *[1] * (x.dim() - 1))
    alpha = 2.5 * eps / steps
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(logits_of(x + delta), labels)
        (grad,) = torch.autograd.grad(loss, delta)
        step = delta.detach() + alpha * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        radius = step.flatten(1).norm(dim=1).view(shape)
        delta = (step * (eps / radius.clamp_min(eps))).requires_grad_(True)
    return (x + delta).detach()
