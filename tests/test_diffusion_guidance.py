"""Classifier guidance: the noise-aware classifier, guided ancestral/DDIM steps against hand computations,
s = 0 equals the unguided core sampler, and the clean judge's figures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from explorer.diffusion.data import fashion_available, load_digits
from explorer.diffusion.gaussian import GaussianDiffusion
from explorer.diffusion.guidance import Denoiser, Guide, guided_samples
from explorer.diffusion.judge import mean_pairwise_distance, rate
from explorer.diffusion.models import DiffusionModel
from explorer.diffusion.noisy_classifier import (
    NoisyClassifier, NoisyClassifierConfig, NoisyCNN, load_noisy_classifier, log_snr, train_noisy_classifier,
)
from explorer.diffusion.train import DDPMConfig, build_unet, make_scheduler
from explorer.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(block_out_channels=(16, 32), layers_per_block=1, attention=False, norm_num_groups=8)


def tiny_diffusion(seed: int = 0) -> DiffusionModel:
    torch.manual_seed(seed)
    unet = build_unet(DDPMConfig(**TINY), 8).eval().requires_grad_(False)
    return DiffusionModel("tiny", unet, dict(make_scheduler("linear").config), torch.device("cpu"), "memory")


class ZeroUNet(torch.nn.Module):
    """A 'UNet' that predicts ε = 0: x̂0 = x_t/√ᾱ, so every step has a closed form."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.config = SimpleNamespace(in_channels=1, sample_size=size)

    def forward(self, x, t):
        return SimpleNamespace(sample=torch.zeros_like(x))


def zero_diffusion() -> DiffusionModel:
    return DiffusionModel("zero", ZeroUNet(), dict(make_scheduler("linear").config), torch.device("cpu"), "memory")


class GaussianClasses:
    """Stand-in classifier with a known gradient: log p(y | x) = −½‖x − μ_y‖² + const, so ∇ = μ_y − x."""

    labels = ["a", "b"]

    def __init__(self, size: int = 8):
        self.means = torch.stack([torch.full((1, size, size), 0.2), torch.full((1, size, size), -0.1)])
        self.calls = 0

    def log_prob_grad(self, x_t, alpha_bar, classes):
        self.calls += 1
        return self.means[classes] - x_t


def test_ancestral_guidance_shifts_the_mean_by_s_sigma_grad():
    """Alg. 1: x_{t−1} = μ + s·Σ·(μ_y − x_t) + σ·z, with Σ = β̃_t by hand (same z: same generator state)."""
    denoiser = Denoiser(zero_diffusion(), 20)
    proc = denoiser.process
    x = 0.3 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    standin, classes, s = GaussianClasses(), torch.tensor([0, 1]), 2.5
    i = 7
    plain = denoiser.step(x, i, sampler="ancestral", generator=torch.Generator().manual_seed(9))
    guided = denoiser.step(x, i, sampler="ancestral", generator=torch.Generator().manual_seed(9),
                           guide=Guide(standin, classes, s))
    abar, abar_prev = proc.alphas_cumprod[i], proc.alphas_cumprod[i - 1]
    beta = 1 - abar / abar_prev  # respaced β recomputed from the kept steps' ᾱ
    posterior_var = float((1 - abar_prev) / (1 - abar) * beta)
    expected = s * posterior_var * (standin.means[classes] - x)
    assert torch.allclose(guided.prev_sample - plain.prev_sample, expected, atol=1e-6)
    assert float(expected.abs().max()) > 1e-3  # the shift is not negligible, so the check can fail


