"""The shipped atlas (explorer/gallery/atlas.py): export from a store, read-only lookup under the user's store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explorer.gallery import GalleryStore, all_layers, build, builtin_image_set, lookup, top_examples
from explorer.gallery.atlas import find_atlas
from explorer.gallery.examples import load_examples
from explorer.gallery.export import export_atlas
from tests.gallery_helpers import TINY_SETTINGS
from tests.tiny import tiny_model


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    """conv1–conv3 of the tiny net rendered into a store, then exported as an atlas."""
    root = tmp_path_factory.mktemp("atlas")
    model = tiny_model()
    store = GalleryStore(root / "store")
    for layer in all_layers(model):
        build(model, layer, None, TINY_SETTINGS, store=store, batch=16)
    image_set = builtin_image_set()
    manifest = export_atlas(store, model, all_layers(model), TINY_SETTINGS, root / "atlas", image_set=image_set,
                            build_info={"command": "test", "seconds": 1.0})
    return root, model, store, manifest, image_set


def test_export_writes_a_compact_complete_atlas(tiny_atlas):
    root, model, store, manifest, image_set = tiny_atlas
    folder = root / "atlas" / "tiny"
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["fingerprint"] == model.fingerprint and manifest["digest"] == TINY_SETTINGS.digest()
    assert {k: v["units"] for k, v in manifest["layers"].items()} == {"conv1": 8, "conv2": 16, "conv3": 16}
    webps = sorted(folder.glob("conv*/*.webp"))
    assert len(webps) == 40 and all(p.read_bytes()[8:12] == b"WEBP" for p in webps)
    pngs = sum(e.file.stat().st_size for layer in manifest["layers"]
               for e in lookup(store, model, layer, TINY_SETTINGS).values())
    assert sum(p.stat().st_size for p in webps) < pngs, "WebP thumbnails are smaller than the store's PNGs"
    stored = lookup(store, model, "conv2", TINY_SETTINGS)
    assert manifest["layers"]["conv2"]["activations"] == [round(stored[u].activation, 4) for u in range(16)]


def test_an_atlas_with_holes_is_refused(tiny_atlas, tmp_path):
    _, model, _, _, _ = tiny_atlas
    store = GalleryStore(tmp_path / "store")
    build(model, "conv1", range(4), TINY_SETTINGS, store=store)
    with pytest.raises(ValueError, match="4 of 8 units are not rendered"):
        export_atlas(store, model, ["conv1"], TINY_SETTINGS, tmp_path / "atlas")


def test_the_atlas_serves_only_its_weights_and_settings(tiny_atlas):
    root, model, _, _, _ = tiny_atlas
    atlas = find_atlas(model, root / "atlas")
    assert atlas is not None and atlas.settings == TINY_SETTINGS
    assert find_atlas(tiny_model(seed=1), root / "atlas") is None, "other weights: no atlas"
    assert atlas.serves(model, TINY_SETTINGS) and not atlas.serves(model, TINY_SETTINGS.with_(steps=3))
    assert not atlas.serves(model, TINY_SETTINGS, variant="neg")


def test_the_users_store_takes_precedence_unit_by_unit(tiny_atlas, tmp_path):
    root, model, _, _, _ = tiny_atlas
    atlas = find_atlas(model, root / "atlas")
    before = {p: p.stat().st_mtime_ns for p in (root / "atlas").rglob("*")}
    mine = GalleryStore(tmp_path / "mine")
    assert lookup(mine, model, "conv2", TINY_SETTINGS) == {}, "without the atlas an empty store is empty"
    shipped = lookup(mine, model, "conv2", TINY_SETTINGS, atlas=atlas)
    assert sorted(shipped) == list(range(16)) and all(e.file.suffix == ".webp" for e in shipped.values())
    # other settings: no effect on the atlas view
    build(model, "conv2", [2, 5], TINY_SETTINGS.with_(seed=1), store=mine)
    build(model, "conv2", [2, 5], TINY_SETTINGS, store=mine)
    merged = lookup(mine, model, "conv2", TINY_SETTINGS, atlas=atlas)
    assert sorted(merged) == list(range(16))
    assert {u for u, e in merged.items() if e.file.suffix == ".png"} == {2, 5}, "the user's own renders win"
    assert list(lookup(mine, model, "conv2", TINY_SETTINGS, units=[1, 2], atlas=atlas)) == [1, 2]
    assert {p: p.stat().st_mtime_ns for p in (root / "atlas").rglob("*")} == before, "the atlas is never written"


def test_shipped_example_tables_rank_like_the_stores(tiny_atlas):
    root, model, store, _, image_set = tiny_atlas
    atlas = find_atlas(model, root / "atlas")
    shipped = atlas.examples("conv3", image_set.digest)
    full = load_examples(model, "conv3", image_set, store)
    assert shipped is not None and atlas.examples("conv3", "another-set") is None
    np.testing.assert_allclose(shipped["max"], full["max"], rtol=2e-3, atol=2e-3)  # float16
    assert np.array_equal(shipped["argmax"], full["argmax"])
    for unit in range(16):
        a, b = top_examples(shipped, unit, k=4), top_examples(full, unit, k=4)
        assert ([e.box for e in a] == [e.box for e in b]
                or [e.activation for e in a] == pytest.approx([e.activation for e in b], abs=5e-3))


def test_the_page_opens_ready_on_the_atlas(tiny_atlas, monkeypatch, root, tmp_path):
    """A fresh user store: the overview, a layer grid and a unit (with its dataset examples) all come from the atlas."""
    from streamlit.testing.v1 import AppTest

    from explorer.models import ModelSpec, register

    atlas_root, model, _, _, _ = tiny_atlas
    register(ModelSpec("tiny", "Tiny test net", lambda weights, device: model, default_layer="conv2", family="imagenet",
                       default_weights=model.weights))
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "fresh"))
    monkeypatch.setenv("EXPLORER_ATLAS_DIR", str(atlas_root / "atlas"))

    def page(**query) -> AppTest:
        at = AppTest.from_file(str(root / "explorer/ui/pages/gallery.py"), default_timeout=60)
        at.query_params["model"] = "tiny"
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
        assert not at.exception and not at.error
        return at

    at = page()
    assert at.number_input(key="gal_size").value == 32 and at.number_input(key="gal_steps").value == 2, \
        "the sidebar starts on the atlas's settings"
    overview = next(h.proto.body for h in at.get("html") if "gal-row" in h.proto.body)
    assert overview.count("<img") == 8 + 8 + 8 and "not rendered" not in overview
    assert "steps=" not in overview, "links stay short: the atlas's settings are the defaults"
    grid = next(h.proto.body for h in page(layer="conv3").get("html") if "gal-grid" in h.proto.body)
    assert grid.count("<img") == 16 and "data:image/webp;base64," in grid
    unit = page(layer="conv3", unit="4")
    assert unit.header[0].value == "Unit 4 · conv3 · tiny"
    assert len(unit.get("image")) == 1 + 8, "the visualisation and the 8 photo patches"
    assert not any(b.key == "gal_examples" for b in unit.button), "the example table ships with the atlas"


def test_a_layer_ending_in_relu6_is_optimised_before_it(tmp_path):
    """A unit negative everywhere on the grey start gets no gradient through ReLU6 (EfficientNet-Lite0's
    stem and head rendered flat grey): the gallery optimises the module before the activation instead."""
    import torch
    from torch import nn

    from explorer.gallery import objective_layer
    from explorer.models import LoadedModel
    from explorer.optvis import objectives, render

    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6())
    with torch.no_grad():
        head[1].bias.fill_(-20.0)  # every unit far below zero on any image in [0, 1] at the start
    module = nn.Sequential(head, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = LoadedModel(name="dead", module=module, preprocess=nn.Identity(),
                        labels=["a", "b", "c"], input_size=(32, 32))
    assert objective_layer(model, "0") == "0.1" and objective_layer(model, "0.0") == "0.0"
    settings = TINY_SETTINGS.with_(steps=8)
    stuck = render(model, objectives.channel("0", [0, 1]), settings)
    assert stuck.final_activation.tolist() == [0.0, 0.0], "through the ReLU6 nothing moves"
    store = GalleryStore(tmp_path / "store")
    build(model, "0", [0, 1], settings, store=store)
    before = render(model, objectives.channel("0.1", [0, 1]), settings.with_(steps=0)).final_activation
    after = [e.activation for e in lookup(store, model, "0", settings).values()]
    assert all(a > b for a, b in zip(after, before.tolist())), "before the activation the unit climbs"


def test_the_shipped_lite0_atlas_is_complete_compact_and_served(tmp_path):
    """The atlas in assets/atlas ships with the project: every unit of every main layer of the real
    EfficientNet-Lite0 weights at the gallery's thumbnail settings, readable images, example tables for the
    built-in photos, under 25 MB, and the gallery's lookup serves it for the default model."""
    from PIL import Image

    from explorer.gallery import THUMBNAILS
    from explorer.gallery.atlas import ATLAS_ROOT
    from explorer.models import load_model

    model = load_model("efficientnet_lite0")
    atlas = find_atlas(model, ATLAS_ROOT)
    assert atlas is not None, "assets/atlas/efficientnet_lite0 is missing or was built on other weights"
    assert atlas.serves(model, THUMBNAILS)
    layers = all_layers(model)
    assert atlas.layers == layers
    for layer in layers:
        n = model.layer_shapes[layer][0]
        assert atlas.units(layer) == n
        acts = np.array(atlas.manifest["layers"][layer]["activations"], dtype=float)
        # the renders excite their units (a few stem units are dead: negative on every image they can make)
        assert np.isfinite(acts).all() and (acts > 0).mean() > 0.8, layer
        files = sorted((atlas.root / layer).glob("*.webp"))
        assert [f.name for f in files] == [f"{u:05d}.webp" for u in range(n)]
        with Image.open(files[int(acts.argmax())]) as image:
            assert image.size == (THUMBNAILS.size, THUMBNAILS.size)
            assert np.asarray(image.convert("L"), dtype=float).std() > 5  # not a flat grey tile
    total = sum(f.stat().st_size for f in atlas.root.rglob("*") if f.is_file())
    assert total < 25 * 2**20
    image_set = builtin_image_set()
    table = atlas.examples("blocks.10", image_set.digest)
    assert table is not None and table["max"].shape == (len(image_set), model.layer_shapes["blocks.10"][0])
    mine = GalleryStore(tmp_path / "mine")
    entries = lookup(mine, model, "blocks.10", THUMBNAILS, atlas=atlas)
    assert sorted(entries) == list(range(model.layer_shapes["blocks.10"][0]))


