"""End to end in a real browser: open the running app, render a channel, see the image."""

from tests.browser import browser_page, require_chromium, running_app, wait_for_count


def test_feature_visualisation_renders_in_browser(tmp_path):
    require_chromium()
    with running_app() as url, browser_page() as page:
        page.goto(f"{url}/feature_vis?layer=blocks.3&unit=0-1")
        page.wait_for_selector("[data-testid=stButton] button:has-text('Render')")
        steps = page.get_by_label("Steps", exact=True)
        steps.fill("6")
        steps.press("Enter")
        size = page.get_by_label("Size (px)", exact=True)
        size.fill("48")
        size.press("Enter")
        page.wait_for_timeout(500)
        page.locator("[data-testid=stButton] button:has-text('Render')").click()
        caption = page.get_by_text("activation", exact=False).first
        caption.wait_for()
        images = page.locator("[data-testid=stImage] img, [data-testid=stFullScreenFrame] img")
        assert wait_for_count(images, 2) >= 2
        assert "blocks.3" in page.content()
        page.screenshot(path=str(tmp_path / "feature_vis.png"), full_page=True)
