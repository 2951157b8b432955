"""The one L2 PGD attack (``explorer.adversarial``): what adversarial training is for — a classifier trained on
its points leans on the feature that survives a small change, so its input gradient points along it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from explorer.adversarial import l2_pgd


def _data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: a robust feature (margin 1, noisy: right ≈ 95 % of the time) and a tiny one that is always
    right (margin 0.1: any change of length 0.1 flips it) — the situation of a net that reads unseen patterns."""
    y = torch.randint(0, 2, (n,), generator=gen)
    sign = y.float() * 2 - 1
    robust = sign + 0.6 * torch.randn(n, generator=gen)
    tiny = sign * 0.1
    return torch.stack([robust, tiny], dim=1), y


def _train(eps: float, seed: int = 0) -> torch.nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(2, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        x, y = _data(128, gen)
        x = l2_pgd(model, x, y, eps, 3)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def _robust_share(model: torch.nn.Linear) -> float:
    """|cos| between the direction that separates the two classes and the robust feature's axis."""
    w = (model.weight[1] - model.weight[0]).detach()
    return float(w[0].abs() / w.norm())


def test_adversarial_training_leans_on_the_feature_that_survives_and_resists_the_attack():
    plain, robust = _train(0.0), _train(0.3)
    assert _robust_share(plain) < 0.5  # the tiny, always-right feature carries the plain model
    assert _robust_share(robust) > 0.9  # trained on the attack's points, the robust feature carries it
    gen = torch.Generator().manual_seed(99)
    x, y = _data(2000, gen)
    with torch.enable_grad():
        attacked_plain, attacked_robust = l2_pgd(plain, x, y, 0.3, 10), l2_pgd(robust, x, y, 0.3, 10)
    with torch.no_grad():
        clean_plain = float((plain(x).argmax(1) == y).float().mean())
        under_attack_plain = float((plain(attacked_plain).argmax(1) == y).float().mean())
        under_attack_robust = float((robust(attacked_robust).argmax(1) == y).float().mean())
    assert clean_plain > 0.97 and under_attack_plain < 0.8  # right nearly everywhere, and easily tipped
    assert under_attack_robust > under_attack_plain + 0.1  # measured 0.88 vs 0.74


def test_the_attack_stays_in_its_ball_repeats_and_leaves_the_weights_alone():
    model = _train(0.0)
    gen = torch.Generator().manual_seed(5)
    x, y = _data(64, gen)
    with torch.enable_grad():
        once, again = l2_pgd(model, x, y, 0.3, 4), l2_pgd(model, x, y, 0.3, 4)
    assert torch.equal(once, again)  # no random start
    radius = (once - x).norm(dim=1)
    assert float(radius.max()) <= 0.3 + 1e-5 and float(radius.min()) > 0.29
    fresh = torch.nn.Linear(2, 2)
    with torch.enable_grad():
        l2_pgd(fresh, x, y, 0.3, 2)
    assert all(p.grad is None for p in fresh.parameters())
    assert l2_pgd(model, x, y, 0.0, 3) is x
