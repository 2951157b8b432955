"""Inpainting by conditioning an unconditional DDPM (Sohl-Dickstein et al. 2015 §3.5; RePaint, Lugmayr et al. 2022).

At every reverse step the known pixels of the state are replaced by the known image forward-noised to that
step's level, x_i^known = √ᾱ_i·x0 + √(1 − ᾱ_i)·ε (fresh ε each time), and the model denoises the whole
image; after the last step the known pixels are the image itself. RePaint's resampling is an option: after
``jump`` steps down, the state is noised ``jump`` steps back up (x_i = √(ᾱ_i/ᾱ_{i−1})·x_{i−1} + √(1 − ᾱ_i/ᾱ_{i−1})·z
one step at a time) and denoised again, ``resample`` times in all, so the generated part has more chances to
agree with the known part. The steps are the Gaussian diffusion core's (:class:`~.guidance.Denoiser`).

Masks name the *hidden* region: ``left``, ``right``, ``top``, ``bottom`` (halves), ``centre`` (the middle
half-size box), or an uploaded mask image (white = hidden).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import limits
from ..errors import UserInputError
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested
from ..stats import mean_bootstrap_interval
from .guidance import Denoiser, to_unit

MASKS = ("left", "right", "top", "bottom", "centre")
SAMPLERS = ("ancestral", "ddim")


def hidden_mask(name: str, size: tuple[int, int]) -> torch.Tensor:
    """H×W bool, True where the pixel is hidden."""
    h, w = size
    mask = torch.zeros(h, w, dtype=torch.bool)
    if name == "left":
        mask[:, : w // 2] = True
    elif name == "right":
        mask[:, w // 2 :] = True
    elif name == "top":
        mask[: h // 2] = True
    elif name == "bottom":
        mask[h // 2 :] = True
    elif name in ("centre", "center"):
        mask[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    else:
        raise UserInputError(f"Unknown mask {name!r}: use one of {', '.join(MASKS)} or upload a mask image.")
    return mask


def mask_from_image(image01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An uploaded mask (C×H×W in [0, 1], any size): white (> 0.5 after resizing to ``size``) = hidden."""
    grey = image01.float().mean(0, keepdim=True)[None]
    grey = torch.nn.functional.interpolate(grey, size=size, mode="bilinear", align_corners=False)[0, 0]
    mask = grey > 0.5
    if not bool(mask.any()) or bool(mask.all()):
        raise UserInputError("The mask hides nothing or everything: paint the hidden region white on black.")
    return mask


def repaint_levels(num_steps: int, jump: int = 1, resample: int = 1) -> list[int]:
    """The sequence of noise levels visited (level L = the state fed to kept step L − 1; level 0 = clean).

    resample = 1: K, K−1, …, 0 (plain inpainting). Otherwise RePaint's schedule: at every ``jump``-th level
    (0, jump, 2·jump, … below K − jump) the chain goes back up ``jump`` levels, ``resample − 1`` times."""
    if jump < 1 or resample < 1:
        raise UserInputError("RePaint needs jump ≥ 1 and resample ≥ 1.")
    limits.check("steps", num_steps * resample, what="kept steps × RePaint resample")  # bounds the list below
    jumps = {j: resample - 1 for j in range(0, max(0, num_steps - jump), jump)}
    level, seq = num_steps, [num_steps]
    while level >= 1:
        level -= 1
        seq.append(level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump):
                level += 1
                seq.append(level)
    return seq


@dataclass
class InpaintResult:
    completions: torch.Tensor  # B×K×C×H×W in [0, 1]
    originals: torch.Tensor  # B×C×H×W in [0, 1]
    hidden: torch.Tensor  # B×1×H×W bool
    settings: dict
    seconds: float
    denoise_steps: int  # network evaluations per image (RePaint: more than the chain's steps)
    stopped: str | None = None

    @property
    def masked(self) -> torch.Tensor:
        """The inputs with the hidden pixels black (what a classifier sees without imagination)."""
        return self.originals * (~self.hidden)


