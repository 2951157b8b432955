"""AppTest of the Feature visualisation page (real EfficientNet-Lite0, tiny settings)."""

from streamlit.testing.v1 import AppTest


def page(root):
    at = AppTest.from_file(str(root / "explorer/ui/pages/feature_vis.py"), default_timeout=180)
    at.run()
    assert not at.exception
    return at


def tiny_settings(at):
    at.number_input(key="fv_steps").set_value(3)
    at.number_input(key="fv_size").set_value(48)


def recorded_downloads(monkeypatch) -> list[str]:
    """File names of the page's download buttons (AppTest's protos do not carry them)."""
    import streamlit

    names, original = [], streamlit.download_button

    def download_button(label, data, file_name=None, *args, **kwargs):
        names.append(file_name)
        return original(label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", download_button)
    return names


def test_render_shows_images_with_activations(root, monkeypatch):
    downloads = recorded_downloads(monkeypatch)
    at = page(root)
    at.selectbox(key="fv_layer").set_value("blocks.6")
    tiny_settings(at)
    at.text_input(key="fv_units").set_value("7,2")
    at.button(key="fv_go").click().run()
    assert not at.exception and not at.error
    captions = [img.proto.imgs[0].caption for img in at.get("image")]  # AppTest's node type is "image"
    assert "blocks.6" in at.subheader[0].value
    result = at.session_state["fv_result"]
    assert result.images.shape == (2, 3, 48, 48)
    assert result.steps_done == 3
    assert len(at.get("plotly_chart")) == 1
    activations = result.final_activation.tolist()
    # one captioned image per unit, called by its own number (not its place in the batch)
    assert captions == [f"unit {u} · activation {a:.3f}" for u, a in zip((7, 2), activations)]
    assert {"efficientnet_lite0_unit-0007.png", "efficientnet_lite0_unit-0002.png"} <= set(downloads), downloads


def test_bad_units_show_errors_not_tracebacks(root):
    at = page(root)
    tiny_settings(at)
    at.text_input(key="fv_units").set_value("500")
    at.button(key="fv_go").click().run()
    assert not at.exception
    assert "out of range" in at.error[0].value and "0–111" in at.error[0].value
    at.text_input(key="fv_units").set_value("three")
    at.button(key="fv_go").click().run()
    assert not at.exception and "Cannot read units" in at.error[0].value


def test_query_params_prefill_the_page(root):
    at = AppTest.from_file(str(root / "explorer/ui/pages/feature_vis.py"), default_timeout=180)
    at.query_params["layer"] = "blocks.3"
    at.query_params["unit"] = "7"
    at.query_params["steps"] = "40"
    at.query_params["size"] = "oops"
    at.run()
    assert at.number_input(key="fv_steps").value == 40
    from explorer.optvis import RenderSettings

    assert at.number_input(key="fv_size").value == RenderSettings().size  # unreadable: the default
    assert at.selectbox(key="fv_layer").value == "blocks.3"
    assert at.text_input(key="fv_units").value == "7"


def test_class_objective_lists_class_names(root):
    at = page(root)
    at.radio(key="fv_kind").set_value("class").run()
    at.text_input(key="fv_classes").set_value("281").run()
    assert any("tabby" in c.value for c in at.caption)


def test_class_render_shows_what_independent_judges_say(root):
    at = page(root)
    at.radio(key="fv_kind").set_value("class").run()
    tiny_settings(at)
    at.text_input(key="fv_classes").set_value("281,309").run()
    at.button(key="fv_go").click().run()
    assert not at.exception and not at.error
    classes, verdicts = at.session_state["fv_judges"]
    assert classes == [281, 309]
    assert [v.model for v in verdicts][:3] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    table = at.dataframe[0].value
    assert list(table["class"]) == ["281 tabby", "309 bee"]
    assert "efficientnet_lite0 (optimised)" in table.columns and "efficientnet_lite2" in table.columns
    assert all(cell.startswith("rank ") for cell in table["efficientnet_lite2"])
