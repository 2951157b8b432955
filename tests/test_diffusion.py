"""Diffusion inspector: forward marginals, determinism, faithful recording, trainers, CLI exports."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from PIL import Image

from explorer.diffusion.analysis import settle_steps
from explorer.diffusion.data import load_digits
from explorer.diffusion.models import DiffusionModel, load_diffusion_model
from explorer.diffusion.recorder import (
    EPS_RANGE, X0_RANGE, XT_RANGE, Probe, dequantise, forward_process, marginal, sample_chain, to_unit,
)
from explorer.diffusion.train import DDPMConfig, build_unet, evaluation_loss, make_scheduler, train_ddpm
from explorer.errors import UserInputError

TINY = dict(block_out_channels=(16, 32), layers_per_block=1, attention=False, norm_num_groups=8, batch_size=32,
            lr=2e-3, warmup=5, ema_decay=0.9, checkpoint_every=10)


def tiny_diffusion(seed: int = 0, schedule: str = "linear") -> DiffusionModel:
    torch.manual_seed(seed)
    unet = build_unet(DDPMConfig(**TINY), 8).eval().requires_grad_(False)
    config = dict(make_scheduler(schedule).config)
    return DiffusionModel("tiny", unet, config, torch.device("cpu"), "memory")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_forward_marginal_matches_closed_form(schedule):
    """Across 4000 noise draws of one image, x_t has mean √ᾱ_t·x0 and variance 1 − ᾱ_t at every t."""
    x0 = load_digits("test").images[:1]  # one 8×8 digit in [0, 1]
    copies = x0.repeat(4000, 1, 1, 1)
    abar = make_scheduler(schedule).alphas_cumprod
    record = forward_process(copies, alphas_cumprod=abar, steps=5, seed=3)
    assert record.timesteps == [0, 250, 500, 749, 999]
    n = copies.shape[0]
    for i, t in enumerate(record.timesteps):
        xt = dequantise(record.x_t[i], XT_RANGE)  # uint8 storage: ±0.016 rounding, unbiased
        mean, var = marginal(x0[0] * 2 - 1, t, abar)
        se_mean = math.sqrt(var / n) + 0.005  # + rounding of the stored states
        assert (xt.mean(0) - mean).abs().max() < 5 * se_mean, (schedule, t)
        if var > 1e-3:
            rel = (xt.var(0) / var - 1).abs()
            assert rel.mean() < 0.03 and rel.max() < 6 * math.sqrt(2 / n) + 0.02, (schedule, t, float(rel.max()))
    # the two schedules really differ: at mid-chain cosine keeps more signal than linear
    if schedule == "squaredcos_cap_v2":
        assert abar[500] > make_scheduler("linear").alphas_cumprod[500] * 3


def test_ddim_eta0_is_deterministic_per_seed():
    model = tiny_diffusion()
    a = sample_chain(model, sampler="ddim", steps=8, batch=3, seed=5, eta=0.0)
    b = sample_chain(model, sampler="ddim", steps=8, batch=3, seed=5, eta=0.0)
    c = sample_chain(model, sampler="ddim", steps=8, batch=3, seed=6, eta=0.0)
    noisy = sample_chain(model, sampler="ddim", steps=8, batch=3, seed=5, eta=1.0)
    assert torch.equal(a.final, b.final) and torch.equal(a.x_t, b.x_t)
    assert not torch.equal(a.final, c.final)
    assert not torch.equal(a.final, noisy.final)  # eta > 0 injects noise
    ddpm1 = sample_chain(model, sampler="ddpm", steps=8, batch=3, seed=5)
    ddpm2 = sample_chain(model, sampler="ddpm", steps=8, batch=3, seed=5)
    assert torch.equal(ddpm1.final, ddpm2.final)  # ancestral sampling is seeded too


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_recorded_states_equal_the_schedulers_own(sampler, tiny):
    """Replaying the chain by hand: recorded x̂0 is the scheduler's pred_original_sample (to the uint8 step),
    ε the UNet's output, x_t the state fed in; the probe saw the exact float states."""
    model = tiny_diffusion(1)
    probe = Probe(tiny)
    record = sample_chain(model, sampler=sampler, steps=6, batch=2, seed=9, probe=probe, record_every=1)
    scheduler = model.scheduler(sampler)
    scheduler.set_timesteps(6)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn((2, 1, 8, 8), generator=gen)
    for i, t in enumerate(scheduler.timesteps):
        with torch.no_grad():
            eps = model.unet(x, t).sample
        out = scheduler.step(eps, t, x, generator=gen)
        assert record.timesteps[i] == int(t)
        for stored, exact, rng in ((record.x_t[i], x, XT_RANGE),
                                   (record.x0_pred[i], out.pred_original_sample, X0_RANGE),
                                   (record.eps_pred[i], eps, EPS_RANGE)):
            half_step = (rng[1] - rng[0]) / 255 / 2 + 1e-5
            assert (dequantise(stored, rng) - exact.clamp(*rng)).abs().max() <= half_step
        expected = probe(torch.cat([to_unit(x), to_unit(out.pred_original_sample)]))
        torch.testing.assert_close(record.probs_xt[i], expected[:2])
        torch.testing.assert_close(record.probs_x0[i], expected[2:])
        x = out.prev_sample
    torch.testing.assert_close(record.final, to_unit(x))


