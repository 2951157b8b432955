"""AppTest of the Layer gallery page on the tiny net with a pre-built store (EXPLORER_CACHE_DIR)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from explorer.gallery import MAX, NEG, GalleryStore, build, builtin_image_set, ensure_examples, facets_variant, lookup
from explorer.models import ModelSpec, register
from tests.gallery_helpers import TINY_SETTINGS
from tests.tiny import tiny_model

QUERY = {"model": "tiny", "layer": "conv2", "size": str(TINY_SETTINGS.size), "steps": str(TINY_SETTINGS.steps)}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """Units 0–11 of conv2 rendered, unit 3 also with facets and negative, examples on the built-in photos."""
    root = tmp_path_factory.mktemp("cache")
    model = tiny_model()
    register(ModelSpec("tiny", "Tiny test net", lambda weights, device: model, default_layer="conv2", family="imagenet",
                       default_weights=model.weights))
    store = GalleryStore(root / "gallery")
    build(model, "conv2", range(12), TINY_SETTINGS, store=store, batch=12)
    build(model, "conv2", [3], TINY_SETTINGS, store=store, variants=[NEG, facets_variant(4)])
    ensure_examples(model, ["conv2"], builtin_image_set(), store)
    return root, model, store


def _app(monkeypatch, root_dir, cache, **query) -> AppTest:
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(cache))
    at = AppTest.from_file(str(root_dir / "explorer/ui/pages/gallery.py"), default_timeout=120)
    for k, v in {**QUERY, **query}.items():
        at.query_params[k] = v
    return at


def test_grid_shows_stored_units_and_renders_missing_ones_on_demand(monkeypatch, root, tiny_store):
    cache, model, store = tiny_store
    at = _app(monkeypatch, root, cache)
    at.run()
    assert not at.exception and not at.error
    assert len(at.get("image")) == 12, "the 12 stored units show as images"
    assert sum("not rendered" in m.value for m in at.markdown) == 4
    stored = lookup(store, model, "conv2", TINY_SETTINGS)
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert captions[5] == f"#5 · {stored[5].activation:.2f}", "tiles carry unit number and stored activation"
    at.button(key="gal_render_page").click().run()
    assert not at.exception
    assert "Rendered 4" in at.success[0].value
    assert len(at.get("image")) == 16 and not any("not rendered" in m.value for m in at.markdown)
    assert sorted(lookup(store, model, "conv2", TINY_SETTINGS)) == list(range(16))
    at.button(key="gal_open_3").click().run()
    assert at.query_params["unit"] == ["3"] or at.query_params["unit"] == "3"
    assert at.header[0].value.startswith("Unit 3")


def test_permalink_opens_the_unit_view_with_facets_negative_and_examples(monkeypatch, root, tiny_store):
    cache, model, store = tiny_store
    at = _app(monkeypatch, root, cache, unit="3")
    at.run()
    assert not at.exception and not at.error
    assert at.header[0].value == "Unit 3 · conv2 · tiny"
    assert "?model=tiny&layer=conv2&unit=3&size=32&steps=2" in at.code[0].value, "the permalink reproduces the view"
    images = at.get("image")
    assert len(images) == 1 + 4 + 1 + 8, "visualisation, 4 facets, negative, 8 dataset patches"
    assert len(at.get("plotly_chart")) == 1, "activation histogram"
    facet_captions = [img.proto.imgs[0].caption for img in images[1:5]]
    facets = lookup(store, model, "conv2", TINY_SETTINGS, facets_variant(4))[3]
    assert facet_captions == [f"{a:.2f}" for a in facets.activations]
    assert {b.label for b in at.get("download_button")} >= {"PNG", "Download unit JSON", "Download example patches PNG"}
    at.button(key="gal_next").click().run()
    assert at.header[0].value.startswith("Unit 4"), "next unit"
    assert any(b.label == "Render negative + 4 facets" for b in at.button), "unit 4 offers its missing variants"
    at.button(key="gal_render_unit").click().run()
    assert not at.exception and "Rendered 2" in at.success[0].value
    assert len(at.get("image")) == 1 + 4 + 1 + 8, "facets and negative of unit 4 now show"
    assert lookup(store, model, "conv2", TINY_SETTINGS, NEG, [4])[4].activation < lookup(store, model, "conv2", TINY_SETTINGS, MAX, [4])[4].activation
    at.button(key="gal_back").click().run()
    assert "unit" not in at.query_params and len(at.get("image")) >= 12


def test_bad_permalink_unit_is_a_clear_message(monkeypatch, root, tiny_store):
    cache, _, _ = tiny_store
    at = _app(monkeypatch, root, cache, unit="99")
    at.run()
    assert not at.exception
    assert "out of range" in at.error[0].value and "0–15" in at.error[0].value


def test_permalink_carries_a_non_default_weights_choice(monkeypatch, root, tiny_store):
    """A unit of the untrained net must not reopen on the trained one: `weights` travels in the URL.
    (A fresh model name: the registry and the page cache models per name and weights.)"""
    import dataclasses

    cache, model, _ = tiny_store
    other = "pretrained" if model.weights == "random" else "random"
    register(ModelSpec("tiny_weights", "Tiny test net", lambda weights, device: dataclasses.replace(model, weights=weights),
                       default_layer="conv2", family="imagenet", default_weights=model.weights))
    at = _app(monkeypatch, root, cache, model="tiny_weights", unit="3", weights=other)
    at.run()
    assert not at.exception and not at.error
    assert f"weights={other}" in at.code[0].value, "the permalink names the weights"
    assert at.query_params["weights"] in (other, [other])
    at = _app(monkeypatch, root, cache, model="tiny_weights", unit="3")
    at.run()
    assert "weights=" not in at.code[0].value, "the default weights keep links short"
