"""AppTest of the "Fooling noise" page on EfficientNet-Lite0, with tiny settings."""

from __future__ import annotations

import pytest

from explorer import fooling

PAGE = "explorer/ui/pages/fooling.py"


@pytest.fixture
def app(root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(root / PAGE), default_timeout=300)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_sweeps_and_shows_rates_matching_the_library(app, lite0):
    app.multiselect(key="fool_sweep_families").set_value(["uniform", "stripes"])
    app.number_input(key="fool_sweep_n").set_value(6)
    app.number_input(key="fool_sweep_batch").set_value(4)
    app.button(key="fool_sweep_go").click().run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    table = app.dataframe[0].value
    assert list(table["family"]) == ["Uniform", "Stripes / checkerboards"] and list(table["n"]) == [6, 6]
    direct = fooling.sweep(lite0, ["uniform", "stripes"], 6, batch_size=6)
    for i, row in enumerate(direct.rows):
        lo, hi = row.intervals[0]
        assert table["≥ 0.5"][i] == f"{row.rates[0]:.4f} [{lo:.4f}, {hi:.4f}]"  # same samples, other batch size
    labels = [b.label for b in app.get("download_button")]
    assert "Download CSV" in labels and any(l.startswith("Download JSON") for l in labels)
    assert labels.count("Gallery PNG") == 2
    assert len(app.get("plotly_chart")) >= 2
    from tests.test_inversion_page import assert_log_axis_labels_decades

    assert_log_axis_labels_decades(app.get("plotly_chart")[1], "yaxis")  # the histogram: decades only


def test_page_grows_and_reports_distance(app):
    app.number_input(key="fool_grow_steps").set_value(2)
    app.checkbox(key="fool_grow_transfer").set_value(False)
    assert app.checkbox(key="fool_grow_use_top").value, "the start's top class by default, as on the command line"
    app.checkbox(key="fool_grow_use_top").set_value(False)
    app.button(key="fool_grow_go").click().run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    heading = [s.value for s in app.subheader if "class 309" in s.value]
    assert heading and "after 2 steps" in heading[0]
    metrics = {m.label: m.value for m in app.metric}
    assert float(metrics["L∞ from start"]) <= 0.05 + 1e-3 and float(metrics["L∞ from start"]) > 0
    labels = [b.label for b in app.get("download_button")]
    assert {"start.png", "fooling.png", "difference.png", "Download result JSON"} <= set(labels)
