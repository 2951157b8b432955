"""Class-conditional diffusion and classifier-free guidance (Ho & Salimans 2022): the conditional UNet starts as the
DDPM it is fine-tuned from, learns to use its label, mixes told and null outputs by hand, and is refused where
it cannot work."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from explorer.diffusion.data import ImageDataset, fashion_available, load_digits
from explorer.diffusion.guidance import Condition, Denoiser, guidance_sweep, guided_samples
from explorer.diffusion.models import ClassConditionalUNet, DiffusionModel, load_diffusion_model
from explorer.diffusion.train import (
    DDPMConfig, _batch_for_step, build_unet, init_from_pretrained, make_scheduler, train_ddpm,
)
from explorer.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(block_out_channels=(16, 32), layers_per_block=1, attention=False, norm_num_groups=8)
LINEAR = dict(make_scheduler("linear").config)


def test_a_conditional_unet_started_from_a_ddpm_is_that_ddpm_for_every_label(tmp_path):
    """The class embedding starts at zero, so fine-tuning begins from the unconditional model exactly."""
    torch.manual_seed(0)
    plain = build_unet(DDPMConfig(**TINY), 8).eval()
    plain.save_pretrained(tmp_path / "plain", safe_serialization=True)
    told = build_unet(DDPMConfig(**TINY, num_classes=3), 8).eval()
    init_from_pretrained(told, tmp_path / "plain")
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([5, 200, 600, 999])
    with torch.no_grad():
        expected = plain(x, t).sample
        for label in range(4):  # 3 classes and the null label
            got = told(x, t, class_labels=torch.full((4,), label)).sample
            assert torch.allclose(got, expected, atol=1e-6)


def _labelled_images(n: int = 50) -> ImageDataset:
    """8×8 images whose pixels spell their label (label / 10), so a batch's labels can be read off its images."""
    labels = torch.arange(n) % 4
    images = (labels.float() / 10).view(-1, 1, 1, 1).expand(n, 1, 8, 8).clone()
    return ImageDataset(images, labels, ["a", "b", "c", "d"], "test")


def test_a_conditional_runs_batches_carry_their_labels_and_a_null_share_and_leave_old_batches_alone():
    data = _labelled_images()
    plain, told = DDPMConfig(**TINY), DDPMConfig(**TINY, num_classes=4, class_dropout=0.25)
    nulls = total = 0
    for step in range(40):
        x, t, noise, labels = _batch_for_step(data, plain, step, 1000)
        x2, t2, noise2, labels2 = _batch_for_step(data, told, step, 1000)
        assert labels is None  # an unconditional run's batches are what they always were
        assert torch.equal(x, x2) and torch.equal(t, t2) and torch.equal(noise, noise2)
        spelled = ((x2[:, 0, 0, 0] + 1) / 2 * 10).round().long()
        kept = labels2 != 4
        assert torch.equal(labels2[kept], spelled[kept])
        nulls, total = nulls + int((~kept).sum()), total + len(labels2)
    from explorer.stats import clopper_pearson

    low, high = clopper_pearson(nulls, total, confidence=0.999)
    assert low < 0.25 < high


def test_a_conditional_model_learns_to_use_its_label(tmp_path):
    """After 600 steps on sklearn's digits the told label lowers the ε error of held-out digits against a wrong label
    and against the null label (paired over images, z > 8), and the folder loads as a conditional model whose plain
    call is its null label."""
    config = DDPMConfig(steps=600, batch_size=32, lr=3e-3, warmup=20, ema_decay=0.99, checkpoint_every=10_000,
                        num_classes=10, class_dropout=0.2, **TINY)
    train_ddpm(load_digits("train"), tmp_path / "cdigits", config, resume=False, device="cpu", log_every=100)
    model = load_diffusion_model(str(tmp_path / "cdigits"), device="cpu")
    assert model.num_classes == 10 and "class-conditional (10 classes" in model.describe()
    z_wrong, z_null = label_gain_z(model, load_digits("test"), (200, 300, 400))
    assert z_wrong > 8 and z_null > 8


def label_gain_z(model: DiffusionModel, data: ImageDataset, timesteps: tuple[int, ...]) -> tuple[float, float]:
    """How much the true label lowers a conditional model's ε error on ``data`` noised at ``timesteps`` (fixed
    draws): the paired z of (error told a wrong label − error told the truth) and of (error with no label − error
    told the truth). No label must be the null label."""
    gen = torch.Generator().manual_seed(0)
    x0 = (data.images * 2 - 1).repeat(len(timesteps), 1, 1, 1)
    truth = data.labels.repeat(len(timesteps))
    t = torch.tensor(timesteps).repeat_interleave(len(data))
    noise = torch.randn(x0.shape, generator=gen)
    wrong = (truth + torch.randint(1, model.num_classes, truth.shape, generator=gen)) % model.num_classes
    x_t = make_scheduler("linear").add_noise(x0, noise, t)

    def error(labels=None):
        with torch.no_grad():
            out = model.unet(x_t, t) if labels is None else model.unet(x_t, t, class_labels=labels)
        return (out.sample - noise).pow(2).flatten(1).mean(1)

    def z(d):
        return float(d.mean() / d.std() * len(d) ** 0.5)

    told, null = error(truth), error()
    assert torch.equal(null, error(torch.full_like(truth, model.num_classes)))
    return z(error(wrong) - told), z(null - told)