def test_ddim_guidance_shifts_eps_by_s_sqrt_one_minus_abar_grad():
    """Alg. 2 by hand with ε̂ = 0: ε' = −s·√(1−ᾱ)·g, x̂0 = (x − √(1−ᾱ)ε')/√ᾱ, x_prev = √ᾱ' x̂0 + √(1−ᾱ') ε'."""
    denoiser = Denoiser(zero_diffusion(), 20)
    proc = denoiser.process
    x = 0.15 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    standin, classes, s = GaussianClasses(), torch.tensor([1, 0]), 3.0
    for i in (1, 3):
        a, ap = float(proc.alphas_cumprod[i]), float(proc.alphas_cumprod[i - 1])
        g = standin.means[classes] - x
        eps = -s * math.sqrt(1 - a) * g
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        assert float(x0.abs().max()) < 1  # no clipping: the closed form holds
        expected = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
        out = denoiser.step(x, i, sampler="ddim", guide=Guide(standin, classes, s))
        assert torch.allclose(out.prev_sample, expected, atol=1e-6), i
        assert torch.allclose(out.eps, eps, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_scale_zero_reproduces_the_unguided_core_sampler_exactly(sampler):
    """s = 0 never calls the classifier and gives, bit for bit, a plain loop over the core's steps; s > 0 differs."""
    model = tiny_diffusion()
    denoiser = Denoiser(model, 10)
    standin = GaussianClasses()
    zero = guided_samples(denoiser, standin, [0, 1, 0], scale=0.0, sampler=sampler, seed=4)
    assert standin.calls == 0
    # the unguided sampler, written out on GaussianDiffusion directly
    proc = GaussianDiffusion.for_model(model).respaced(10)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((3, 1, 8, 8), generator=gen)
    for i in range(proc.num_steps - 1, -1, -1):
        with torch.no_grad():
            out = model.unet(x, proc.timesteps[i].expand(3)).sample
        step = (proc.ddim_step(out, x, i, generator=gen) if sampler == "ddim"
                else proc.ancestral_step(out, x, i, generator=gen))
        x = step.prev_sample
    assert torch.equal(zero.images, ((x + 1) / 2).clamp(0, 1))
    guided = guided_samples(denoiser, standin, [0, 1, 0], scale=4.0, sampler=sampler, seed=4)
    assert standin.calls == 10 and not torch.equal(guided.images, zero.images)


class PointMassUNet(ZeroUNet):
    """The exact ε-predictor for data that is always 0: ε = x_t / √(1 − ᾱ_t), so unguided samples end at 0."""

    abar = make_scheduler("linear").alphas_cumprod

    def forward(self, x, t):
        a = self.abar[t.long()].view(-1, 1, 1, 1).float()
        return SimpleNamespace(sample=x / (1 - a).sqrt())


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_guidance_pulls_samples_toward_the_target_class(sampler):
    """Data at 0, classes at μ_y = ±: unguided samples end at 0; guided ones move toward μ_y, more with s."""
    model = DiffusionModel("point", PointMassUNet(), dict(make_scheduler("linear").config),
                           torch.device("cpu"), "memory")
    denoiser = Denoiser(model, 25)
    standin = GaussianClasses()
    classes = [0] * 4 + [1] * 4
    target = standin.means[torch.tensor(classes)]
    error = {}
    for s in (0.0, 1.0, 4.0):
        final = guided_samples(denoiser, standin, classes, scale=s, sampler=sampler, seed=1).images * 2 - 1
        error[s] = float((final - target).pow(2).mean())
    assert error[0.0] == pytest.approx(float(target.pow(2).mean()), abs=1e-4)  # unguided: exactly the data point 0
    assert error[4.0] < error[1.0] < error[0.0], error


def test_bad_scale_and_class_are_one_line_errors():
    denoiser = Denoiser(tiny_diffusion(), 4)
    with pytest.raises(UserInputError, match="scale"):
        guided_samples(denoiser, GaussianClasses(), [0], scale=float("nan"))
    with pytest.raises(UserInputError, match="out of range"):
        guided_samples(denoiser, GaussianClasses(), [5], scale=1.0)
    with pytest.raises(UserInputError, match="classifier"):
        guided_samples(denoiser, None, [0], scale=1.0)


def test_noisy_classifier_gradient_matches_finite_differences_and_log_snr_is_schedule_free():
    torch.manual_seed(0)
    module = NoisyCNN(input_size=(8, 8), width=8, hidden=16, embed=16).eval().requires_grad_(False)
    clf = NoisyClassifier("t", module, [str(i) for i in range(10)], {}, torch.device("cpu"))
    x = torch.randn(1, 1, 8, 8, dtype=torch.float32)
    y = torch.tensor([3])
    abar = 0.6
    grad = clf.log_prob_grad(x, abar, y)
    direction = torch.randn_like(x)
    h = 1e-2

    def logp(z):
        return float(torch.log_softmax(clf.logits(z, abar), -1)[0, 3])

    numeric = (logp(x + h * direction) - logp(x - h * direction)) / (2 * h)
    assert abs(numeric - float((grad * direction).sum())) < 1e-2 * max(1.0, abs(numeric))
    # λ depends only on ᾱ: the cosine and linear tables agree wherever their ᾱ agree
    lin = make_scheduler("linear").alphas_cumprod
    assert torch.allclose(log_snr(lin[[10, 500]]), torch.log(lin[[10, 500]] / (1 - lin[[10, 500]])).float(), atol=1e-4)


def test_noisy_classifier_learns_clean_digits_and_is_near_chance_in_pure_noise(tmp_path):
    """300 steps on 8×8 digits: well above chance at small t, near chance at the noisiest tenth; the export
    loads back with the same accuracies."""
    train, test = load_digits("train"), load_digits("test")
    config = NoisyClassifierConfig(steps=300, batch_size=64, lr=3e-3, warmup=10, width=8, hidden=32, embed=16,
                                   ema_decay=0.95, shift=0, checkpoint_every=100)
    report = train_noisy_classifier(train, test, tmp_path, config, device="cpu")
    by_t = {row["t_from"]: row["accuracy"] for row in report.accuracy_by_t}
    assert report.losses[-1] < report.losses[0] - 0.5
    assert by_t[0] > 0.7 and by_t[900] < 0.3, by_t
    loaded = load_noisy_classifier(tmp_path, "cpu")
    p = loaded.probabilities_clean(test.images)
    assert abs(float((p.argmax(1) == test.labels).float().mean()) - by_t[0]) < 0.05


def test_judge_rate_and_diversity_by_hand():
    r = rate(8, 10)
    assert r["rate"] == 0.8 and 0.44 < r["ci95"][0] < 0.45 and 0.97 < r["ci95"][1] < 0.98  # exact binomial
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    assert mean_pairwise_distance(f) == pytest.approx((5 + 4 + 3) / 3)


class LearnedVarianceUNet(ZeroUNet):
    """ε = 0 and the variance output r = 0.5 everywhere (2C channels, as a learned_range UNet)."""

    def forward(self, x, t):
        return SimpleNamespace(sample=torch.cat([torch.zeros_like(x), torch.full_like(x, 0.5)], 1))


def test_ancestral_guidance_uses_the_learned_variance():
    """With learned Σ (Improved DDPM): the shift is s·Σ_θ·g with log Σ_θ = v·log β + (1 − v)·log β̃, v = (r + 1)/2."""
    config = dict(make_scheduler("linear").config) | {"variance_type": "learned_range"}
    denoiser = Denoiser(DiffusionModel("learned", LearnedVarianceUNet(), config, torch.device("cpu"), "memory"), 20)
    assert denoiser.process.variance_type == "learned_range"
    proc, i, s = denoiser.process, 6, 2.0
    x = 0.3 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    standin, classes = GaussianClasses(), torch.tensor([0, 1])
    plain = denoiser.step(x, i, sampler="ancestral", generator=torch.Generator().manual_seed(5))
    guided = denoiser.step(x, i, sampler="ancestral", generator=torch.Generator().manual_seed(5),
                           guide=Guide(standin, classes, s))
    abar, abar_prev = float(proc.alphas_cumprod[i]), float(proc.alphas_cumprod[i - 1])
    beta = 1 - abar / abar_prev
    tilde = (1 - abar_prev) / (1 - abar) * beta
    v = 0.75
    sigma2 = math.exp(v * math.log(beta) + (1 - v) * math.log(tilde))
    assert torch.allclose(guided.prev_sample - plain.prev_sample, s * sigma2 * (standin.means[classes] - x), atol=1e-6)


def test_sweep_summary_ratios_by_hand():
    """FD ratios per scale: to the same class at s = 0, and to the unguided samples the judge names as the class."""
    from explorer.diffusion.guidance import _summarise, with_reference

    rows = [{"scale": s, "class": c, "hits": h, "n": 4, "rate": h / 4, "diversity": 1.0, "fd": fd}
            for s, c, h, fd in ((0.0, 0, 1, 100.0), (0.0, 1, 0, 50.0), (2.0, 0, 4, 20.0), (2.0, 1, 3, 40.0))]
    summary = _summarise(rows, [0.0, 2.0])
    assert summary[1]["hits"] == 7 and summary[1]["n"] == 8
    assert (summary[1]["fd_ratio_to_s0_mean"] == pytest.approx((0.2 + 0.8) / 2)
            and summary[1]["fd_ratio_to_s0_max"] == 0.8)
    reference = {"n_per_class": 4, "rows": [{"class": 0, "used": 4, "fd": 10.0}, {"class": 1, "used": 2, "fd": 5.0}]}
    both = with_reference(summary, rows, reference)  # class 1 has too few named samples: left out
    assert both[1]["fd_ratio_to_unguided_named_mean"] == 2.0 and both[1]["reference_classes"] == 1


def test_fd_above_the_real_image_floor_by_hand():
    """The floor's FD (real images, same n) is taken off both the guided and the unguided FD before their ratio:
    classes 0/1 guided 20/40, unguided 10/12, floor 8/10 -> above the floor (12 + 30)/2 = 21 against (2 + 2)/2 = 2,
    a ratio of 10.5 where the raw mean ratio says (2 + 3.33)/2."""
    from explorer.diffusion.guidance import _summarise, with_floor, with_reference

    rows = [{"scale": 2.0, "class": c, "hits": 4, "n": 4, "rate": 1.0, "diversity": 1.0, "fd": fd}
            for c, fd in ((0, 20.0), (1, 40.0))]
    reference = {"n_per_class": 4, "rows": [{"class": 0, "used": 4, "fd": 10.0}, {"class": 1, "used": 4, "fd": 12.0}]}
    floor = [{"class": 0, "fd": 8.0}, {"class": 1, "fd": 10.0}]
    summary = with_floor(with_reference(_summarise(rows, [2.0]), rows, reference), rows, floor, reference)[0]
    assert summary["fd_ratio_to_unguided_named_mean"] == pytest.approx((2.0 + 40 / 12) / 2, abs=1e-3)
    assert summary["fd_above_floor_mean"] == 21.0 and summary["unguided_fd_above_floor_mean"] == 2.0
    assert summary["fd_above_floor_ratio"] == 10.5
    assert with_floor(summary and [dict(summary)], rows, [], reference) == [dict(summary)]  # no floor: unchanged
    at_floor = [{"class": 0, "fd": 10.0}, {"class": 1, "fd": 12.0}]  # unguided at the floor: no ratio, no crash
    assert "fd_above_floor_ratio" not in with_floor(_summarise(rows, [2.0]), rows, at_floor, reference)[0]


def test_sweep_refuses_a_reference_pool_past_its_bound_and_negative_classes_before_sampling():
    import pytest

    from explorer.diffusion import guidance
    from explorer.errors import UserInputError

    with pytest.raises(UserInputError, match="(?i)reference pool 10001 is out of range"):
        guidance.guidance_sweep(None, None, None, classes=[0], scales=[0.0], n_per_class=2,
                                reference_pool=guidance.MAX_REFERENCE_POOL + 1)
    with pytest.raises(UserInputError, match="numbered from 0"):
        guidance.guided_samples(None, None, [-1], scale=0.0)


# ---- truncated guidance: the gradient only at training timesteps t ≥ guide_until -------------------------
@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_guide_until_past_every_step_is_unguided_and_zero_is_full_guidance(sampler):
    """guide_until above every step's t: bit for bit the unguided samples, classifier never called;
    guide_until = 0: bit for bit today's guided samples."""
    denoiser = Denoiser(tiny_diffusion(), 10)
    assert max(denoiser.timestep_t(i) for i in range(denoiser.num_steps)) < denoiser.train_steps
    standin = GaussianClasses()
    unguided = guided_samples(denoiser, standin, [0, 1, 0], scale=0.0, sampler=sampler, seed=4)
    never = guided_samples(denoiser, standin, [0, 1, 0], scale=4.0, sampler=sampler, seed=4,
                           guide_until=denoiser.train_steps)
    assert standin.calls == 0 and torch.equal(never.images, unguided.images)
    assert never.settings["guide_until"] == denoiser.train_steps
    full = guided_samples(denoiser, standin, [0, 1, 0], scale=4.0, sampler=sampler, seed=4)
    zero = guided_samples(denoiser, standin, [0, 1, 0], scale=4.0, sampler=sampler, seed=4, guide_until=0)
    assert torch.equal(zero.images, full.images) and not torch.equal(full.images, unguided.images)
    assert standin.calls == 2 * denoiser.num_steps and full.settings["guide_until"] == 0


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_guide_until_in_the_middle_leaves_the_late_steps_unguided(sampler):
    """A cut-off in the middle: steps with t ≥ cut are guided (they differ from the unguided step), steps
    with t < cut equal the unguided step from the same state and generator state, and the classifier is
    called only at the guided steps."""
    from explorer.diffusion.guidance import initial_noise, run_chain

    denoiser = Denoiser(tiny_diffusion(), 10)
    ts = [denoiser.timestep_t(i) for i in range(denoiser.num_steps)]
    cut = ts[5]  # steps 5..9 guided, 0..4 not
    standin = GaussianClasses()
    guide = Guide(standin, torch.tensor([0, 1]), 4.0, until=cut)
    gen = torch.Generator().manual_seed(3)
    states = {}

    def before(x, i):
        states[i] = (x.clone(), gen.get_state())
        return x

    outs = {}
    run_chain(denoiser, initial_noise(denoiser, 2, gen), sampler=sampler, generator=gen, guide=guide,
              before_step=before, observe=lambda i, x, out: outs.__setitem__(i, out.prev_sample.clone()))
    guided_steps = [i for i in range(denoiser.num_steps) if ts[i] >= cut]
    assert guided_steps == [5, 6, 7, 8, 9] and standin.calls == len(guided_steps)
    counter = GaussianClasses()
    for i, (x, state) in states.items():
        plain = denoiser.step(x, i, sampler=sampler, generator=torch.Generator().set_state(state))
        if i in guided_steps:
            assert not torch.equal(outs[i], plain.prev_sample), i
        else:
            assert torch.equal(outs[i], plain.prev_sample), i
            again = denoiser.step(x, i, sampler=sampler, generator=torch.Generator().set_state(state),
                                  guide=Guide(counter, torch.tensor([0, 1]), 4.0, until=cut))
            assert torch.equal(again.prev_sample, plain.prev_sample), i
    assert counter.calls == 0


def test_bad_guide_until_is_a_one_line_error():
    denoiser = Denoiser(tiny_diffusion(), 4)
    for bad in (-1, denoiser.train_steps + 1, 2.5, float("nan")):
        with pytest.raises(UserInputError, match=r"guide_until must be a whole timestep in \[0, 1000\]"):
            guided_samples(denoiser, GaussianClasses(), [0], scale=1.0, guide_until=bad)


# ---- the guidance interval: the gradient only at guide_until ≤ t ≤ guide_from -------------------------------
@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_guide_from_skips_the_noisiest_steps_and_its_default_is_every_step(sampler):
    """guide_from = T₁: the steps with t > T₁ are bit for bit the unguided sampler's (the classifier is called
    only at the others, which differ); guide_from left out or at the model's T is full guidance; with
    guide_until the guided steps are exactly those in the interval."""
    from explorer.diffusion.guidance import initial_noise, run_chain

    denoiser = Denoiser(tiny_diffusion(), 10)
    ts = [denoiser.timestep_t(i) for i in range(denoiser.num_steps)]
    top, bottom = ts[6], ts[2]  # guided: steps 2..6
    full = guided_samples(denoiser, GaussianClasses(), [0, 1], scale=4.0, sampler=sampler, seed=4)
    at_t = guided_samples(denoiser, GaussianClasses(), [0, 1], scale=4.0, sampler=sampler, seed=4,
                          guide_from=denoiser.train_steps)
    assert torch.equal(at_t.images, full.images) and full.settings["guide_from"] is at_t.settings["guide_from"] is None
    standin = GaussianClasses()
    guide = Guide(standin, torch.tensor([0, 1]), 4.0, until=bottom, start=top)
    gen = torch.Generator().manual_seed(3)
    states, outs = {}, {}

    def before(x, i):
        states[i] = (x.clone(), gen.get_state())
        return x

    run_chain(denoiser, initial_noise(denoiser, 2, gen), sampler=sampler, generator=gen, guide=guide,
              before_step=before, observe=lambda i, x, out: outs.__setitem__(i, out.prev_sample.clone()))
    guided_steps = [i for i in range(denoiser.num_steps) if bottom <= ts[i] <= top]
    assert guided_steps == [2, 3, 4, 5, 6] and standin.calls == len(guided_steps)
    for i, (x, state) in states.items():
        plain = denoiser.step(x, i, sampler=sampler, generator=torch.Generator().set_state(state))
        assert torch.equal(outs[i], plain.prev_sample) == (i not in guided_steps), i
    interval = guided_samples(denoiser, GaussianClasses(), [0, 1], scale=4.0, sampler=sampler, seed=4,
                              guide_until=bottom, guide_from=top)
    assert interval.settings["guide_from"] == top and not torch.equal(interval.images, full.images)


def test_bad_guide_from_is_a_one_line_error():
    denoiser = Denoiser(tiny_diffusion(), 4)
    for bad in (-1, denoiser.train_steps + 1, 2.5, float("nan")):
        with pytest.raises(UserInputError, match=r"guide_from must be a whole timestep in \[0, 1000\]"):
            guided_samples(denoiser, GaussianClasses(), [0], scale=1.0, guide_from=bad)
    with pytest.raises(UserInputError, match=r"guide_from \(200\) is below guide_until \(300\)"):
        guided_samples(denoiser, GaussianClasses(), [0], scale=1.0, guide_until=300, guide_from=200)


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST IDX files absent (CI installs them)")
def test_cli_guide_takes_a_trained_classifier_folder_and_records_it(tmp_path):
    """``--classifier FOLDER`` guides with the folder's weights (not the shipped guide of the same name) and
    guide.json says which folder: a retrained guide's figures must be traceable to it."""
    import json
    import shutil

    from explorer.cli import main
    from explorer.diffusion.noisy_classifier import BUILTIN

    folder = tmp_path / "guide"
    shutil.copytree(BUILTIN["fashion_noisy_cnn"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"name": "retrained_guide"}))
    out = tmp_path / "out"
    code = main(["--device", "cpu", "diffusion", "guide", "--classifier", str(folder), "--class", "Trouser",
                 "--n", "2", "--steps", "2", "--threads", "1", "--out", str(out)])
    assert code == 0
    settings = json.loads((out / "guide.json").read_text())["settings"]
    assert settings["classifier"] == "retrained_guide" and settings["classifier_from"] == str(folder)
    assert len(list((out / "samples").glob("*.png"))) == 2
    assert main(["diffusion", "guide", "--classifier", str(tmp_path / "nope"), "--n", "2", "--steps", "1",
                 "--out", str(out)]) == 2