def test_long_chains_stay_memory_bounded():
    """1000 DDPM steps × 16 images of 28×28 are stored whole (≈ 38 MB of uint8); bigger ones keep every k-th."""
    from explorer.diffusion.recorder import auto_record_every

    assert auto_record_every(1000, 16, (1, 28, 28)) == 1
    assert 3 * 1000 * 16 * 28 * 28 < 40 * 2**20
    assert auto_record_every(1000, 64, (3, 64, 64)) > 1
    model = tiny_diffusion()
    record = sample_chain(model, sampler="ddpm", steps=40, batch=2, record_every=7)
    assert record.stored_steps == [0, 7, 14, 21, 28, 35, 39] and record.x_t.shape[0] == 7
    assert record.x_t.dtype == torch.uint8


def test_schedule_override_matches_noise_levels():
    """A cosine chain on a linear-trained UNet feeds it the training timestep of the same ᾱ."""
    model = tiny_diffusion()
    cosine = make_scheduler("squaredcos_cap_v2").alphas_cumprod
    linear = make_scheduler("linear").alphas_cumprod
    mapped = model.model_timesteps_for("squaredcos_cap_v2", [100, 400, 700])
    for t, m in zip([100, 400, 700], mapped):
        lo = int(math.floor(float(m)))
        assert linear[lo + 1] <= cosine[t] <= linear[lo]
    assert [int(m) for m in model.model_timesteps_for(None, [5, 6])] == [5, 6]
    with pytest.raises(UserInputError):
        model.scheduler("ddim", "quadratic-ish")


def test_settle_step_is_the_start_of_the_final_agreeing_run():
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]],
                          [[0.2, 0.8], [0.3, 0.7]],
                          [[0.6, 0.4], [0.6, 0.4]],
                          [[0.3, 0.7], [0.7, 0.3]]])  # steps × samples × classes
    assert settle_steps(probs, torch.tensor([1, 1])).tolist() == [3, -1]
    assert settle_steps(probs, torch.tensor([1, 0])).tolist() == [3, 2]


def test_tiny_ddpm_training_reduces_loss_and_resumes_exactly(tmp_path, digits):
    """60 steps on 8×8 digits lower the fixed-noise diffusion loss; 30 + resume 30 gives the same weights."""
    from safetensors.torch import load_file

    held_out = load_digits("test").images[:64]
    scheduler = make_scheduler("linear")
    torch.manual_seed(0)
    untrained = build_unet(DDPMConfig(**TINY), 8)  # same init as train_ddpm(seed=0)
    before = evaluation_loss(untrained, scheduler, held_out)
    report = train_ddpm(digits, tmp_path / "full", DDPMConfig(**TINY, steps=60), device="cpu")
    trained = load_diffusion_model(str(tmp_path / "full"), device="cpu")
    after = evaluation_loss(trained.unet, scheduler, held_out)
    assert report.steps_done == 60 and len(report.losses) >= 2
    assert after < 0.8 * before, (before, after)
    info = json.loads((tmp_path / "full" / "training.json").read_text())
    assert info["steps_done"] == 60 and info["hardware"]

    done = []
    interrupted = train_ddpm(digits, tmp_path / "split", DDPMConfig(**TINY, steps=60), device="cpu",
                             callback=lambda step, *_: done.append(step), should_stop=lambda: len(done) >= 30)
    assert interrupted.stopped == "cancelled" and interrupted.steps_done == 30
    resumed = train_ddpm(digits, tmp_path / "split", DDPMConfig(**TINY, steps=60), device="cpu")
    assert resumed.steps_done == 60 and resumed.losses == report.losses
    full = load_file(str(tmp_path / "full" / "diffusion_pytorch_model.safetensors"))
    split = load_file(str(tmp_path / "split" / "diffusion_pytorch_model.safetensors"))
    for key in full:
        torch.testing.assert_close(full[key], split[key], rtol=1e-4, atol=1e-5)


