"""What each step decides: DDPM's shared-latent experiment (Ho et al. 2020, §4.3 and Fig. 7).

Run one stochastic chain; at branch points t = T, 0.9T, …, 0.1T, 0 take the state x_t it passed through and
finish K fresh continuations from it (same model, new noise). If the branches' final class (the clean
judge's verdict) agrees with the original chain's final class, the class was already decided at t. Plotted
against t: the agreement with the original's class and the spread of the branches in the judge's features.

Branch point t_f is the state fed to kept step i_f = round(f · (K_steps − 1)) (f = 1: x_T itself; f = 0: the
state before the last step, which adds no noise, so all branches end identical). A branch from x_T is
exactly the sampler started at that x_T with the branch's generator ("same seed rules").

Beside it the recorder's "settles for good" step (:func:`explorer.diffusion.analysis.settle_steps`): the
first step from which the judge's argmax on x_t (or on x̂0) equals the final class at every later step. The
two answer different questions: settling asks when the class becomes *readable* from the state, branching
when it is *determined* by it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import limits
from ..errors import UserInputError
from ..progress import CANCELLED, ProgressCallback, ShouldStop, stop_requested
from .analysis import settle_steps
from .guidance import Denoiser, initial_noise, run_chain
from .judge import mean_pairwise_distance

FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
SAMPLERS = ("ancestral", "ddim")


def branch_steps(num_steps: int, fractions=FRACTIONS) -> list[int]:
    """Kept-step index of each branch point (f = 1: the first step, fed x_T; f = 0: the last)."""
    return [int(round(f * (num_steps - 1))) for f in fractions]


def branch_generator(seed: int, point: int, chunk: int) -> torch.Generator:
    """The generator of the branches of one branch point and chunk of chains: disjoint from every chain's own."""
    state = np.random.SeedSequence([int(seed), 1, int(point), int(chunk)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def chain_generator(seed: int, chunk: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), 0, int(chunk)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def crossing_t(ts: list[int], agreement: np.ndarray, level: float) -> float | None:
    """Going from noise (t = T) toward t = 0, the t at which the agreement first reaches ``level``, linearly
    interpolated between branch points; None when it never does."""
    for j, a in enumerate(agreement):
        if a >= level:
            if j == 0:
                return float(ts[0])
            a0, a1, t0, t1 = agreement[j - 1], a, ts[j - 1], ts[j]
            return float(t0 + (level - a0) / (a1 - a0) * (t1 - t0)) if a1 != a0 else float(t1)
    return None


@dataclass
class BranchReport:
    ts: list[int]  # training timestep of each branch point (T … 0)
    steps: list[int]  # kept-step index of each branch point
    agreement: np.ndarray  # chains × points: share of a chain's K branches whose class is the original's
    spread: np.ndarray  # chains × points: mean pairwise distance of a chain's branches in the judge's features
    original_classes: torch.Tensor  # chains
    branch_classes: torch.Tensor  # chains × points × K
    settle_t_xt: list[int | None]  # per chain: the t from which the judge's argmax on x_t is final for good
    settle_t_x0: list[int | None]
    originals: torch.Tensor  # chains × C×H×W in [0, 1]
    grid_images: torch.Tensor  # points × K × C×H×W: the branches of the first chain (the grid)
    settings: dict
    seconds: float
    labels: list[str]
    stopped: str | None = None

    @property
    def mean_agreement(self) -> np.ndarray:
        return self.agreement.mean(0)

    def chance_agreement(self) -> float:
        """The agreement two independent samples would show: Σ_c p_c² over the original chains' class shares."""
        counts = torch.bincount(self.original_classes, minlength=len(self.labels)).double()
        p = counts / max(1, len(self.original_classes))
        return float((p**2).sum())

    def crossing(self, level: float, repeats: int = 2000, seed: int = 0) -> dict:
        """The t at which mean agreement first reaches ``level``, with a bootstrap 95 % interval over chains."""
        point = crossing_t(self.ts, self.mean_agreement, level)
        gen = np.random.default_rng(seed)
        n = self.agreement.shape[0]
        draws = []
        never = 0
        for _ in range(repeats):
            t = crossing_t(self.ts, self.agreement[gen.integers(0, n, n)].mean(0), level)
            if t is None:
                never += 1
            else:
                draws.append(t)
        interval = [round(float(np.percentile(draws, 2.5)), 1),
                    round(float(np.percentile(draws, 97.5)), 1)] if draws else None
        return {"level": level, "t": None if point is None else round(point, 1), "ci95": interval,
                "bootstrap_never": never, "chains": n}

    def settle_summary(self, which: str = "x_t", repeats: int = 2000, seed: int = 0) -> dict:
        values = self.settle_t_xt if which == "x_t" else self.settle_t_x0
        # "never" (even the last state disagrees) counts as t = −1: later than any step
        t = np.array([-1 if v is None else v for v in values], dtype=float)
        gen = np.random.default_rng(seed)
        medians = [float(np.median(t[gen.integers(0, len(t), len(t))])) for _ in range(repeats)]
        return {"state": which, "median_t": float(np.median(t)), "ci95": [float(np.percentile(medians, 2.5)),
                float(np.percentile(medians, 97.5))], "never": int((t < 0).sum()), "chains": len(t)}

    def to_dict(self) -> dict:
        return {
            "settings": self.settings, "t": self.ts, "kept_steps": self.steps,
            "agreement": [round(float(a), 4) for a in self.mean_agreement],
            "spread": [round(float(s), 4) for s in self.spread.mean(0)],
            "chance_agreement": round(self.chance_agreement(), 4),
            "agreement_50": self.crossing(0.5), "agreement_90": self.crossing(0.9),
            "settle_x_t": self.settle_summary("x_t"), "settle_x0": self.settle_summary("x0"),
            "original_classes": self.original_classes.tolist(),
            "per_chain_agreement": [[round(float(a), 3) for a in row] for row in self.agreement],
            "seconds": round(self.seconds, 1), "stopped": self.stopped,
        }


def branch_experiment(denoiser: Denoiser, judge_model, *, chains: int = 100, k: int = 8,
                      fractions=FRACTIONS, sampler: str = "ancestral", eta: float = 1.0, seed: int = 0,
                      chunk: int | None = None, callback: ProgressCallback | None = None,
                      should_stop: ShouldStop | None = None) -> BranchReport:
    """``chains`` original chains, and from each of their branch points ``k`` continuations, all judged by
    ``judge_model`` (a clean classifier LoadedModel). DDIM needs η > 0 (with η = 0 every branch is identical)."""
    from .quality import probe_outputs
    from .recorder import Probe

    if sampler not in SAMPLERS:
        raise UserInputError(f"Unknown sampler {sampler!r}: use {' or '.join(SAMPLERS)}.")
    if sampler == "ddim" and eta <= 0:
        raise UserInputError(
            "Branches of a deterministic DDIM chain (η = 0) are all identical: use η > 0 or ancestral.")
    limits.check("n", chains, what="chains")
    limits.check("batch", k, what="branches")
    probe = Probe(judge_model)
    chunk = chunk or max(1, min(chains, limits.MAX_BATCH // k))
    steps = branch_steps(denoiser.num_steps, fractions)
    ts = [denoiser.timestep_t(i) for i in steps]
    starts = list(range(0, chains, chunk))
    work = len(starts) * (denoiser.num_steps + sum(i + 1 for i in steps))
    began, done, stopped = time.perf_counter(), 0, None
    agreement, spread, originals, orig_classes, branch_classes = [], [], [], [], []
    settle_xt, settle_x0, grid_images = [], [], None

    def progress(offset):
        def report(step, _total, preview, values):
            if callback:
                callback(offset + step, work, preview, values)
        return report

    for j, start in enumerate(starts):
        n = min(chunk, chains - start)
        gen = chain_generator(seed, j)
        x_T = initial_noise(denoiser, n, gen)
        kept: dict[int, torch.Tensor] = {}
        probs_xt, probs_x0 = [], []
        wanted = set(steps)

        # observe runs inside this iteration's run_chain, so it sees this iteration's variables (B023 is wrong here)
        def observe(i, x, out):
            if i in wanted:  # noqa: B023
                kept[i] = x.detach().clone()  # noqa: B023
            both = torch.cat([x, out.x0]).detach().float()  # [−1, 1] → [0, 1] on the device: no host copy per step
            p = probe.on_device(((both + 1) / 2).clamp(0, 1))
            probs_xt.append(p[:n])  # noqa: B023
            probs_x0.append(p[n:])  # noqa: B023

        chain = run_chain(denoiser, x_T, sampler=sampler, eta=eta, generator=gen, observe=observe,
                          callback=progress(done), should_stop=should_stop)
        done += denoiser.num_steps
        if chain.stopped:
            stopped = chain.stopped
            break
        final = chain.images
        final_class = probe(final).argmax(1)
        for _name, probs, out in (("x_t", probs_xt, settle_xt), ("x0", probs_x0, settle_x0)):
            first = settle_steps(torch.stack(probs).cpu(), final_class)  # step index in chain order (0 = x_T)
            out.extend(denoiser.timestep_t(denoiser.num_steps - 1 - int(s)) if s >= 0 else None for s in first)
        chunk_agree, chunk_spread, chunk_classes = [], [], []
        for p, i in enumerate(steps):
            if stop_requested(should_stop):
                stopped = CANCELLED
                break
            x = kept[i].repeat_interleave(k, dim=0)
            branch = run_chain(denoiser, x, start=i, sampler=sampler, eta=eta, generator=branch_generator(seed, p, j),
                               callback=progress(done), should_stop=should_stop)
            done += i + 1
            if branch.stopped:
                stopped = branch.stopped
                break
            verdict = probe_outputs(judge_model, branch.images)
            classes = verdict.probabilities.argmax(1).view(n, k)
            feats = verdict.features.view(n, k, -1)
            chunk_agree.append((classes == final_class.view(-1, 1)).double().mean(1))
            chunk_spread.append(torch.tensor([mean_pairwise_distance(feats[c]) for c in range(n)], dtype=torch.float64))
            chunk_classes.append(classes)
            if j == 0:
                grid_images = branch.images.view(n, k, *branch.images.shape[1:])[0:1] if grid_images is None else \
                    torch.cat([grid_images, branch.images.view(n, k, *branch.images.shape[1:])[0:1]])
        if stopped:
            break
        agreement.append(torch.stack(chunk_agree, 1))
        spread.append(torch.stack(chunk_spread, 1))
        branch_classes.append(torch.stack(chunk_classes, 1))
        originals.append(final)
        orig_classes.append(final_class)
    done_chains = sum(a.shape[0] for a in agreement)
    settings = {"model": denoiser.model.name, "judge": judge_model.name, "sampler": sampler, "eta": eta,
                "steps": denoiser.num_steps, "chains": done_chains, "k": k, "seed": seed, "chunk": chunk,
                "fractions": list(fractions)}
    empty = torch.zeros((0,))
    return BranchReport(
        ts=ts, steps=steps,
        agreement=torch.cat(agreement).numpy() if agreement else np.zeros((0, len(steps))),
        spread=torch.cat(spread).numpy() if spread else np.zeros((0, len(steps))),
        original_classes=torch.cat(orig_classes) if orig_classes else empty.long(),
        branch_classes=torch.cat(branch_classes) if branch_classes else empty.long(),
        settle_t_xt=settle_xt[:done_chains], settle_t_x0=settle_x0[:done_chains],
        originals=torch.cat(originals) if originals else empty,
        grid_images=grid_images if grid_images is not None else empty,
        settings=settings, seconds=time.perf_counter() - began, labels=probe.labels, stopped=stopped,
    )
