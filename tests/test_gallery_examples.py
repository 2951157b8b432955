"""Dataset examples: ranking and positions on nets whose activations are known exactly."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from explorer.gallery import (
    GalleryStore,
    ensure_examples,
    example_patch,
    folder_image_set,
    load_examples,
    receptive_field,
    top_examples,
)
from explorer.images import save_png
from explorer.models import LoadedModel

INTENSITIES = [0.3, 0.9, 0.5, 0.7, 0.4]  # red level of the spot in image i
SPOTS = [(4, 20), (10, 6), (24, 24), (16, 12), (2, 2)]  # top-left (y, x) of each 4×4 spot


class PixelNet(nn.Module):
    """layer "pixels" = the input itself (a 1×1 identity conv): unit c at (y, x) is colour c of that pixel."""

    def __init__(self):
        super().__init__()
        self.pixels = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.pixels.weight.copy_(torch.eye(3)[:, :, None, None])
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.pixels(x).mean((2, 3)))


def _pixel_model() -> LoadedModel:
    return LoadedModel(name="pixels", module=PixelNet(), preprocess=nn.Identity(),
                       labels=["a", "b"], input_size=(32, 32),
                       device=torch.device("cpu"), weights="fixed")


def _spot_folder(folder):
    for i, (level, (y, x)) in enumerate(zip(INTENSITIES, SPOTS)):
        image = torch.full((3, 32, 32), 0.2)
        image[:, y : y + 4, x : x + 4] = torch.tensor([level, 0.0, 0.0])[:, None, None]
        save_png(image, folder / f"img{i}.png")
    return folder


def test_top_examples_rank_views_by_their_peak_and_crop_around_it(tmp_path):
    model = _pixel_model()
    image_set = folder_image_set(_spot_folder(tmp_path / "photos"))
    assert len(image_set) == 10  # each image and its mirror
    store = GalleryStore(tmp_path / "store")
    table = ensure_examples(model, ["pixels"], image_set, store)["pixels"]
    red_max = table["max"][::2, 0]  # unflipped views
    np.testing.assert_allclose(red_max, [int(v * 255 + 0.5) / 255 for v in INTENSITIES], atol=1e-6)
    np.testing.assert_allclose(table["max"][:, 1], 0.2, atol=2e-3)  # green: background everywhere
    examples = top_examples(table, unit=0, k=5, per_source=1)
    order = [int(e.view.source.rsplit("img", 1)[1][0]) for e in examples]
    assert order == list(np.argsort(INTENSITIES)[::-1]), "views must be ranked by the unit's maximum"
    for example in examples:
        i = int(example.view.source.rsplit("img", 1)[1][0])
        y, x = SPOTS[i]
        if example.view.flip:
            x = 32 - 4 - x
        assert y <= example.position[0] < y + 4 and x <= example.position[1] < x + 4, "peak position is on the spot"
        patch = example_patch(example, model.input_size, out_size=None)
        assert patch.shape[-1] == int(table["rf"]) and float(patch[0].max()) > INTENSITIES[i] - 0.01, \
            "the crop holds the spot"
    # computed once: a second call reads the store, and a new store instance sees the same table
    assert load_examples(model, "pixels", image_set, GalleryStore(tmp_path / "store")) is not None
    again = ensure_examples(model, ["pixels"], image_set, GalleryStore(tmp_path / "store"))["pixels"]
    np.testing.assert_array_equal(again["argmax"], table["argmax"])


class StackNet(nn.Module):
    """Five 5×5 convolutions with positive weights: theoretical receptive field 21 px, every pixel of it counts."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 5, padding=2) for i in range(5)])
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.uniform_(0.1, 1.0)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.convs(x).mean((2, 3)))


def test_receptive_field_matches_the_theory_when_all_mass_counts():
    model = LoadedModel(name="stack", module=StackNet(), preprocess=nn.Identity(),
                        labels=["a", "b"], input_size=(64, 64),
                        device=torch.device("cpu"))
    assert receptive_field(model, "convs.4", mass=1.0 - 1e-9) == 21
    assert receptive_field(model, "convs.1", mass=1.0 - 1e-9) == 16  # 9 px, shown at the minimum patch size
    assert receptive_field(model, "convs.4", mass=0.5) < 21, "the effective field is smaller than the theoretical one"
