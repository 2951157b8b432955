"""The Diffusion inspector's imagination sections (AppTest, tiny settings) and the shipped noise-aware classifier."""

from __future__ import annotations

import json

import pytest

from explorer.diffusion.data import fashion_available, load_fashion_mnist

needs_fashion = pytest.mark.skipif(
    not fashion_available(), reason="Fashion-MNIST IDX files absent: install Debian's dataset-fashion-mnist (CI does)"
)
pytestmark = [pytest.mark.usefixtures("one_thread"), needs_fashion]


def test_shipped_noisy_classifier_is_accurate_when_clean_and_degrades_with_noise():
    """The shipped weights, judged on held-out images (the first 1000, another noise draw): what its config.json
    claims per t range, within sampling error."""
    from explorer.diffusion.noisy_classifier import BUILTIN, accuracy_by_t, load_noisy_classifier
    from explorer.diffusion.train import make_scheduler

    model = load_noisy_classifier("fashion_noisy_cnn", "cpu")
    config = json.loads((BUILTIN["fashion_noisy_cnn"] / "config.json").read_text())
    claimed = {row["t_from"]: row["accuracy"] for row in config["training"]["test_accuracy_by_t"]}
    test = load_fashion_mnist("test").subset(slice(0, 1000))
    abar = make_scheduler("linear").alphas_cumprod.float()
    rows = {row["t_from"]: row["accuracy"] for row in accuracy_by_t(model.module, test, abar, seed=99)}
    assert rows[0] > 0.8 and rows[900] < 0.35  # accurate on clean images, near chance in pure noise
    assert all(rows[a] >= rows[b] - 0.03 for a, b in zip(list(rows)[1:], list(rows)[2:]))  # degrades with t
    for t_from, acc in rows.items():  # another noise draw: the claim holds within sampling error (sd ≈ 0.016)
        assert abs(acc - claimed[t_from]) < 0.05, (t_from, acc, claimed[t_from])


def test_page_sections_guide_imagine_inpaint_and_branch(root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(root / "explorer/ui/pages/diffusion.py"), default_timeout=240)
    at.run()
    assert not at.exception and not at.error
    # guidance: 2 samples of "Trouser" with 3 steps; the judge's verdicts are under the images
    at.selectbox(key="imag_guide_class").set_value(1)
    at.number_input(key="imag_guide_n").set_value(2)
    at.number_input(key="imag_guide_steps").set_value(3)
    at.number_input(key="imag_guide_until").set_value(300)  # truncated guidance reaches the library
    at.number_input(key="imag_guide_from").set_value(700)  # and so does the guidance interval
    assert at.number_input(key="imag_guide_stop_at").value == 1.0  # the confidence gate is off by default
    at.number_input(key="imag_guide_stop_at").set_value(0.9)  # and reaches the library when set
    at.button(key="imag_guide_go").click().run()
    assert not at.exception and not at.error
    result = at.session_state["imag_guide_result"]
    assert result.images.shape == (2, 1, 28, 28) and result.classes == [1, 1]
    assert result.settings["guide_until"] == 300 and result.settings["guide_from"] == 700
    assert result.settings["stop_at_confidence"] == 0.9
    assert any("p(Trouser)" in (img.proto.imgs[0].caption or "") for img in at.get("image"))
    # sweep: 2 scales × 2 classes × 2 samples, 2 steps: a chart and a table
    at.multiselect(key="imag_guide_sw_scales").set_value([0.0, 2.0])
    at.multiselect(key="imag_guide_sw_classes").set_value([0, 1])
    at.number_input(key="imag_guide_sw_n").set_value(2)
    at.number_input(key="imag_guide_sw_steps").set_value(2)
    at.number_input(key="imag_guide_sw_until").set_value(500)
    at.button(key="imag_guide_sw_go").click().run()
    assert not at.exception and not at.error
    sweep = at.session_state["imag_guide_sweep"]
    assert [row["scale"] for row in sweep.summary] == [0.0, 2.0] and all(row["n"] == 4 for row in sweep.summary)
    assert sweep.settings["guide_until"] == 500 and sweep.settings["guide_from"] is None  # 1000: the whole range
    assert sweep.settings["stop_at_confidence"] is None  # 1: no gate
    # two imaginations: 1 image each, 4 render steps
    at.number_input(key="imag_two_n").set_value(1)
    at.number_input(key="imag_two_rsteps").set_value(4)
    at.number_input(key="imag_two_steps").set_value(3)
    at.button(key="imag_two_go").click().run()
    assert not at.exception and not at.error
    two = at.session_state["imag_two_result"]
    assert two.vis_images.shape == two.diffusion_images.shape == (1, 1, 28, 28)
    # inpainting one test image, 2 completions: known pixels stay the original's
    at.number_input(key="imag_inpaint_k").set_value(2)
    at.number_input(key="imag_inpaint_steps").set_value(3)
    at.button(key="imag_inpaint_go").click().run()
    assert not at.exception and not at.error
    inpainted, label = at.session_state["imag_inpaint_result"]
    assert label == int(load_fashion_mnist("test").labels[0])
    known = ~inpainted.hidden[0, 0]
    assert (inpainted.completions[0, :, 0][:, known] == inpainted.originals[0, 0][known]).all()
    at.number_input(key="imag_inpaint_mr_n").set_value(2)
    at.multiselect(key="imag_inpaint_mr_masks").set_value(["left"])
    at.button(key="imag_inpaint_mr_go").click().run()
    assert not at.exception and not at.error
    assert at.session_state["imag_inpaint_mr_report"].rows[0]["images"] == 2
    # branching: 2 chains × 2 branches, 4 steps: chart + grid
    at.number_input(key="imag_branch_chains").set_value(2)
    at.number_input(key="imag_branch_k").set_value(2)
    at.number_input(key="imag_branch_steps").set_value(4)
    at.button(key="imag_branch_go").click().run()
    assert not at.exception and not at.error
    report = at.session_state["imag_branch_report"]
    assert report.agreement.shape == (2, 11) and (report.agreement[:, -1] == 1).all()
    assert len(at.get("plotly_chart")) >= 2
