"""Inpainting and branching on the Gaussian diffusion core, with denoisers whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from explorer.diffusion.branching import branch_experiment, branch_generator, branch_steps, crossing_t
from explorer.diffusion.guidance import Denoiser, run_chain
from explorer.diffusion.inpaint import hidden_mask, inpaint, mask_from_image, match_rates, repaint_levels
from explorer.diffusion.models import DiffusionModel
from explorer.diffusion.train import make_scheduler
from explorer.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")
ABAR = make_scheduler("linear").alphas_cumprod


def two_images(size: int = 8) -> torch.Tensor:
    """Two images in model space that differ in every half: a bright left/top vs a bright right/bottom."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    a = torch.where((xx < size // 2) ^ (yy < size // 2), 0.8, -0.8).float()
    return torch.stack([a, -a]).unsqueeze(1)  # 2×1×H×W


class MixtureUNet(torch.nn.Module):
    """The exact ε-predictor for data that is one of two images with equal odds: x̂0 = Σ_j w_j z_j with
    w ∝ exp(−‖x_t − √ᾱ z_j‖² / 2(1 − ᾱ)), ε = (x_t − √ᾱ x̂0)/√(1 − ᾱ)."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.config = SimpleNamespace(in_channels=1, sample_size=size)
        self.z = two_images(size)

    def forward(self, x, t):
        a = ABAR[t.long()].view(-1, 1, 1, 1).float()
        d = ((x.unsqueeze(1) - a.sqrt().unsqueeze(1) * self.z.unsqueeze(0)) ** 2).flatten(2).sum(2)  # B×2
        w = torch.softmax(-d / (2 * (1 - a.view(-1, 1))), dim=1)
        x0 = (w.view(-1, 2, 1, 1, 1) * self.z.unsqueeze(0)).sum(1)
        return SimpleNamespace(sample=(x - a.sqrt() * x0) / (1 - a).sqrt())


def mixture(steps: int = 20) -> Denoiser:
    model = DiffusionModel("mixture", MixtureUNet(), dict(make_scheduler("linear").config),
                           torch.device("cpu"), "memory")
    return Denoiser(model, steps)


def test_masks_and_repaint_schedule():
    left = hidden_mask("left", (8, 8))
    assert left[:, :4].all() and not left[:, 4:].any()
    assert hidden_mask("centre", (8, 8)).sum() == 16 and hidden_mask("bottom", (8, 8))[4:].all()
    with pytest.raises(UserInputError):
        hidden_mask("diagonal", (8, 8))
    upload = torch.zeros(3, 16, 16)
    upload[:, :8] = 1
    assert torch.equal(mask_from_image(upload, (8, 8)), hidden_mask("top", (8, 8)))
    with pytest.raises(UserInputError, match="hides nothing"):
        mask_from_image(torch.zeros(1, 8, 8), (8, 8))
    assert repaint_levels(5) == [5, 4, 3, 2, 1, 0]
    seq = repaint_levels(10, jump=2, resample=3)
    downs = sum(1 for a, b in zip(seq, seq[1:]) if b < a)
    assert seq[0] == 10 and seq[-1] == 0 and all(abs(a - b) == 1 for a, b in zip(seq, seq[1:]))
    assert downs == 10 + 2 * 2 * len(range(0, 8, 2))  # each of the 4 jump points adds (resample−1)·jump steps
    with pytest.raises(UserInputError, match="resample"):  # refused before the schedule list is built
        repaint_levels(1000, jump=1, resample=10**9)


@pytest.mark.parametrize("resample", [1, 3])
def test_inpainting_keeps_known_pixels_and_imagines_the_hidden_half_right(resample):
    """Known pixels end exactly equal to the image; the hidden half follows the known half (the data is one
    of two images), although unconditional samples pick either image."""
    denoiser = mixture(20)
    z = (two_images() + 1) / 2  # [0, 1]
    images = z[[0, 1]]
    hidden = hidden_mask("left", (8, 8))
    result = inpaint(denoiser, images, hidden, k=6, seed=3, jump=2, resample=resample)
    assert result.completions.shape == (2, 6, 1, 8, 8)
    known = (~hidden).expand(2, 6, 1, 8, 8)
    assert torch.equal(result.completions[known], images.unsqueeze(1).expand(2, 6, 1, 8, 8)[known])
    error = (result.completions - images.unsqueeze(1)).abs()[..., hidden]
    assert float(error.mean()) < 0.05, float(error.mean())
    assert result.denoise_steps == sum(
        1 for a, b in zip(repaint_levels(20, 2, resample), repaint_levels(20, 2, resample)[1:]) if b < a)
    # control: without conditioning, the same denoiser lands on each image about half the time
    free = run_chain(denoiser, torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                     sampler="ancestral", generator=torch.Generator().manual_seed(1)).images
    picks_first = ((free - z[0]).abs().flatten(1).mean(1) < 0.1).float().mean()
    assert 0.2 < float(picks_first) < 0.8


def test_inpaint_refuses_wrong_shapes():
    with pytest.raises(UserInputError, match="shape"):
        inpaint(mixture(4), torch.zeros(1, 1, 9, 9), hidden_mask("left", (9, 9)))


def test_match_rates_use_the_judge_and_report_intervals():
    """With a judge that reads the (normally hidden) left half, the completions match the truth while the
    black-masked image is classified from its visible half only."""
    from explorer.models.base import LoadedModel

    class LeftHalfSign(torch.nn.Module):
        """Reads only the left half: logit ±4·⟨(z0 − ½)·[left], x⟩ (first image: +, second: −)."""

        def __init__(self):
            super().__init__()
            self.features = torch.nn.Flatten()
            self.out = torch.nn.Linear(64, 2)
            with torch.no_grad():
                w = ((two_images()[0, 0] + 1) / 2 - 0.5) * hidden_mask("left", (8, 8)).float()
                self.out.weight.copy_(torch.stack([w, -w]).flatten(1) * 4)
                self.out.bias.zero_()

        def forward(self, x):
            return self.out(self.features(x))

    judge = LoadedModel("lefthalf", LeftHalfSign().eval(), torch.nn.Identity(), ["first", "second"], (8, 8),
                        torch.device("cpu"), "hand", channels=1, fixed_input_size=True)
    z = (two_images() + 1) / 2
    images = torch.cat([z[[0]]] * 5 + [z[[1]]] * 5)
    labels = torch.tensor([0] * 5 + [1] * 5)
    report = match_rates(mixture(12), judge, images, labels, masks=("left",), k=2, chunk=4)
    row = report.rows[0]
    assert row["completions"]["rate"] == 1.0 and row["completions"]["n"] == 20
    assert row["original_image"]["rate"] == 1.0 and row["chance"] == 0.5
    assert row["masked_image"]["rate"] == 0.5  # left half black: a tie, argmax says "first" for all ten
    assert row["completions"]["ci95"][1] == 1.0 and row["completions"]["ci95"][0] < 1.0


def test_branching_from_the_last_step_is_identical_and_from_x_T_is_the_sampler_itself():
    from explorer.models import load_model

    judge = load_model("fashion_cnn", weights="random", device="cpu")
    denoiser = mixture(10)
    report = branch_experiment(denoiser, judge, chains=3, k=4, fractions=(1.0, 0.5, 0.0), seed=2)
    assert report.steps == [9, 4, 0] and report.ts[0] == denoiser.timestep_t(9) and report.ts[-1] == 0
    assert report.agreement.shape == (3, 3)
    assert (report.agreement[:, -1] == 1).all() and (report.spread[:, -1] == 0).all()  # t = 0: K identical finals
    assert (report.branch_classes[:, -1] == report.original_classes.view(-1, 1)).all()
    assert report.grid_images.shape == (3, 4, 1, 8, 8)
    assert torch.equal(report.grid_images[-1], report.originals[0:1].expand(4, -1, -1, -1))
    # from x_T: branch b of chain 0 is the plain sampler started at that x_T with the branch generator
    from explorer.diffusion.branching import chain_generator
    from explorer.diffusion.guidance import initial_noise

    x_T = initial_noise(denoiser, 3, chain_generator(2, 0))
    again = run_chain(denoiser, x_T.repeat_interleave(4, 0), sampler="ancestral", eta=1.0,
                      generator=branch_generator(2, 0, 0))
    assert torch.equal(report.grid_images[0], again.images[:4])
    assert branch_steps(50) == [49, 44, 39, 34, 29, 24, 20, 15, 10, 5, 0]


def test_crossing_is_interpolated_from_noise_toward_zero():
    import numpy as np

    ts = [1000, 500, 0]
    assert crossing_t(ts, np.array([0.1, 0.3, 1.0]), 0.5) == pytest.approx(500 - (0.2 / 0.7) * 500)
    assert crossing_t(ts, np.array([0.6, 0.8, 1.0]), 0.5) == 1000.0
    assert crossing_t(ts, np.array([0.1, 0.2, 0.4]), 0.5) is None
    with pytest.raises(UserInputError, match="identical"):
        branch_experiment(mixture(4), None, chains=1, k=2, sampler="ddim", eta=0.0)