def inpaint(denoiser: Denoiser, images01: torch.Tensor, hidden: torch.Tensor, *, k: int = 4,
            sampler: str = "ancestral", eta: float = 0.0, seed: int = 0, jump: int = 1, resample: int = 1,
            callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None,
            preview_every: int = 0) -> InpaintResult:
    """``k`` completions of each image (B×C×H×W in [0, 1], the model's size) whose ``hidden`` pixels (H×W or
    B×1×H×W bool) the model imagines. All randomness comes from one CPU generator seeded with ``seed``."""
    if sampler not in SAMPLERS:
        raise UserInputError(f"Unknown sampler {sampler!r}: use {' or '.join(SAMPLERS)}.")
    if images01.ndim != 4 or tuple(images01.shape[1:]) != denoiser.shape:
        raise UserInputError(f"Inpainting needs images of shape B×{'×'.join(map(str, denoiser.shape))}.")
    limits.check("batch", k, what="completions per image")
    limits.check("batch", images01.shape[0] * k, what="images × completions")
    b = images01.shape[0]
    hidden = hidden.bool()
    hidden = (hidden.view(1, 1, *hidden.shape[-2:]) if hidden.ndim == 2 else hidden).expand(b, 1, -1, -1)
    device = denoiser.device
    x0 = (images01.float() * 2 - 1).repeat_interleave(k, dim=0).to(device)
    known = (~hidden).repeat_interleave(k, dim=0).to(device).float()
    gen = torch.Generator().manual_seed(int(seed))

    def noise() -> torch.Tensor:
        return torch.randn(x0.shape, generator=gen).to(device)

    proc = denoiser.process
    levels = repaint_levels(denoiser.num_steps, jump, resample)
    total = sum(1 for a, c in zip(levels, levels[1:]) if c < a)
    x = noise()
    began, stopped, done = time.perf_counter(), None, 0
    for prev_level, level in zip(levels, levels[1:]):
        if stop_requested(should_stop):
            stopped = CANCELLED
            break
        if level < prev_level:  # denoise kept step i = prev_level − 1, the known pixels at its noise level first
            i = prev_level - 1
            x = known * proc.q_sample(x0, i, noise()) + (1 - known) * x
            out = denoiser.step(x, i, sampler=sampler, eta=eta, generator=gen)
            x = out.prev_sample.detach()
            done += 1
            if callback:
                show = preview_every and (done % preview_every == 0 or done == total)
                callback(done, total, to_unit(known * x0 + (1 - known) * out.x0) if show else None, None)
        else:  # RePaint: noise one level back up, x_i ~ N(√(ᾱ_i/ᾱ_{i−1})·x_{i−1}, 1 − ᾱ_i/ᾱ_{i−1})
            i = level - 1
            ratio = float(proc.alphas_cumprod[i] / proc.alphas_cumprod_prev[i])
            x = ratio**0.5 * x + (1 - ratio) ** 0.5 * noise()
    completions = to_unit(x).view(b, k, *denoiser.shape)
    if stopped is None:  # after the last step the known pixels are the image itself, exactly
        keep = (~hidden).unsqueeze(1).expand_as(completions)
        completions = torch.where(keep, images01.float().cpu().unsqueeze(1).expand_as(completions), completions)
    settings = {"model": denoiser.model.name, "sampler": sampler, "steps": denoiser.num_steps, "eta": eta,
                "seed": int(seed), "k": k, "jump": jump, "resample": resample}
    return InpaintResult(completions, images01.float().cpu(), hidden.cpu(), settings, time.perf_counter() - began,
                         done, stopped)