def test_cli_sample_writes_grid_gif_json_csv(tmp_path, digits):
    from explorer.cli import main
    from explorer.diffusion.train import train_classifier

    train_ddpm(digits, tmp_path / "ddpm", DDPMConfig(**TINY, steps=2), device="cpu")
    train_classifier(digits, load_digits("test"), tmp_path / "clf", epochs=1, width=8, device="cpu")
    out = tmp_path / "out"
    code = main(["--device", "cpu", "diffusion", "sample", "--model", str(tmp_path / "ddpm"), "--probe",
                 str(tmp_path / "clf"), "--steps", "7", "--n", "3", "--out", str(out), "--gif-frames", "5"])
    assert code == 0
    assert Image.open(out / "samples.png").size[0] > 8
    gif = Image.open(out / "chain.gif")
    assert gif.n_frames == 6  # 5 chain frames + the final samples
    rows = list(csv.DictReader(io.StringIO((out / "probabilities.csv").read_text())))
    assert len(rows) == 7 * 3 * 2 and {r["state"] for r in rows} == {"x_t", "x0"}
    assert all(abs(sum(float(r[str(c)]) for c in range(10)) - 1) < 1e-3 for r in rows)
    summary = json.loads((out / "chain.json").read_text())
    assert len(summary["samples"]) == 3 and len(summary["probabilities"]["x0"]) == 7
    assert main(["diffusion", "sample", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_sample_quality_reports_an_interval_and_disjoint_draws_per_seed(tiny):
    """One 500-sample draw is one estimate: the report carries a 95 % interval of the mean max-probability,
    and seeds 0 and 1 draw disjoint batches (they used to share all but one batch)."""
    from explorer.diffusion import analysis

    model, probe = tiny_diffusion(2), Probe(tiny)
    first = analysis.sample_quality(model, probe, n=8, steps=3, batch=4, seed=0)
    again = analysis.sample_quality(model, probe, n=8, steps=3, batch=4, seed=0)
    assert first.mean_max_probability == again.mean_max_probability and first.class_counts == again.class_counts
    # recompute the per-sample max-probabilities of seed 0's two batches by hand
    tops = torch.cat([probe(sample_chain(model, sampler="ddim", steps=3, batch=4, seed=i, record=False).final)
                      .max(-1).values for i in range(2)]).double()
    assert first.mean_max_probability == pytest.approx(float(tops.mean()), abs=1e-6)
    lo, hi = first.mean_ci95
    assert hi - lo == pytest.approx(2 * 1.96 * float(tops.std()) / math.sqrt(8), rel=1e-5)
    assert lo <= first.mean_max_probability <= hi
    assert first.to_dict()["mean_max_probability_ci95"] == [round(lo, 4), round(hi, 4)]
    second = analysis.sample_quality(model, probe, n=8, steps=3, batch=4, seed=1)
    finals0 = [sample_chain(model, sampler="ddim", steps=3, batch=4, seed=i, record=False).final for i in range(2)]
    finals1 = [sample_chain(model, sampler="ddim", steps=3, batch=4, seed=analysis.QUALITY_SEED_STRIDE + i,
                            record=False).final for i in range(2)]
    tops1 = torch.cat([probe(f).max(-1).values for f in finals1]).double()
    assert second.mean_max_probability == pytest.approx(float(tops1.mean()), abs=1e-6), \
        "seed 1 is batches STRIDE, STRIDE+1"
    assert not any(torch.equal(a, b) for a in finals0 for b in finals1), "seed 1 shares no batch with seed 0"


def test_overhead_benchmark_puts_the_unet_inputs_on_the_models_device():
    """The benchmark's plain loop once fed CPU tensors to a CUDA UNet ("mat1 is on cpu"). Reviewed on the
    meta device (no data, but devices are checked): x_T and the timesteps land on the model's device."""
    from types import SimpleNamespace

    from benchmarks.diffusion_overhead import initial_state
    from explorer.diffusion.train import make_scheduler

    meta = torch.device("meta")
    diffusion = SimpleNamespace(device=meta, channels=1, sample_size=(8, 8))
    scheduler = make_scheduler("linear", 100, "ddim")
    x = initial_state(diffusion, scheduler, steps=5, batch=2, seed=0)
    assert x.device == meta and scheduler.timesteps.device == meta and x.shape == (2, 1, 8, 8)
