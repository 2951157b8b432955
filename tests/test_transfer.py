import pytest
import torch
from torch import nn

from explorer.models import LoadedModel
from explorer.models.judges import judge_class_images
from explorer.stats import clopper_pearson


class LookupJudge(nn.Module):
    """Image i is the constant grey level (i + 0.5) / 32; the judge answers row i of a fixed logit table."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x.mean(dim=(1, 2, 3)) * 32 - 0.5).round().long()
        return self.table[index]


def lookup_judge(name: str, classes: list[int], ranks: list[int], size: int) -> LoadedModel:
    """A judge that ranks image i's class exactly ranks[i] (0 = first choice) among 20 classes."""
    table = torch.zeros(32, 20)  # rows past the images answer the model's own grey dry run
    for i, (cls, rank) in enumerate(zip(classes, ranks)):
        others = [c for c in range(20) if c != cls]
        order = others[:rank] + [cls] + others[rank:]
        table[i, order] = torch.linspace(10, 0, 20)
    return LoadedModel(name, LookupJudge(table), nn.Identity(), [f"c{i}" for i in range(20)], (size, size))


def test_judges_rates_and_intervals_on_a_synthetic_case():
    classes = [3, 7, 7, 0, 19, 5, 12, 3, 8, 1]
    images = torch.stack([torch.full((3, 16, 16), (i + 0.5) / 32) for i in range(len(classes))])
    ranks_a = [0, 0, 0, 2, 2, 4, 4, 5, 9, 19]  # top-1: 3, top-5: 7
    ranks_b = [1] * 10  # top-1: 0, top-5: 10
    # judge B works at 24 px: the 16-px images are resized to its input size first (constant images survive it)
    a, b = judge_class_images(images, classes, [lookup_judge("a", classes, ranks_a, 16),
                                                lookup_judge("b", classes, ranks_b, 24)],
                              batch_size=4)
    assert (a.model, a.n, a.top1, a.top5, a.ranks) == ("a", 10, 3, 7, ranks_a)
    assert (b.top1, b.top5, b.ranks) == (0, 10, ranks_b)
    assert a.top1_interval == clopper_pearson(3, 10) and a.top5_interval == clopper_pearson(7, 10)
    assert b.top1_interval[0] == 0 and b.top5_interval[1] == 1
    assert a.top1_rate == pytest.approx(0.3) and b.top5_rate == 1.0
    assert a.p_class[0] > a.p_class[-1]
    with pytest.raises(ValueError, match="classes"):
        judge_class_images(images, classes[:-1], [lookup_judge("a", classes, ranks_a, 16)])


def test_lite_family_fills_the_fooling_transfer_table(lite_family):
    from explorer import fooling

    others, skipped = fooling.transfer_models(lite_family["efficientnet_lite0"])
    assert {"efficientnet_lite1", "efficientnet_lite2"} <= {m.name for m in others}  # (other tests may register more)
    assert all(row["status"].startswith("unavailable") for row in skipped)  # torchvision/Lucent: no weights offline
    image = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    others = [m for m in others if m.name.startswith("efficientnet")]
    table = fooling.transfer_table(image, 309, [lite_family["efficientnet_lite0"], *others], skipped)
    ok = [row for row in table if row["status"] == "ok"]
    assert [row["model"] for row in ok] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(0 <= row["p_target"] <= 1 for row in ok)


def test_a_judge_of_the_family_with_other_classes_is_skipped_with_its_reason(monkeypatch):
    """A model registered in the source's family but with another head (a user's 10-class net called "imagenet")
    cannot judge class 281: it is listed as unavailable, not asked (which raised an IndexError)."""
    from explorer.models import judges

    source = lookup_judge("source", [0], [0], 16)  # 20 classes
    small = LoadedModel("ten", nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), nn.Identity(),
                        [f"c{i}" for i in range(10)], (16, 16))
    same = lookup_judge("same", [0], [0], 16)
    monkeypatch.setattr(judges, "_offline_candidates", lambda name, device: ((small, same), ()))
    found, skipped = judges.transfer_models(source)
    assert [m.name for m in found] == ["same"]
    assert skipped == [{"model": "ten", "weights": "pretrained",
                        "status": "unavailable: it has 10 classes, source has 20"}]