# ---- how often the imagined part is right -----------------------------------------------------------------
def _rate_row(per_image_hits: torch.Tensor, k: int) -> dict:
    from .judge import rate

    n = per_image_hits.numel()
    hits = int(per_image_hits.sum())
    if k == 1:
        return rate(hits, n) | {"interval": "Clopper-Pearson"}
    # k completions of one image are not independent: the wider of a bootstrap over images and the exact
    # interval that counts each image once (it never collapses to a point at 0 % or 100 %)
    low, high = mean_bootstrap_interval(per_image_hits.float() / k)
    exact = rate(round(hits / k), n)["ci95"]
    low, high = min(low, exact[0]), max(high, exact[1])
    return {"hits": hits, "n": n * k, "rate": round(hits / (n * k), 4), "ci95": [round(low, 4), round(high, 4)],
            "interval": f"wider of a bootstrap over {n} images and Clopper-Pearson with n = {n} images"}


@dataclass
class MatchReport:
    rows: list[dict]  # one per mask: completions' match rate, the clean CNN on the masked image, chance
    examples: dict[str, InpaintResult]  # mask -> the first chunk's result (for pictures)
    settings: dict
    seconds: float
    stopped: str | None = None

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": self.rows, "seconds": round(self.seconds, 1),
                "stopped": self.stopped}


def match_rates(denoiser: Denoiser, judge_model, images01: torch.Tensor, labels: torch.Tensor, *,
                masks: list[str] | tuple[str, ...] = MASKS, k: int = 1, sampler: str = "ancestral", eta: float = 0.0,
                seed: int = 0, jump: int = 1, resample: int = 1, chunk: int = 100,
                callback: ProgressCallback | None = None, should_stop: ShouldStop | None = None) -> MatchReport:
    """Per mask: how often the clean judge names the true label on the completions ("the model imagines the
    hidden part right"), beside the judge on the masked image (hidden pixels black: no imagination), on the
    whole original, and chance (1 / classes). Chunk j of images is seeded with ``seed·1000 + j``."""
    from .judge import rate
    from .recorder import Probe

    probe = Probe(judge_model)
    n = images01.shape[0]
    chunks = list(range(0, n, chunk))
    levels = repaint_levels(denoiser.num_steps, jump, resample)
    per_chunk = sum(1 for a, c in zip(levels, levels[1:]) if c < a)  # network evaluations per chunk
    total = len(masks) * len(chunks) * per_chunk
    began, rows, examples, stopped, done = time.perf_counter(), [], {}, None, 0
    original_hits = (probe(images01).argmax(1) == labels)
    for name in masks:
        hidden = hidden_mask(name, denoiser.shape[-2:])
        hits, masked_hits = [], []
        for j, start in enumerate(chunks):
            offset = done

            def report(step, _total, preview, values, offset=offset):
                if callback:
                    callback(offset + step, total, preview, values)

            result = inpaint(denoiser, images01[start : start + chunk], hidden, k=k, sampler=sampler, eta=eta,
                             seed=seed * 1000 + j, jump=jump, resample=resample,
                             callback=report, should_stop=should_stop)
            done += per_chunk
            if result.stopped:
                stopped = result.stopped
                break
            if j == 0:
                examples[name] = result
            b = result.completions.shape[0]
            verdict = probe(result.completions.flatten(0, 1)).argmax(1).view(b, k)
            truth = labels[start : start + chunk].view(-1, 1)
            hits.append((verdict == truth).sum(1))
            masked_hits.append(probe(result.masked).argmax(1) == truth.view(-1))
        if stopped:
            break
        hits_t, masked_t = torch.cat(hits), torch.cat(masked_hits)
        rows.append({"mask": name, "images": int(hits_t.numel()), "k": k,
                     "completions": _rate_row(hits_t, k),
                     "masked_image": rate(int(masked_t.sum()), int(masked_t.numel())),
                     "original_image": rate(int(original_hits[: hits_t.numel()].sum()), int(hits_t.numel())),
                     "chance": round(1 / len(probe.labels), 4)})
    settings = {"model": denoiser.model.name, "judge": judge_model.name, "sampler": sampler,
                "steps": denoiser.num_steps, "eta": eta, "seed": seed, "k": k, "jump": jump, "resample": resample,
                "images": int(n), "masks": list(masks)}
    return MatchReport(rows, examples, settings, time.perf_counter() - began, stopped)
