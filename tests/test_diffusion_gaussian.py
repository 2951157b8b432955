"""Gaussian diffusion core (explorer/diffusion/gaussian.py) and the distribution measures (quality.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explorer.diffusion.gaussian import GaussianDiffusion, discretized_gaussian_log_likelihood, kept_steps
from explorer.diffusion.quality import frechet_distance, frechet_distance_sqrtm, precision_recall
from explorer.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("k", [1, 10, 25, 50, 1000])
def test_respacing_keeps_the_kept_steps_alpha_bar(schedule, k):
    full = GaussianDiffusion.from_schedule(schedule, 1000, "learned_range")
    spaced = full.respaced(k)
    assert spaced.num_steps == k and int(spaced.timesteps[-1]) == 999  # the last step is always kept
    assert bool((spaced.timesteps[1:] > spaced.timesteps[:-1]).all())
    torch.testing.assert_close(spaced.alphas_cumprod, full.alphas_cumprod[spaced.timesteps], rtol=1e-10, atol=1e-15)
    # β recomputed from the kept ᾱ: 1 − ᾱ_i / ᾱ_{i−1}, so the chain of kept steps is a diffusion of its own
    torch.testing.assert_close(torch.cumprod(1 - spaced.betas, 0), spaced.alphas_cumprod, rtol=1e-10, atol=1e-15)
    again = spaced.respaced(max(1, k // 2))  # respacing a respaced diffusion maps through to training steps
    torch.testing.assert_close(again.alphas_cumprod, full.alphas_cumprod[again.timesteps], rtol=1e-10, atol=1e-15)
    with pytest.raises(UserInputError):
        full.respaced(1001)


def test_kept_steps_are_even_and_include_both_ends():
    assert kept_steps(1000, 10).tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert kept_steps(4, 4).tolist() == [0, 1, 2, 3]


def test_cosine_schedule_is_improved_ddpms():
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008, β clipped at 0.999."""
    T = 1000
    gd = GaussianDiffusion.from_schedule("squaredcos_cap_v2", T)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert float(gd.alphas_cumprod[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert float(gd.betas.max()) == pytest.approx(0.999)


def test_fixed_variances_are_the_posterior_and_beta():
    gd = GaussianDiffusion.from_schedule("linear", 50)
    x = torch.zeros(1, 1, 2, 2)
    out = torch.zeros_like(x)
    small = gd.predict(out, x, 10).log_variance
    large = gd.with_variance("fixed_large").predict(out, x, 10).log_variance
    assert float(small) == pytest.approx(math.log(float(gd.posterior_variance[10])))
    assert float(large) == pytest.approx(math.log(float(gd.betas[10])))
    learned = gd.with_variance("learned_range")
    both = torch.cat([out, torch.full_like(x, 1.0)], 1)  # r = 1 → v = 1 → Σ = β
    assert float(learned.predict(both, x, 10).log_variance.mean()) == pytest.approx(float(large))
    both = torch.cat([out, torch.full_like(x, -1.0)], 1)  # r = −1 → Σ = β̃
    assert float(learned.predict(both, x, 10).log_variance.mean()) == pytest.approx(float(small))


def test_discretised_decoder_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_var in ((0.3, -2.0), (0.99, -14.0), (-1.0, -20.0), (0.0, 4.0)):
        p = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=torch.float64),
                                                torch.tensor(log_var, dtype=torch.float64)).exp()
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero_and_of_shifted_gaussians_is_the_squared_shift():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(20000, 4, generator=gen, dtype=torch.float64)
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-9
    shifted = frechet_distance(a, b + mu)
    assert shifted == pytest.approx(float(mu @ mu), rel=0.02)  # |μ|² = 5.25
    assert abs(frechet_distance(a, b)) < 0.02  # same distribution: sampling error only
    # more samples: closer to |μ|² (the estimate converges)
    small = [abs(frechet_distance(a[i:i + 200], b[i:i + 200] + mu) - 5.25) for i in range(0, 4000, 200)]
    assert np.mean(small) > abs(shifted - 5.25)
    assert shifted == pytest.approx(frechet_distance_sqrtm(a, b + mu), rel=1e-8)  # scipy's sqrtm agrees


def test_precision_and_recall_tell_realism_from_variety():
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(1000, 3, generator=gen)
    same = torch.randn(1000, 3, generator=gen)
    collapsed = torch.randn(1000, 3, generator=gen) * 0.2  # realistic but not varied
    far = torch.randn(1000, 3, generator=gen) + 6.0  # neither
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.3
    p, r = precision_recall(real, far)
    assert p < 0.05 and r < 0.05