def test_stored_reference_is_reused_only_with_the_same_settings():
    from explorer.diffusion.guidance import stored_reference

    settings = {"model": "m", "judge": "j", "sampler": "ddim", "steps": 50, "eta": 0.0, "seed": 0, "n_per_class": 64}
    reference = {"pool": 1500, "n_per_class": 64, "rows": [{"class": 0, "used": 64, "fd": 2.0}]}
    stored = {"settings": settings | {"classifier": "old guide", "guide_until": 300}, "reference": reference}
    assert stored_reference(stored, settings | {"classifier": "new guide"}) == reference  # the guide may differ
    with pytest.raises(UserInputError, match="seed: 0, not 1"):
        stored_reference(stored, settings | {"seed": 1})
    with pytest.raises(UserInputError, match="no per-class unguided reference"):
        stored_reference({"settings": settings, "reference": None}, settings)


@pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST IDX files absent (CI installs them)")
def test_cli_sweep_reuses_a_stored_reference_for_the_fd_ratios(tmp_path):
    """``--reference-json``: the ratios are the sweep's per-class FD over the stored reference's, no pool sampled."""
    import json

    from explorer.cli import main

    settings = {"model": "fashion_ddpm", "judge": "fashion_cnn", "sampler": "ddim", "steps": 2, "eta": 0.0,
                "seed": 0, "n_per_class": 2}
    reference = {"pool": 9, "n_per_class": 2, "rows": [{"class": c, "used": 2, "fd": 0.5 + c} for c in (0, 1)]}
    stored = tmp_path / "stored.json"
    stored.write_text(json.dumps({"settings": settings, "reference": reference}))
    out = tmp_path / "sweep"
    argv = ["--device", "cpu", "diffusion", "guide", "--sweep", "--scales", "0,2", "--classes", "0,1", "--n", "2",
            "--steps", "2", "--threads", "1", "--out", str(out), "--reference-json", str(stored)]
    assert main(argv) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert data["reference"] == reference and data["reference_from"] == str(stored)
    for entry in data["summary"]:
        ratios = [r["fd"] / (0.5 + r["class"]) for r in data["rows"] if r["scale"] == entry["scale"]]
        assert entry["fd_ratio_to_unguided_named_mean"] == pytest.approx(sum(ratios) / 2, abs=1e-3)
    assert main(argv[:-1] + [str(tmp_path / "nope.json")]) == 2
    stored.write_text(json.dumps({"settings": settings | {"steps": 50}, "reference": reference}))
    assert main(argv) == 2  # made with 50 steps: not this sweep's yardstick
    with open(stored, "wb") as handle:  # a sparse 17 MB file: refused from its size, before it is read
        handle.truncate(17 << 20)
    assert main(argv) == 2


