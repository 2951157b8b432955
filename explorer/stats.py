"""Intervals for rates: the one place the project's binomial statistics live.

Fooling sweeps, the transfer judges, the diffusion judge and the audio controls all report a rate
k/n with an exact interval; they import it from here so there is one formula to check.
"""

from __future__ import annotations


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a binomial proportion k/n: never narrower than it should be."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must lie in [0, n={n}].")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper
