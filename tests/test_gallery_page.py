"""AppTest of the Layer gallery page on the tiny net with a pre-built store (EXPLORER_CACHE_DIR)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from explorer.gallery import MAX, NEG, GalleryStore, build, builtin_image_set, ensure_examples, facets_variant, lookup
from explorer.models import ModelSpec, register
from explorer.optvis import RenderSettings
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


def grid_html(at: AppTest) -> str:
    """The layer grid's tiles (one st.html element: each image is a link to its unit)."""
    bodies = [h.proto.body for h in at.get("html") if "gal-grid" in h.proto.body or "gal-row" in h.proto.body]
    assert len(bodies) == 1
    return bodies[0]


def test_grid_images_are_the_links_and_missing_units_build_in_the_background(monkeypatch, root, tiny_store):
    from explorer.gallery.jobs import current_job

    cache, model, store = tiny_store
    at = _app(monkeypatch, root, cache)
    at.run()
    assert not at.exception and not at.error
    body = grid_html(at)
    assert body.count("<img") == 12 and body.count("not rendered") == 4, "12 stored units show, 4 are missing"
    stored = lookup(store, model, "conv2", TINY_SETTINGS)
    assert f"#5 · {stored[5].activation:.2f}</a>" in body, "tiles carry unit number and stored activation"
    assert 'href="?model=tiny&amp;layer=conv2&amp;unit=5&amp;size=32&amp;steps=2"' in body, \
        "the image links to its unit"
    assert not any(b.label.startswith("Open #") for b in at.button), "no separate Open buttons"
    at.button(key="gal_build_missing").click().run()
    assert not at.exception
    job = current_job(model, "conv2", TINY_SETTINGS)
    assert job is not None and job.units == [12, 13, 14, 15]
    assert job.wait(60) and job.error is None and job.done == job.total == 4
    at.run()
    assert grid_html(at).count("<img") == 16 and "not rendered" not in grid_html(at)
    assert sorted(lookup(store, model, "conv2", TINY_SETTINGS)) == list(range(16))
    assert not any(b.key == "gal_build_missing" for b in at.button), "nothing left to build"


def test_search_by_unit_number_opens_the_unit(monkeypatch, root, tiny_store):
    cache, _, _ = tiny_store
    at = _app(monkeypatch, root, cache)
    at.run()
    at.number_input(key="gal_search_conv2").set_value(7).run()
    assert not at.exception
    assert at.query_params["unit"] in ("7", ["7"]) and at.header[0].value.startswith("Unit 7")


def test_without_a_layer_the_page_opens_on_the_model_overview(monkeypatch, root, tiny_store):
    cache, _, _ = tiny_store
    at = _app(monkeypatch, root, cache)
    del at.query_params["layer"]
    at.run()
    assert not at.exception and not at.error
    body = grid_html(at)
    for layer, units in (("conv1", 8), ("conv2", 16), ("conv3", 16)):
        link = f'href="?model=tiny&amp;layer={layer}&amp;size=32&amp;steps=2" target="_self">{layer}</a>'
        assert f"{link} · {units} units" in body
    assert body.count('class="gal-row"') == 3, "every layer as a row of sample units"
    assert body.count("<img") >= 8, "conv2's stored units show in its row"


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
    message = at.success[0].value  # what was rendered, in words and images (was "Rendered 2 in …")
    assert not at.exception and message.startswith("Rendered unit 4: negative and 4 facets (5 images) in "), message
    assert len(at.get("image")) == 1 + 4 + 1 + 8, "facets and negative of unit 4 now show"
    # the large image is the thumbnail until the unit is rendered at full size, on demand
    assert at.get("image")[0].proto.imgs[0].caption.startswith("thumbnail, 32 px")
    at.button(key="gal_render_full").click().run()
    assert not at.exception and at.success[0].value.startswith("Rendered unit 4 at full size: visualisation (1 image)")
    full = lookup(store, model, "conv2", RenderSettings(size=32), MAX, [4])
    assert 4 in full, "kept in the store under the full-size settings"
    assert at.get("image")[0].proto.imgs[0].caption.startswith(f"full size, 32 px, {RenderSettings().steps} steps")
    assert not any(b.key == "gal_render_full" for b in at.button), "nothing left to render"
    assert (lookup(store, model, "conv2", TINY_SETTINGS, NEG, [4])[4].activation
            < lookup(store, model, "conv2", TINY_SETTINGS, MAX, [4])[4].activation)
    at.button(key="gal_back").click().run()
    assert "unit" not in at.query_params and grid_html(at).count("<img") >= 12


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
    register(ModelSpec("tiny_weights", "Tiny test net",
                       lambda weights, device: dataclasses.replace(model, weights=weights),
                       default_layer="conv2", family="imagenet", default_weights=model.weights))
    at = _app(monkeypatch, root, cache, model="tiny_weights", unit="3", weights=other)
    at.run()
    assert not at.exception and not at.error
    assert f"weights={other}" in at.code[0].value, "the permalink names the weights"
    assert at.query_params["weights"] in (other, [other])
    at = _app(monkeypatch, root, cache, model="tiny_weights", unit="3")
    at.run()
    assert "weights=" not in at.code[0].value, "the default weights keep links short"