def test_stored_reference_refuses_damaged_rows_with_a_message():
    from explorer.diffusion.guidance import stored_reference

    settings = {"model": "m", "judge": "j", "sampler": "ddim", "steps": 50, "eta": 0.0, "seed": 0, "n_per_class": 64}
    good = {"class": 0, "used": 64, "fd": 2.0}
    for rows in ([good | {"fd": float("nan")}], [good | {"used": "64"}], ["row"], [good | {"class": True}]):
        with pytest.raises(UserInputError, match="damaged"):
            stored_reference({"settings": settings, "reference": {"n_per_class": 64, "rows": rows}}, settings)
    with pytest.raises(UserInputError, match="damaged"):
        stored_reference({"settings": [1], "reference": {"n_per_class": 64, "rows": [good]}}, settings)


def _sweep_dict(seed: int, entries: list[tuple[float, int, float]], **settings) -> dict:
    """A minimal sweep.json: (scale, hits of 640, mean FD ratio) per scale."""
    base = {"model": "m", "classifier": "g", "judge": "j", "sampler": "ancestral", "steps": 50, "eta": 0.0,
            "n_per_class": 64, "guide_until": 0, "reference_pool": 1500, "seed": seed}
    return {"settings": base | settings,
            "summary": [{"scale": s, "hits": h, "n": 640, "fd_ratio_to_unguided_named_mean": r} for s, h, r in entries]}


