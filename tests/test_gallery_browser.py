"""The real app in a browser: a gallery permalink opens the unit view of EfficientNet-Lite0 blocks.10, and
the overview's and the grid's images are links (overview -> layer -> unit)."""

from __future__ import annotations

import torch

from explorer.gallery import GalleryStore, build, ensure_examples, folder_image_set
from explorer.images import load_image, save_png
from explorer.optvis import FAST
from tests.browser import browser_page, require_chromium, running_app, wait_for_count

SETTINGS = FAST.with_(size=32, steps=1)  # tiny renders: the test is about the page, not the pictures


def test_permalink_opens_unit_view_in_browser(tmp_path, lite0):
    require_chromium()
    photos = tmp_path / "photos"
    for name in ("chelsea", "coffee"):
        save_png(load_image(f"builtin:{name}"), photos / f"{name}.png")
    store = GalleryStore(tmp_path / "cache" / "gallery")
    torch.set_num_threads(2)
    build(lite0, "blocks.10", [3], SETTINGS, store=store)  # facets/negative: see the AppTest (tiny net)
    ensure_examples(lite0, ["blocks.10"], folder_image_set(photos), store)

    query = f"model=efficientnet_lite0&layer=blocks.10&unit=3&size=32&steps=1&images={photos}"
    # ?images= must lie inside
    env = {"EXPLORER_CACHE_DIR": str(tmp_path / "cache"), "EXPLORER_IMAGE_ROOT": str(tmp_path)}
    with running_app(env) as url, browser_page() as page:
        page.goto(f"{url}/gallery?{query}")
        page.get_by_text("Unit 3 · blocks.10 · efficientnet_lite0").wait_for()
        page.locator("[data-testid=stPlotlyChart]").first.wait_for()
        images = page.locator("[data-testid=stImage] img, [data-testid=stFullScreenFrame] img")
        assert wait_for_count(images, 1 + 4) >= 1 + 4, "visualisation and photo patches"
        assert "unit=3" in page.url and "layer=blocks.10" in page.url, "the address bar stays a permalink"
        page.screenshot(path=str(tmp_path / "gallery_unit.png"), full_page=True)
        page.get_by_text("Open in Feature visualisation").click()
        page.wait_for_url("**/feature_vis?**")
        assert "unit=3" in page.url and "layer=blocks.10" in page.url
        page.wait_for_selector("[data-testid=stButton] button:has-text('Render')")

        # the overview: a click on blocks.10's row opens the layer; a click on unit 3's image opens the unit
        page.goto(f"{url}/gallery?model=efficientnet_lite0&size=32&steps=1")
        row = page.locator("a.gal-tile[href*='layer=blocks.10']")
        assert wait_for_count(row, 8) == 8, "blocks.10 is a row of 8 sample units"
        row.first.click()
        page.wait_for_url("**layer=blocks.10**")
        tile = page.locator("a.gal-tile[href*='unit=3'] img")
        assert wait_for_count(tile, 1) == 1, "the grid shows unit 3's image"
        assert "unit=" not in page.url
        tile.click()
        page.wait_for_url("**unit=3**")
        page.get_by_text("Unit 3 · blocks.10 · efficientnet_lite0").wait_for()