class LabelUNet(torch.nn.Module):
    """A stand-in conditional UNet (2 classes + null): ε = 0.1·(label + 1), and a variance output r = label / 10."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(in_channels=1, sample_size=8, num_class_embeds=3)

    def forward(self, sample, timestep, class_labels):
        level = class_labels.float().view(-1, 1, 1, 1)
        return SimpleNamespace(sample=torch.cat([0.1 * (level + 1) + 0 * sample, level / 10 + 0 * sample], 1))


def _label_denoiser() -> Denoiser:
    config = LINEAR | {"variance_type": "learned_range"}
    model = DiffusionModel("labels", ClassConditionalUNet(LabelUNet()), config, torch.device("cpu"), "memory")
    return Denoiser(model, 10)


def test_free_guidance_mixes_the_told_and_null_eps_by_hand_and_keeps_the_told_variance():
    denoiser = _label_denoiser()
    x, classes = torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])
    eps_told = torch.tensor([0.1, 0.2]).view(-1, 1, 1, 1)
    eps_null = 0.3
    assert torch.allclose(denoiser.model_output(x, 4)[:, :1], torch.full_like(x, eps_null))  # no condition: null
    told = denoiser.model_output(x, 4, Condition(classes))
    assert torch.allclose(told[:, :1], eps_told.expand_as(x))
    assert torch.allclose(told[:, 1:], (classes / 10).view(-1, 1, 1, 1).expand_as(x))
    for w in (0.5, 3.0):
        mixed = denoiser.model_output(x, 4, Condition(classes, w))
        assert torch.allclose(mixed[:, :1], ((1 + w) * eps_told - w * eps_null).expand_as(x), atol=1e-6)
        assert torch.allclose(mixed[:, 1:], told[:, 1:])  # Σ stays the told one's


def test_free_guidance_is_refused_where_it_cannot_work():
    from explorer.diffusion.judge import Judge  # noqa: F401  (the sweep's judge is never reached)

    plain = Denoiser(DiffusionModel("plain", build_unet(DDPMConfig(**TINY), 8).eval(), LINEAR, torch.device("cpu"),
                                    "memory"), 4)
    with pytest.raises(UserInputError, match="class-conditional model"):
        guided_samples(plain, None, [0, 1], scale=0.0, free_weight=1.0)
    told = _label_denoiser()
    with pytest.raises(UserInputError, match="out of range: labels was trained on 2 classes"):
        guided_samples(told, None, [0, 2], scale=0.0)
    with pytest.raises(UserInputError, match="needs the model to be told"):
        guided_samples(told, None, [0, 1], scale=0.0, free_weight=1.0, told=False)
    with pytest.raises(UserInputError, match="weight must lie in"):
        guided_samples(told, None, [0, 1], scale=0.0, free_weight=float("nan"))
    with pytest.raises(UserInputError, match="Unknown guidance 'both'"):
        guidance_sweep(told, None, None, classes=[0], scales=[1], guidance="both")
    with pytest.raises(UserInputError, match="calls no classifier"):
        guidance_sweep(told, None, None, classes=[0], scales=[1], guidance="free", guide_from=500)
    with pytest.raises(UserInputError, match="class-conditional model"):
        guidance_sweep(plain, None, None, classes=[0], scales=[0, 1], guidance="free")
    with pytest.raises(UserInputError, match="needs a noise-aware classifier"):
        guidance_sweep(told, None, None, classes=[0], scales=[0, 1])


def test_told_and_untold_samples_differ_and_the_untold_ones_are_the_null_labels():
    """Same seed: told=False samples the null label (what the reference pool uses); told samples differ from them."""
    denoiser = _label_denoiser()
    untold = guided_samples(denoiser, None, [0, 1], scale=0.0, sampler="ddim", seed=3, told=False)
    told = guided_samples(denoiser, None, [0, 1], scale=0.0, sampler="ddim", seed=3)
    assert untold.settings["told_class"] is False and told.settings["told_class"] is True
    assert not torch.allclose(untold.images, told.images)
    null = guided_samples(denoiser, None, [1, 1], scale=0.0, sampler="ddim", seed=3, told=False)
    assert torch.equal(untold.images, null.images)  # the target class plays no part when the model is not told


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST IDX files absent (CI installs them)")
def test_cli_free_guidance_sweep_records_its_weights_and_refuses_mixed_options(tmp_path):
    from explorer.cli import main

    torch.manual_seed(0)
    unet = build_unet(DDPMConfig(block_out_channels=(16, 32), attention=False, num_classes=10), 28)
    with torch.no_grad():
        unet.class_embedding.weight.normal_()
    folder = tmp_path / "cmodel"
    unet.save_pretrained(folder, safe_serialization=True)
    make_scheduler("linear").save_pretrained(folder)
    out = tmp_path / "sweep"
    argv = ["--device", "cpu", "diffusion", "guide", "--model", str(folder), "--sweep", "--guidance", "free",
            "--scales", "0,2", "--classes", "0,1", "--n", "2", "--steps", "2", "--threads", "1",
            "--reference-pool", "4", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["settings"]["guidance"] == "free" and data["settings"]["classifier"] is None
    assert [e["scale"] for e in data["summary"]] == [0.0, 2.0]
    assert data["reference"]["pool"] == 4
    assert main(argv + ["--free-weight", "1"]) == 2  # a sweep's weights are its scales
    assert main(argv[:6] + ["--guidance", "free", "--n", "2", "--out", str(out)]) == 2  # free needs --sweep
    single = ["--device", "cpu", "diffusion", "guide", "--free-weight", "1", "--n", "2", "--steps", "2",
              "--out", str(tmp_path / "one")]
    assert main(single) == 2  # the shipped DDPM is unconditional
    assert main(single[:-1] + [str(tmp_path / "one"), "--model", str(folder), "--scale", "0"]) == 0
    settings = json.loads((tmp_path / "one" / "guide.json").read_text())["settings"]
    assert settings["free_weight"] == 1.0 and settings["told_class"] is True


def test_a_sweep_is_judged_on_another_models_yardstick_and_pooled_with_its_scale_zero_ratio():
    """with_yardstick: the FD ratios are recomputed on another sweep's reference (another model is allowed, another
    seed is not); pooled_over_seeds carries the ratio to the same class at scale 0."""
    from explorer.diffusion.guidance import _summarise, pooled_over_seeds, with_yardstick

    def sweep(seed: int, model: str, fds: dict[float, list[float]], reference: list[float] | None = None) -> dict:
        rows = [{"scale": s, "class": c, "n": 4, "hits": 4, "rate": 1.0, "diversity": 1.0, "fd": fd}
                for s, per_class in fds.items() for c, fd in enumerate(per_class)]
        settings = {"model": model, "judge": "j", "sampler": "ddim", "steps": 50, "eta": 0.0, "seed": seed,
                    "n_per_class": 4}
        ref = None if reference is None else {"pool": 40, "n_per_class": 4, "rows": [
            {"class": c, "used": 4, "fd": fd} for c, fd in enumerate(reference)]}
        return {"settings": settings, "rows": rows, "summary": _summarise(rows, sorted(fds)), "reference": ref}

    told = [sweep(k, "cddpm", {0.0: [2.0, 4.0], 1.0: [3.0, 4.0 + k]}, reference=[100.0, 100.0]) for k in (0, 1)]
    plain = [sweep(k, "ddpm", {0.0: [50.0, 50.0]}, reference=[2.0, 2.0 * (k + 1)]) for k in (0, 1)]
    judged = [with_yardstick(t, p) for t, p in zip(told, plain)]
    one = {e["scale"]: e for e in judged[1]["summary"]}[1.0]
    assert one["fd_ratio_to_unguided_named_mean"] == pytest.approx((3.0 / 2.0 + 5.0 / 4.0) / 2, abs=1e-3)
    assert judged[1]["reference_model"] == "ddpm"
    pooled = {r["scale"]: r for r in pooled_over_seeds(judged)}
    assert pooled[1.0]["fd_ratio_to_s0_per_seed"] == [pytest.approx(1.25), pytest.approx(1.375)]
    assert "fd_ratio_to_s0_mean" not in pooled[0.0]
    with pytest.raises(UserInputError, match="seed: 1, not 0"):
        with_yardstick(told[0], plain[1])


def _tiny_conditional_folder(folder) -> str:
    torch.manual_seed(0)
    unet = build_unet(DDPMConfig(block_out_channels=(16, 32), attention=False, num_classes=10), 28)
    with torch.no_grad():
        unet.class_embedding.weight.normal_()
    unet.save_pretrained(folder, safe_serialization=True)
    make_scheduler("linear").save_pretrained(folder)
    return str(folder)


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST IDX files absent (CI installs them)")
def test_page_offers_the_free_weight_and_a_free_sweep_for_a_conditional_model(root, tmp_path):
    from streamlit.testing.v1 import AppTest

    folder = _tiny_conditional_folder(tmp_path / "cmodel")
    at = AppTest.from_file(str(root / "explorer/ui/pages/diffusion.py"), default_timeout=240)
    at.run()
    assert not at.exception
    assert not [w for w in at.number_input if w.key == "imag_guide_free"]  # the shipped DDPM is unconditional
    at.selectbox(key="diff_model").set_value("folder…").run()
    at.text_input(key="diff_folder").set_value(folder).run()
    assert not at.exception and not at.error
    at.number_input(key="imag_guide_free").set_value(2.0)
    at.number_input(key="imag_guide_n").set_value(2)
    at.number_input(key="imag_guide_steps").set_value(2)
    at.button(key="imag_guide_go").click().run()
    assert not at.exception and not at.error
    result = at.session_state["imag_guide_result"]
    assert result.settings["free_weight"] == 2.0 and result.settings["told_class"] is True and result.scale == 0.0
    at.radio(key="imag_guide_sw_kind").set_value("free")
    at.multiselect(key="imag_guide_sw_scales").set_value([0.0, 2.0])
    at.multiselect(key="imag_guide_sw_classes").set_value([0])
    at.number_input(key="imag_guide_sw_n").set_value(2)
    at.number_input(key="imag_guide_sw_steps").set_value(2)
    at.button(key="imag_guide_sw_go").click().run()
    assert not at.exception and not at.error
    sweep = at.session_state["imag_guide_sweep"]
    assert sweep.settings["guidance"] == "free" and sweep.settings["classifier"] is None
    assert [row["scale"] for row in sweep.summary] == [0.0, 2.0]


def test_the_class_embedding_moves_class_lr_scale_times_faster(tmp_path):
    """Adam's first step moves every parameter with a gradient by its learning rate: 10× for the class embedding."""
    config = DDPMConfig(steps=1, warmup=1, lr=1e-3, batch_size=8, checkpoint_every=1, num_classes=4,
                        class_lr_scale=10.0, **TINY)
    with pytest.raises(UserInputError, match="learning-rate scale"):
        DDPMConfig(num_classes=4, class_lr_scale=0.0)
    train_ddpm(_labelled_images(), tmp_path / "run", config, resume=False, device="cpu")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    table = state["model"]["class_embedding.weight"]
    assert table.abs().max() == pytest.approx(1e-2, rel=1e-3)  # started at zero
    torch.manual_seed(0)
    start = build_unet(DDPMConfig(num_classes=4, **TINY), 8).state_dict()
    moved = (state["model"]["conv_in.weight"] - start["conv_in.weight"]).abs().max()
    assert moved == pytest.approx(1e-3, rel=1e-2)


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST IDX files absent (CI installs them)")
def test_shipped_conditional_model_uses_its_label_and_records_its_recipe():
    """``fashion_cddpm``: told the true class, its ε error on held-out test images is lower than told a wrong one or
    none (paired over 1 200 noised images, z > 5); its record says how it was made."""
    from explorer.diffusion.data import load_fashion_mnist
    from explorer.diffusion.models import BUILTIN

    record = json.loads((BUILTIN["fashion_cddpm"] / "training.json").read_text())
    config = record["config"]
    assert (config["init_from"], config["num_classes"], config["class_lr_scale"], record["steps_done"]) == \
        ("fashion_ddpm", 10, 10.0, 5000)
    model = load_diffusion_model("fashion_cddpm", device="cpu")
    assert model.num_classes == 10
    z_wrong, z_null = label_gain_z(model, load_fashion_mnist("test").subset(slice(0, 400)), (200, 350, 500))
    assert z_wrong > 5 and z_null > 5


def test_odd_class_embeddings_are_refused_with_a_message(tmp_path):
    """A folder whose class embedding is not a label table (diffusers' 'timestep' kind) or holds no class beside
    the null label is refused by name, not half-loaded."""
    import diffusers

    for name, kwargs, message in (("kind", {"class_embed_type": "timestep"}, "not supported"),
                                  ("one", {"num_class_embeds": 1}, "needs a class and the null label")):
        unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                     layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8, **kwargs)
        unet.save_pretrained(tmp_path / name, safe_serialization=True)
        with pytest.raises(UserInputError, match=message):
            load_diffusion_model(str(tmp_path / name), device="cpu")


def test_labels_outside_the_classes_are_refused_before_training(tmp_path):
    data = _labelled_images()
    data.labels[3] = 7  # a damaged label file: 4 class names, a label 7
    with pytest.raises(UserInputError, match="labels run 0…7"):
        train_ddpm(data, tmp_path / "run", DDPMConfig(steps=1, num_classes=4, **TINY), resume=False, device="cpu")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