def test_pooled_over_seeds_pools_hits_and_averages_ratios():
    from explorer.diffusion.guidance import pooled_over_seeds
    from explorer.stats import clopper_pearson

    rows = pooled_over_seeds([_sweep_dict(0, [(4.0, 600, 1.2), (6.0, 618, 1.49)]),
                              _sweep_dict(1, [(6.0, 617, 1.71)])])
    assert [r["scale"] for r in rows] == [6.0]  # only the scales every seed measured
    (row,) = rows
    assert (row["hits"], row["n"], row["seeds"]) == (1235, 1280, [0, 1])
    low, high = clopper_pearson(1235, 1280)
    assert row["ci95"] == [round(low, 4), round(high, 4)]
    assert row["fd_ratio_mean"] == 1.6 and (row["fd_ratio_min"], row["fd_ratio_max"]) == (1.49, 1.71)
    assert row["fd_ratio_mean"] > 1.5 > row["fd_ratio_min"]  # one seed under the line is not the verdict


def test_pooled_over_seeds_refuses_mixed_settings_and_repeated_seeds():
    from explorer.diffusion.guidance import pooled_over_seeds

    with pytest.raises(UserInputError, match="sampler"):
        pooled_over_seeds([_sweep_dict(0, [(6.0, 618, 1.5)]), _sweep_dict(1, [(6.0, 617, 1.7)], sampler="ddim")])
    with pytest.raises(UserInputError, match="own seed"):
        pooled_over_seeds([_sweep_dict(0, [(6.0, 618, 1.5)]), _sweep_dict(0, [(6.0, 617, 1.7)])])
    with pytest.raises(UserInputError, match="two sweeps"):
        pooled_over_seeds([_sweep_dict(0, [(6.0, 618, 1.5)])])
    # a stored yardstick (--reference-json: reference_pool 0) counts as the pool it was made from
    stored = _sweep_dict(0, [(6.0, 618, 1.5)], reference_pool=0) | {"reference": {"pool": 1500}}
    assert pooled_over_seeds([stored, _sweep_dict(1, [(6.0, 617, 1.7)])])[0]["hits"] == 1235
    with pytest.raises(UserInputError, match="reference_pool"):
        pooled_over_seeds([stored | {"reference": {"pool": 400}}, _sweep_dict(1, [(6.0, 617, 1.7)])])


