"""The shipped models and the Diffusion inspector page."""

from __future__ import annotations

import json

import pytest
import torch

from explorer.diffusion.data import fashion_available, load_fashion_mnist
from explorer.diffusion.models import BUILTIN

needs_fashion = pytest.mark.skipif(
    not fashion_available(), reason="Fashion-MNIST IDX files absent: install Debian's dataset-fashion-mnist (CI does)"
)


pytestmark = pytest.mark.usefixtures("one_thread")


@needs_fashion
def test_shipped_classifier_is_at_least_90_percent_accurate_on_the_test_set():
    from explorer.diffusion.train import classifier_accuracy
    from explorer.models import load_model

    model = load_model("fashion_cnn", device="cpu")
    assert model.channels == 1 and model.input_size == (28, 28) and model.fixed_input_size
    assert model.labels[0] == "T-shirt/top" and model.labels[9] == "Ankle boot"
    test = load_fashion_mnist("test")  # never seen in training: all 10 000 held-out images
    assert classifier_accuracy(model, test) >= 0.90
    # the resize/channel adapter: an RGB 56×56 version of the same images gets mostly the same verdicts
    rgb = torch.nn.functional.interpolate(test.images[:200], size=(56, 56), mode="nearest").expand(-1, 3, -1, -1)
    agree = (model.probabilities(rgb).argmax(1) == model.probabilities(test.images[:200]).argmax(1)).float().mean()
    assert agree > 0.9


@needs_fashion
def test_shipped_ddpm_denoises_as_its_training_record_says():
    """The shipped weights, not the committed JSON, are judged: on held-out Fashion-MNIST images the UNet's
    ε-prediction loss is far below that of the same architecture untrained, and matches the loss the
    training record reports for its last window (the record describes these weights)."""
    from explorer.diffusion.models import load_diffusion_model
    from explorer.diffusion.train import DDPMConfig, build_unet, diffusion_loss, make_scheduler

    folder = BUILTIN["fashion_ddpm"]
    model = load_diffusion_model("fashion_ddpm", device="cpu")
    assert model.channels == 1 and model.sample_size == (28, 28) and model.train_schedule == "linear"
    info = json.loads((folder / "training.json").read_text())
    config = DDPMConfig.from_dict(info["config"])
    untrained = build_unet(config, 28, channels=1).eval()
    assert sum(p.numel() for p in untrained.parameters()) == sum(p.numel() for p in model.unet.parameters())
    gen = torch.Generator().manual_seed(0)
    x0 = load_fashion_mnist("test").images[:128] * 2 - 1
    t = torch.randint(0, config.num_train_timesteps, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    scheduler = make_scheduler(config.schedule, config.num_train_timesteps)
    with torch.no_grad():
        trained = float(diffusion_loss(model.unet.eval(), scheduler, x0, t, noise))
        random_init = float(diffusion_loss(untrained, scheduler, x0, t, noise))
    assert trained < 0.2 * random_init, (trained, random_init)
    recorded = info["loss_per_window"][-1]
    assert 0.5 * recorded < trained < 2.0 * recorded, (trained, recorded)


def test_page_samples_scrubs_and_shows_probabilities(root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(root / "explorer/ui/pages/diffusion.py"), default_timeout=400)
    at.run()
    assert not at.exception and not at.error
    at.number_input(key="diff_steps").set_value(12)
    at.number_input(key="diff_batch").set_value(4)
    at.button(key="diff_go").click().run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    noise_p = float(metrics["Probe's confidence on the starting noise"])  # plain words, with a help line
    assert {"Class settles at timestep (median)", "Probe's confidence on the final samples"} <= set(metrics)
    assert all(m.help for m in at.metric)
    # the metric is what it says: the probe's mean top probability on the pure-noise start, recomputed here
    # from the chain's stored x_T (8-bit) by the classifier itself
    from explorer.models import load_model

    record = at.session_state["diff_record"]
    x_T = record.state(0, "x_t")
    expected = float(load_model("fashion_cnn", device="cpu").probabilities(x_T).max(dim=1).values.mean())
    assert abs(noise_p - expected) < 0.03, (noise_p, expected)
    table = at.dataframe[0].value
    assert len(table) == 4 and set(table["final class"]) <= set(
        json.loads((BUILTIN["fashion_ddpm"].parent / "fashion_cnn" / "config.json").read_text())["labels"])
    slider = at.select_slider(key="diff_step")
    assert slider.value == 0
    first = [(img.proto.imgs[0].caption, img.proto.imgs[0].url) for img in at.get("image")[:3]]
    assert [c.split(" at ")[0] for c, _ in first] == ["x_t", "x̂0", "ε"]  # sample 0 large, then every sample
    assert [img.proto.imgs[0].caption.split(" at ")[0] for img in at.get("image")[3:6]] == [
        "x_t of every sample", "x̂0 of every sample", "ε of every sample"]
    assert at.number_input(key="diff_batch").label == "Samples" and "--n" in at.number_input(key="diff_batch").help
    slider.set_value(11).run()  # scrub to the last step: x_t, x̂0 and ε all change
    assert not at.exception
    last = [(img.proto.imgs[0].caption, img.proto.imgs[0].url) for img in at.get("image")[:3]]
    assert all(c.endswith("t=0") for c, _ in last)
    assert all(a[1] != b[1] for a, b in zip(first, last))
    chain_charts = lambda: [c.key for c in at.get("plotly_chart") if c.key in ("diff_fig", "diff_fw_fig")]  # noqa: E731
    assert chain_charts() == ["diff_fig"]  # (the Model quality tab has charts of its own)
    # forward process of a real image
    at.button(key="diff_fw_go").click().run()
    assert not at.exception and not at.error
    assert sorted(chain_charts()) == ["diff_fig", "diff_fw_fig"]
