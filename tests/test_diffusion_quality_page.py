"""The diffusion page's "Model quality" tab (AppTest, tiny settings) and stopping an evaluation."""

from __future__ import annotations

import pytest

from explorer.diffusion.data import fashion_available

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not fashion_available(), reason="needs Debian's dataset-fashion-mnist (CI has it)")]


def test_quality_tab_evaluates_and_shows_the_bound_and_the_curves(root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(root / "explorer/ui/pages/diffusion.py"), default_timeout=180)
    at.run()
    assert not at.exception and not at.error
    # the shipped measurements are shown as recorded in assets/fashion_iddpm/quality.json
    import json

    from explorer.ui.diffusion_quality import MEASURED

    measured = json.loads(MEASURED.read_text())
    bounds = {(r["model"], r["nll"]["variance_type"]): r["nll"]["bits_per_dim"]
              for r in measured["results"] if r.get("nll")}
    shown = [t.value for t in at.dataframe if "bits/dim" in t.value.columns][0]
    assert {(m, v): b for m, v, b in zip(shown["model"], shown["Σ"], shown["bits/dim"])} == bounds
    # small defaults
    assert at.number_input(key="diffq_n").value <= 64 and at.number_input(key="diffq_nll_n").value <= 8
    at.multiselect(key="diffq_models").set_value(["fashion_ddpm"])
    at.multiselect(key="diffq_ks").set_value([10])
    at.number_input(key="diffq_n").set_value(8)
    at.number_input(key="diffq_nll_n").set_value(2)
    at.number_input(key="diffq_nll_steps").set_value(25)
    at.button(key="diffq_go").click().run()
    assert not at.exception and not at.error
    rows = at.session_state["diffq_rows"]
    assert len(rows) == 1 and rows[0]["model"] == "fashion_ddpm" and rows[0]["steps"] == 10 and rows[0]["n"] == 8
    nll = rows[0]["nll"]
    assert nll["n_images"] == 2 and nll["unet_calls_per_image"] == 25 and 0 < nll["bits_per_dim"] < 20
    assert rows[0]["fd"] is not None and rows[0]["fd_floor"] is not None
    tables = [t.value for t in at.dataframe]
    assert any("bits/dim" in t.columns and float(t["bits/dim"].iloc[0]) == nll["bits_per_dim"] for t in tables)
    assert any("FD_cnn" in t.columns and float(t["FD_cnn"].iloc[0]) == rows[0]["fd"] for t in tables)
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("per-step terms" in spec for spec in charts) and any("FD_cnn" in spec for spec in charts)


def test_an_evaluation_stops_when_asked_and_keeps_what_it_finished():
    from explorer.diffusion.evaluation import quality_sweep
    from explorer.diffusion.models import load_diffusion_model
    from explorer.models import load_model
    from explorer.progress import CANCELLED

    model = load_diffusion_model("fashion_ddpm", device="cpu")
    probe = load_model("fashion_cnn", device="cpu")
    calls = []
    results = quality_sweep([model], probe, [4, 6], n=6, batch=3, nll_images=0,
                            callback=lambda done, total, *_: calls.append((done, total)),
                            should_stop=lambda: len(calls) >= 16)
    assert results[-1].stopped == CANCELLED
    assert len(results) == 2 and results[0].stopped is None and results[0].quality.n == 6  # K = 4 finished
    assert results[-1].quality.n < 6
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))  # progress only moves forward
    assert calls[-1][1] == 6 * 4 + 6 * 6
