"""Two imaginations of one concept, side by side, each judged by the network that did not make it.

* The classifier's imagination: feature visualisation of ``fashion_cnn``'s class logit — the project's own
  render engine (:func:`explorer.optvis.render.render`: gradient ascent with its parameterisation,
  transformation robustness and priors) at 28 px, grey. Judged by the noise-aware classifier at t = 0.
* The generative model's imagination: diffusion samples guided toward the class by the noise-aware
  classifier (:mod:`explorer.diffusion.guidance`). Judged by the clean ``fashion_cnn``.

Neither judge saw the other's images being made, so a verdict can fail: a feature visualisation is often a
pattern that excites one network and means nothing to another.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..models.base import LoadedModel
from ..optvis.objectives import class_logit
from ..optvis.render import RenderSettings, render
from ..progress import ProgressCallback, ShouldStop
from .guidance import Denoiser, guided_samples
from .judge import rate
from .noisy_classifier import NoisyClassifier

# 28-px grey renders: the decorrelated FFT param with the standard robustness set scaled to the size (pads and
# jitters of 2 px), a little total variation so the pattern is not all pixel noise
FASHION_RENDER = RenderSettings(size=28, steps=256, lr=0.05, param="fft", tv=0.05, seed=0, autocast=False)


@dataclass
class Imaginations:
    cls: int
    label: str
    labels: list[str]
    vis_images: torch.Tensor  # N×1×28×28 in [0, 1]: feature visualisation of the clean CNN's class logit
    vis_probs: torch.Tensor  # N×K: the noise-aware classifier at t = 0 on them
    vis_own_probs: torch.Tensor  # N×K: the clean CNN (which made them) on them — not a judgement, for contrast
    diffusion_images: torch.Tensor  # N×1×28×28: guided diffusion samples
    diffusion_probs: torch.Tensor  # N×K: the clean CNN on them
    diffusion_own_probs: torch.Tensor  # N×K: the noise-aware classifier (which guided them) at t = 0
    settings: dict
    seconds: float
    stopped: str | None = None

    def verdicts(self, which: str) -> list[dict]:
        """Per image: the judge's class and its probability of the target class."""
        probs = self.vis_probs if which == "vis" else self.diffusion_probs
        return [{"judged": self.labels[int(p.argmax())], "p_judged": round(float(p.max()), 3),
                 "p_target": round(float(p[self.cls]), 3)} for p in probs]

    def summary(self) -> dict:
        out = {"class": self.cls, "label": self.label, "settings": self.settings, "seconds": round(self.seconds, 1),
               "stopped": self.stopped}
        for key, probs, own, judge, maker in (("feature_visualisation", self.vis_probs, self.vis_own_probs,
                                               "noise-aware classifier at t = 0", "fashion_cnn"),
                                              ("guided_diffusion", self.diffusion_probs, self.diffusion_own_probs,
                                               "fashion_cnn", "noise-aware classifier (guide)")):
            if probs.numel():
                out[key] = {"judge": judge, "made_by": maker,
                            "judge_names_target": rate(int((probs.argmax(1) == self.cls).sum()), probs.shape[0]),
                            "judge_mean_p_target": round(float(probs[:, self.cls].mean()), 4),
                            "maker_names_target": rate(int((own.argmax(1) == self.cls).sum()), own.shape[0]),
                            "verdicts": self.verdicts("vis" if key.startswith("feature") else "diffusion")}
        return out


def two_imaginations(cnn: LoadedModel, noisy: NoisyClassifier, denoiser: Denoiser, cls: int, *, n: int = 8,
                     scale: float = 4.0, sampler: str = "ddim", seed: int = 0,
                     render_settings: RenderSettings = FASHION_RENDER,
                     callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> Imaginations:
    """``n`` feature visualisations of ``cnn``'s class ``cls`` and ``n`` diffusion samples guided toward it."""
    from .recorder import Probe

    began = time.perf_counter()
    settings = render_settings.with_(seed=seed)
    total = settings.steps + denoiser.num_steps

    def phase(offset):
        def report(done, _total, preview, values):
            if callback:
                callback(offset + done, total, preview, values)
        return report

    vis = render(cnn, class_logit([cls] * n), settings, callback=phase(0), should_stop=should_stop)
    empty = torch.zeros((0, *vis.images.shape[1:]))
    stopped = vis.stopped
    samples, dprobs, down = empty, torch.zeros((0, len(cnn.labels))), torch.zeros((0, len(cnn.labels)))
    if not stopped:
        guided = guided_samples(denoiser, noisy, [cls] * n, scale=scale, sampler=sampler, seed=seed,
                                callback=phase(settings.steps), should_stop=should_stop)
        stopped = guided.stopped
        if not stopped:
            samples = guided.images
            dprobs = Probe(cnn)(samples)
            down = noisy.probabilities_clean(samples)
    return Imaginations(
        cls=cls, label=cnn.labels[cls], labels=list(cnn.labels), vis_images=vis.images.cpu(),
        vis_probs=noisy.probabilities_clean(vis.images), vis_own_probs=Probe(cnn)(vis.images.cpu()),
        diffusion_images=samples, diffusion_probs=dprobs, diffusion_own_probs=down,
        settings={"render": settings.to_dict(), "objective": f"fashion_cnn logit {cls}",
                  "diffusion": denoiser.model.name, "sampler": sampler, "steps": denoiser.num_steps,
                  "scale": scale, "seed": seed, "n": n},
        seconds=time.perf_counter() - began, stopped=stopped,
    )