def test_a_legacy_keyed_atlas_is_not_served_until_its_weights_are_checked_and_it_is_rekeyed(tiny_atlas, tmp_path):
    """Issue 20: an atlas keyed on the old partial fingerprint is never served; the migration re-keys it only
    when the weights' legacy fingerprint matches, and refuses other weights."""
    import shutil

    from explorer.errors import UserInputError
    from explorer.gallery.migrate import rekey_atlas
    from explorer.models.base import FINGERPRINT_SCHEME, legacy_fingerprint_module

    root, model, _, manifest, _ = tiny_atlas
    shutil.copytree(root / "atlas", tmp_path / "atlas")
    folder = tmp_path / "atlas" / "tiny"
    old = {**manifest, "fingerprint": legacy_fingerprint_module(model.module)}
    (folder / "manifest.json").write_text(json.dumps(old))
    assert find_atlas(model, tmp_path / "atlas") is None, "legacy-keyed: not served"
    with pytest.raises(UserInputError, match="built on other weights"):
        rekey_atlas(folder, tiny_model(seed=1))
    assert find_atlas(model, tmp_path / "atlas") is None
    rekeyed = rekey_atlas(folder, model)
    assert rekeyed["fingerprint"] == model.fingerprint and rekeyed["fingerprint_scheme"] == FINGERPRINT_SCHEME
    assert rekeyed["rekeyed"]["from"] == old["fingerprint"]
    assert find_atlas(model, tmp_path / "atlas") is not None
