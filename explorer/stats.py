"""Intervals for rates: the one place the project's binomial statistics live.

Fooling sweeps, the transfer judges, the diffusion judge and the audio controls all report a rate
k/n with an exact interval; paired comparisons of two models on the same items use the exact McNemar
test, and means over items a percentile bootstrap. They import them from here so there is one formula
to check.
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


def exact_mcnemar(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p for two models judged on the same items, from the discordant pairs: items only
    model a gets right, and items only model b gets right (a binomial test of only_a vs only_b at ½)."""
    from math import comb

    if only_a < 0 or only_b < 0:
        raise ValueError(f"Discordant counts must be ≥ 0, not {only_a} and {only_b}.")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mean_bootstrap_interval(values, repeats: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (one value per item: an image, a paired
    difference), resampling items with a seeded generator. (0, 1) when there is nothing to resample."""
    import torch

    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    n = values.numel()
    if n == 0:
        return 0.0, 1.0
    gen = torch.Generator().manual_seed(seed)
    means = values[torch.randint(0, n, (repeats, n), generator=gen)].mean(1)
    a = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return low, high
