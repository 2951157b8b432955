"""Image priors as (negative) objectives on the untransformed image: add them with a weight.

``objective - 0.05 * total_variation()``. Each returns a per-image penalty ≥ 0, and is marked
as a prior so reported activations leave it out. Blur is not an objective: it acts on the
parameters every N steps (``render(..., blur_every=N)``).
"""

from __future__ import annotations

import torch

from .objectives import Objective


def tv_value(image: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Mean over pixels of (dx² + dy²)^(β/2): 0 for a constant image, larger for noisier ones."""
    dx = image[..., :-1, 1:] - image[..., :-1, :-1]
    dy = image[..., 1:, :-1] - image[..., :-1, :-1]
    squared = (dx * dx + dy * dy).sum(1)  # sum over channels
    if beta == 2.0:
        value = squared
    else:
        value = (squared + 1e-8).pow(beta / 2.0)
    return value.flatten(1).mean(1)


def total_variation(beta: float = 2.0) -> Objective:
    """Total variation TV^β (Mahendran & Vedaldi 2015) as a penalty."""
    return Objective(lambda ctx: tv_value(ctx.image, beta), name=f"TV^{beta:g}", is_prior=True)


def alpha_norm(alpha: float = 6.0) -> Objective:
    """Mean |x − ½|^α × 2^α, i.e. the α-norm of the image centred on grey and scaled to [−1, 1]."""
    return Objective(
        lambda ctx: (2.0 * (ctx.image - 0.5)).abs().pow(alpha).flatten(1).mean(1), name=f"alpha{alpha:g}", is_prior=True
    )


def l1() -> Objective:
    return Objective(lambda ctx: (ctx.image - 0.5).abs().flatten(1).mean(1), name="L1", is_prior=True)


def l2() -> Objective:
    return Objective(lambda ctx: (ctx.image - 0.5).pow(2).flatten(1).mean(1), name="L2", is_prior=True)


