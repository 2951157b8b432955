"""Issue 23 in a real browser (Debian's Chromium via Playwright, one app server): each page opens, runs its
main action with small settings, and shows what a user should see — units captioned by their own numbers,
downloads named unit-0007, images at a whole multiple of their size, log axes labelled at decades only,
messages that say what happened."""

from __future__ import annotations

import math
import re

from tests.browser import browser_page, require_chromium, running_app, wait_for_count

LOADED = "async img => { if (!img.complete || !img.naturalWidth) await img.decode()"  # then the body of the function
DECADE = re.compile(r"^(1e[+-]\d+|0\.0*1|1|10*)$")


def _set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True).first  # the page's main form comes first (later tabs reuse labels)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(300)


def _click(page, text: str) -> None:
    page.locator(f"[data-testid=stButton] button:has-text('{text}')").first.click()


def _download_name(page, locator) -> str:
    with page.expect_download() as info:
        locator.click()
    return info.value.suggested_filename


def _log_tick_labels(page, chart: int) -> list[str]:
    plot = page.locator("[data-testid=stPlotlyChart]").nth(chart)
    plot.locator(".ytick text").first.wait_for()
    return [t for t in plot.locator(".ytick text").all_text_contents() if t.strip()]


def test_every_page_shows_what_a_user_should_see(tmp_path):
    require_chromium()
    env = {"EXPLORER_CACHE_DIR": str(tmp_path / "cache")}  # an empty user store: the gallery serves the atlas
    with running_app(env) as url, browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # feature visualisation: units 7 and 2 are called unit 7 and unit 2, files unit-0007.png
        page.goto(f"{url}/feature_vis?layer=blocks.3&unit=7,2&steps=2&size=48")
        # first load: the model
        page.wait_for_selector("[data-testid=stButton] button:has-text('Render')", timeout=300_000)
        _click(page, "Render")
        page.get_by_text(re.compile(r"^unit 7 · activation -?\d")).wait_for()
        page.get_by_text(re.compile(r"^unit 2 · activation -?\d")).wait_for()
        assert page.get_by_text(re.compile(r"^#0 ·")).count() == 0, "no batch positions as names"
        images = page.locator("[data-testid=stImage] img")
        assert wait_for_count(images, 2) >= 2
        natural, shown = images.first.evaluate(
            LOADED + "; return [img.naturalWidth, img.getBoundingClientRect().width]; }")
        assert natural == 5 * 48 and shown <= natural + 0.5, "a 48-px render shown ×5, never stretched past that"
        buttons = page.locator("[data-testid=stDownloadButton] button:has-text('PNG')")
        assert _download_name(page, buttons.first) == "efficientnet_lite0_unit-0007.png"

        # the gallery's unit view: the atlas thumbnail at a whole multiple, a full-size render on offer
        page.goto(f"{url}/gallery?model=efficientnet_lite0&layer=blocks.10&unit=7")
        page.get_by_text("Unit 7 · blocks.10 · efficientnet_lite0").wait_for()
        page.get_by_text("thumbnail, 96 px shown ×4", exact=False).wait_for()
        assert wait_for_count(
            page.locator("[data-testid=stButton] button:has-text('Render at full size (224 px')"), 1) >= 1
        main = page.locator("[data-testid=stDownloadButton] button:has-text('WEBP')").first
        assert _download_name(page, main) == "efficientnet_lite0_blocks.10_unit-0007.webp"
        page.goto(f"{url}/gallery?model=efficientnet_lite0&layer=blocks.10&unit=999")
        page.get_by_text("Unit 999 is out of range for blocks.10: valid units are 0–111.").wait_for()

        # inversion: the error chart's log axis labels decades only
        page.goto(f"{url}/inversion")
        page.wait_for_selector("[data-testid=stButton] button:has-text('Invert')")
        _set_number(page, "Size (px)", 48)
        _set_number(page, "Steps", 2)
        _click(page, "Invert")
        page.get_by_text("What each layer remembers", exact=False).wait_for()
        ticks = _log_tick_labels(page, 0)
        assert ticks and all(DECADE.match(t.replace("−", "-")) for t in ticks), ticks

        # fooling noise: the histogram's log axis labels decades only
        page.goto(f"{url}/fooling")
        page.wait_for_selector("[data-testid=stButton] button:has-text('Sweep')")
        _set_number(page, "Samples per family", 8)
        _set_number(page, "Batch", 8)
        _click(page, "Sweep")
        page.get_by_text(re.compile(r"^32 samples in")).wait_for()
        ticks = _log_tick_labels(page, 1)
        assert ticks and all(DECADE.match(t) for t in ticks), ticks
        values = [float(t) for t in ticks]
        assert all(math.isclose(math.log10(v), round(math.log10(v)), abs_tol=1e-9) for v in values)

        # diffusion: a short chain; one sample's x_t | x̂0 | ε large, metrics in plain words
        page.goto(f"{url}/diffusion")
        page.wait_for_selector("[data-testid=stButton] button:has-text('Sample')")
        _set_number(page, "Steps", 4)
        _set_number(page, "Samples", 2)
        _click(page, "Sample")
        page.get_by_text("Probe's confidence on the starting noise").wait_for()
        page.get_by_text(re.compile(r"^x̂0 at t=\d+$")).first.wait_for()
        big = page.locator("[data-testid=stImage] img").first
        assert big.evaluate(LOADED + "; return img.naturalWidth; }") == 280, "a 28-px state shown x10"

        # audio: the synthesiser's "noise" start says what it is
        page.goto(f"{url}/audio")
        page.wait_for_selector("[data-testid=stButton] button:has-text('Dream')")
        start = page.get_by_role("combobox", name="Start from")
        assert start.input_value() == "noise → random synthesiser settings", start.input_value()
        assert page.locator("[data-testid=stException]").count() == 0
        assert not errors, errors