def test_exact_mcnemar_matches_the_binomial_tail_by_hand():
    from explorer.stats import exact_mcnemar

    assert exact_mcnemar(0, 0) == 1.0
    assert exact_mcnemar(0, 5) == pytest.approx(2 / 32)  # both tails of Binomial(5, ½) at 0 and 5
    assert exact_mcnemar(1, 5) == exact_mcnemar(5, 1) == pytest.approx(2 * (1 + 6) / 64)
    assert exact_mcnemar(10, 10) == 1.0
    with pytest.raises(ValueError):
        exact_mcnemar(-1, 3)


def test_noised_draws_give_every_image_once_per_t_range_and_repeat_with_the_seed():
    from explorer.diffusion.noisy_classifier import noised_draws, t_ranges

    data = load_digits("test")
    abar = make_scheduler("linear").alphas_cumprod.float()
    first = list(noised_draws(data, abar, bins=4, seed=3, batch_size=64))
    again = list(noised_draws(data, abar, bins=4, seed=3, batch_size=64))
    assert [(lo, hi) for lo, hi, *_ in first][:: -(-len(data) // 64)] == t_ranges(len(abar), 4)
    for (_lo, _hi, x, level, y), (_, _, x2, level2, y2) in zip(first, again):
        assert torch.equal(x, x2) and torch.equal(level, level2) and torch.equal(y, y2)
    per_range = {}
    for lo, hi, _x, _level, y in first:
        per_range[lo, hi] = per_range.get((lo, hi), 0) + len(y)
    assert set(per_range.values()) == {len(data)}
    clean = [x for lo, hi, x, *_ in first if (lo, hi) == (0, 1)]  # t = 0: barely noised
    assert torch.allclose(torch.cat(clean), data.images * 2 - 1, atol=0.1)


def test_pooled_over_seeds_rederives_fd_above_the_floor_from_stored_rows():
    """Sweeps written before the floor figures existed get them from their rows, floor and reference; a file
    whose floor is damaged pools as before, without them."""
    from explorer.diffusion.guidance import pooled_over_seeds

    def stored(seed: int, guided_fd: float) -> dict:
        sweep = _sweep_dict(seed, [(6.0, 610, 1.5)])
        sweep["rows"] = [{"scale": 6.0, "class": 0, "fd": guided_fd}]
        sweep["floor"] = [{"class": 0, "fd": 8.0}]
        sweep["reference"] = {"n_per_class": 64, "rows": [{"class": 0, "used": 64, "fd": 10.0}]}
        return sweep

    row = pooled_over_seeds([stored(0, 14.0), stored(1, 18.0)])[0]
    assert row["fd_above_floor_ratio_per_seed"] == [3.0, 5.0] and row["fd_above_floor_ratio_mean"] == 4.0
    damaged = stored(1, 18.0) | {"floor": [{"class": 0}]}
    row = pooled_over_seeds([stored(0, 14.0), damaged])[0]
    assert "fd_above_floor_ratio_mean" not in row and row["fd_ratio_mean"] == 1.5


class ConfidentAbout(GaussianClasses):
    """The Gaussian stand-in, also saying how sure it is: p(target) = ``confidence[b]`` for image b."""

    def __init__(self, confidence: list[float], size: int = 8):
        super().__init__(size)
        self.confidence = torch.tensor(confidence)

    def log_prob_and_grad(self, x_t, alpha_bar, classes):
        return self.confidence.log(), self.log_prob_grad(x_t, alpha_bar, classes)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_confidence_gate_leaves_sure_samples_unguided_and_guides_the_rest(sampler):
    """stop_at = τ: an image whose target probability is ≥ τ takes the unguided step exactly; the others the full
    guided step (the same as with no gate)."""
    denoiser = Denoiser(zero_diffusion(), 20)
    x = 0.2 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    classes, s, i = torch.tensor([0, 1, 0]), 2.0, 5
    standin = ConfidentAbout([0.95, 0.5, 0.99])  # sure, unsure, sure

    def step(guide):
        return denoiser.step(x, i, sampler=sampler, generator=torch.Generator().manual_seed(3), guide=guide).prev_sample

    plain, full = step(None), step(Guide(standin, classes, s))
    gated = step(Guide(standin, classes, s, stop_at=0.9))
    assert torch.equal(gated[[0, 2]], plain[[0, 2]])
    assert torch.allclose(gated[1], full[1], atol=1e-6)
    assert float((full[1] - plain[1]).abs().max()) > 1e-3  # guidance moved the unsure one: the check can fail


def test_bad_stop_at_confidence_is_a_one_line_error():
    denoiser = Denoiser(zero_diffusion(), 5)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(UserInputError, match="confidence at which guidance stops"):
            guided_samples(denoiser, GaussianClasses(), [0], scale=1.0, stop_at=bad)


def test_noisy_classifier_log_prob_and_grad_agree_with_its_logits():
    torch.manual_seed(0)
    module = NoisyCNN(input_size=(8, 8), width=8, hidden=16, num_classes=3, embed=16).eval().requires_grad_(False)
    clf = NoisyClassifier("t", module, ["a", "b", "c"], {}, torch.device("cpu"))
    x, classes = torch.randn(4, 1, 8, 8), torch.tensor([0, 2, 1, 1])
    log_p, grad = clf.log_prob_and_grad(x, 0.3, classes)
    for b in range(4):  # image by image against autograd on that image alone
        xb = x[b : b + 1].clone().requires_grad_(True)
        with torch.enable_grad():
            lp = torch.log_softmax(clf.logits(xb, 0.3), -1)[0, classes[b]]
            (gb,) = torch.autograd.grad(lp, xb)
        assert torch.allclose(log_p[b], lp.detach(), atol=1e-6)
        assert torch.allclose(grad[b : b + 1], gb, atol=1e-6)
    assert float(grad.abs().sum()) > 0


def test_confidence_gate_needs_a_classifier_that_reports_its_confidence():
    denoiser = Denoiser(zero_diffusion(), 5)
    with pytest.raises(UserInputError, match="confidence gate needs a classifier"):
        guided_samples(denoiser, GaussianClasses(), [0], scale=1.0, stop_at=0.9)  # it has only log_prob_grad


def test_init_from_refuses_damaged_and_mismatched_guides(tmp_path):
    import json as _json
    import shutil

    from explorer.diffusion.noisy_classifier import BUILTIN, _init_from_classifier, build_noisy_classifier

    shipped = BUILTIN["fashion_noisy_cnn"]
    arch = _json.loads((shipped / "config.json").read_text())
    model = build_noisy_classifier(arch)
    _init_from_classifier(model, "fashion_noisy_cnn", arch)  # the same guide: loads
    first = next(iter(model.state_dict().values()))
    assert float(first.abs().sum()) > 0
    damaged = tmp_path / "damaged"
    shutil.copytree(shipped, damaged)
    for text in ("{not json", "[1, 2]"):
        (damaged / "config.json").write_text(text)
        with pytest.raises(UserInputError, match="not a noise-aware classifier config"):
            _init_from_classifier(model, str(damaged), arch)
    (damaged / "config.json").write_text(_json.dumps(arch | {"log_snr_range": [-5.05, 9.21]}))
    with pytest.raises(UserInputError, match="log_snr_range differ"):  # another schedule's noise levels
        _init_from_classifier(model, str(damaged), arch)
    for bad in (True, 2.5, -1, 1000):
        with pytest.raises(UserInputError, match="t_max must be a timestep"):
            NoisyClassifierConfig(t_max=bad)


def test_l2_pgd_stays_in_its_ball_raises_the_loss_and_repeats():
    import torch.nn.functional as F

    from explorer.diffusion.noisy_classifier import l2_pgd, load_noisy_classifier

    guide = load_noisy_classifier("fashion_noisy_cnn", device="cpu")
    module = guide.module
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(8, 1, 28, 28, generator=gen) * 0.5
    level = torch.full((8,), 2.0)
    labels = torch.arange(8) % 10
    with torch.enable_grad():
        attacked = l2_pgd(module, x_t, level, labels, eps=1.0, steps=3)
        again = l2_pgd(module, x_t, level, labels, eps=1.0, steps=3)
    assert torch.equal(attacked, again)  # no random start: a training step stays a function of (seed, step)
    radius = (attacked - x_t).flatten(1).norm(dim=1)
    assert float(radius.max()) <= 1.0 + 1e-4 and float(radius.min()) > 0.9  # on the ball's surface, not past it
    with torch.no_grad():
        clean = F.cross_entropy(module(x_t, level), labels, reduction="none")
        worse = F.cross_entropy(module(attacked, level), labels, reduction="none")
    assert bool((worse > clean).all())
    # a random direction of the same length raises it far less: the attack follows the gradient
    noise = torch.randn(x_t.shape, generator=gen)
    noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    with torch.no_grad():
        random_dir = F.cross_entropy(module(x_t + noise, level), labels, reduction="none")
    assert float((worse - clean).mean()) > 3 * float((random_dir - clean).abs().mean())
    assert l2_pgd(module, x_t, level, labels, eps=0.0, steps=3) is x_t
    # the attack reads the weights but leaves their gradients alone (a trainable copy: the loaded guide is frozen)
    import copy

    trainable = copy.deepcopy(module).requires_grad_(True)
    with torch.enable_grad():
        l2_pgd(trainable, x_t, level, labels, eps=1.0, steps=3)
    assert all(p.requires_grad and p.grad is None for p in trainable.parameters())


def test_adversarial_training_reaches_the_loop_and_repeats(tmp_path):
    from safetensors.torch import load_file

    from explorer.diffusion.noisy_classifier import train_noisy_classifier

    train, test = load_digits("train"), load_digits("test")

    def run(name: str, eps: float) -> dict:
        config = NoisyClassifierConfig(steps=3, batch_size=8, width=8, hidden=16, embed=8, ema_decay=0.5,
                                       adv_eps=eps, adv_steps=2, checkpoint_every=100)
        train_noisy_classifier(train, test, tmp_path / name, config, name="t", device="cpu", eval_images=8)
        return load_file(tmp_path / name / "model.safetensors")

    plain, robust, again = run("plain", 0.0), run("robust", 1.0), run("again", 1.0)
    assert not all(torch.equal(plain[k], robust[k]) for k in plain)  # the attack changed what was learnt
    assert all(torch.equal(robust[k], again[k]) for k in robust)  # and a run repeats exactly


def test_bad_adversarial_training_settings_are_one_line_errors():
    for bad in (-0.1, float("nan"), 21.0, True, "1"):
        with pytest.raises(UserInputError, match="(?i)adv.eps"):
            NoisyClassifierConfig(adv_eps=bad)
    for bad in (0, 21, 2.5, True):
        with pytest.raises(UserInputError, match="(?i)adv.steps"):
            NoisyClassifierConfig(adv_steps=bad)
