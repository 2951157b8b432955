"""One vocabulary: every user-facing setting has one name, one default and one range, shared by the page
widget, the CLI flag, the JSON field and the docs.

Why: the same setting used to differ by surface — the fooling page grew under L∞ 0.05 while ``fool grow``
had no budget, the inversion page inverted for 200 steps and ``invert`` for 400, the feature-vis page took
steps up to 4,096 while the CLI took 10,000. Here each command's settings are listed once: the name (the
settings dataclass field and JSON key), the CLI flag, the page label and widget key; the default comes from
the library (the settings dataclass or constant the command runs with), the range from
:mod:`explorer.limits`. Pages build their widgets from it (:mod:`explorer.ui.settings_widgets`), the CLI's
defaults and the pages' widgets are tested against it (``tests/test_vocabulary.py``), and
``docs/vocabulary.md`` is generated from it (``python -m explorer.vocabulary > docs/vocabulary.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import limits


@dataclass(frozen=True)
class Term:
    """One setting of one command. ``limit`` names its row in :data:`explorer.limits.LIMITS` (None for
    choices, text and switches); ``lo`` narrows it (commands need at least one step); ``page_min`` is the
    page widget's smallest value when the range is open below (a learning rate must be > 0)."""

    name: str
    flag: str
    label: str
    key: str | None
    default: Any
    limit: str | None = None
    lo: float | None = None
    page_min: float | None = None
    choices: tuple | None = None
    meaning: str = ""

    @property
    def range(self) -> limits.Limit | None:
        if self.limit is None:
            return None
        base = limits.LIMITS[self.limit]
        if self.lo is None:
            return base
        return limits.Limit(self.lo, base.hi, base.unit, "", base.integer, False, base.label)

    def widget_range(self) -> tuple[float, float]:
        """(min, max) of the page's number widget: the limit's range (an open lower end → ``page_min``)."""
        r = self.range
        if r is None:
            raise ValueError(f"{self.name} has no numeric range")
        lo = self.page_min if r.lo_open else r.lo
        if r.integer:
            return int(lo), int(r.hi)
        return float(lo), float(r.hi)

    def describe_range(self) -> str:
        if self.choices:
            return " / ".join(str(c) for c in self.choices)
        return self.range.describe() if self.range is not None else ""


@dataclass(frozen=True)
class Command:
    """A CLI command and the page (and, where the page has several, the mode) that does the same job."""

    command: tuple[str, ...]
    page: str
    mode: str
    terms: tuple[Term, ...]

    def term(self, name: str) -> Term:
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"{' '.join(self.command)} has no setting {name!r}")


def _render_terms() -> tuple[Term, ...]:
    from .optvis import RenderSettings
    from .optvis.param import PARAMETERISATIONS

    d = RenderSettings()
    return (
        Term("steps", "--steps", "Steps", "fv_steps", d.steps, "steps", lo=1, meaning="optimiser steps"),
        Term("size", "--size", "Size (px)", "fv_size", d.size, "size", meaning="side of the rendered image"),
        Term("seed", "--seed", "Seed", "fv_seed", d.seed, "seed"),
        Term("lr", "--lr", "Learning rate", "fv_lr", d.lr, "lr", page_min=0.001),
        Term("param", "--param", "Parameterisation", "fv_param", d.param, choices=tuple(PARAMETERISATIONS)),
        Term("transforms", "--transforms", "Transforms", "fv_transforms", d.transforms,
             choices=("standard", "lucent", "none")),
        Term("decay", "--decay", "Spectrum decay", "fv_decay", d.decay, "decay", meaning="Fourier amplitude 1/f^decay"),
        Term("tv", "--tv", "Total variation weight", "fv_tv", d.tv, "tv"),
        Term("alpha", "--alpha", "α-norm weight (α=6)", "fv_alpha", d.alpha, "alpha"),
        Term("l2", "--l2", "L2 weight", "fv_l2", d.l2, "l2"),
        Term("blur_every", "--blur-every", "Blur every N steps (0: off)", "fv_blur_every", d.blur_every, "blur_every"),
        Term("blur_sigma", "--blur-sigma", "Blur σ (px)", "fv_blur_sigma", d.blur_sigma, "blur_sigma"),
        Term("diversity", "--diversity", "Diversity weight", "fv_diversity", d.diversity, "diversity"),
        Term("units", "--units", "Units", "fv_units", "0-3", meaning="units of the layer, one image each: 0-15,20 "
             "(`--channels` is the same option)"),
    )


def _inversion_terms() -> tuple[Term, ...]:
    from .inversion import INIT_MODES, InversionSettings

    d = InversionSettings()
    return (
        Term("size", "--size", "Size (px)", "inv_size", d.size, "size", meaning="the photo is fitted to size × size"),
        Term("steps", "--steps", "Steps", "inv_steps", d.steps, "steps", lo=1),
        Term("lr", "--lr", "Learning rate", "inv_lr", d.lr, "lr", page_min=0.001),
        Term("seed", "--seed", "Seed", "inv_seed", d.seed, "seed"),
        Term("param", "--param", "Parameterisation", "inv_param", d.param, choices=("fft", "pixel")),
        Term("init", "--init", "Start from", "inv_init", d.init, choices=tuple(INIT_MODES)),
        Term("transforms", "--transforms", "Transforms", "inv_transforms", d.transforms,
             choices=("none", "standard", "lucent")),
    )


def _deep_dream_terms() -> tuple[Term, ...]:
    from .inversion import DeepDreamSettings

    d = DeepDreamSettings()
    return (
        Term("size", "--size", "Size (px)", "inv_size", d.size, "size"),
        Term("octaves", "--octaves", "Octaves", "inv_octaves", d.octaves, "octaves"),
        Term("octave_scale", "--octave-scale", "Octave scale", "inv_octave_scale", d.octave_scale, "octave_scale"),
        Term("steps", "--steps", "Steps per octave", "inv_dream_steps", d.steps, "steps", lo=1),
        Term("lr", "--lr", "Step size", "inv_dream_lr", d.lr, "lr", page_min=0.001),
        Term("jitter", "--jitter", "Jitter (px)", "inv_jitter", d.jitter, "jitter"),
        Term("seed", "--seed", "Seed", "inv_seed", d.seed, "seed"),
    )


def _caricature_terms() -> tuple[Term, ...]:
    from .inversion import CaricatureSettings

    d = CaricatureSettings()
    return (
        Term("size", "--size", "Size (px)", "inv_size", d.size, "size"),
        Term("steps", "--steps", "Steps", "inv_car_steps", d.steps, "steps", lo=1),
        Term("param", "--param", "Parameterisation", "inv_car_param", d.param, choices=("fft", "pixel")),
        Term("cos_floor", "--cos-floor", "Cosine floor", "inv_cos_floor", d.cos_floor, "cos_floor"),
        Term("cos_power", "--cos-power", "Cosine power", "inv_cos_power", d.cos_power, "cos_power"),
        Term("transforms", "--transforms", "Transforms", "inv_car_transforms", d.transforms,
             choices=("standard", "lucent", "none")),
        Term("seed", "--seed", "Seed", "inv_seed", d.seed, "seed"),
    )


def _grow_terms() -> tuple[Term, ...]:
    from . import fooling

    return (
        Term("steps", "--steps", "Step limit", "fool_grow_steps", fooling.GROW_STEPS, "steps", lo=1),
        Term("lr", "--lr", "Learning rate", "fool_grow_lr", fooling.GROW_LR, "lr", page_min=0.001),
        Term("goal", "--goal", "Target confidence", "fool_grow_goal", fooling.TARGET_CONFIDENCE, "goal", page_min=0.5,
             meaning="stop once the saved 8-bit PNG reaches it"),
        Term("budget", "--budget", "Budget around the start", "fool_grow_budget", fooling.DEFAULT_BUDGET,
             meaning="linf:EPS, l2:EPS or none (a CPPN has none)"),
        Term("index", "--index", "Sample index", "fool_grow_index", 0, "index",
             meaning="the sample of the family a sweep with this seed saw"),
        Term("seed", "--seed", "Seed", "fool_grow_seed", 0, "seed"),
        Term("param", "--param", "Parameterisation", "fool_grow_param", "pixel", choices=("pixel", "cppn")),
        Term("family", "--family", "Start from", "fool_grow_family", "uniform", choices=tuple(fooling.FAMILIES)),
    )


def _sweep_terms() -> tuple[Term, ...]:
    from . import fooling

    return (
        Term("n", "--n", "Samples per family", "fool_sweep_n", fooling.SWEEP_N, "n"),
        Term("seed", "--seed", "Seed", "fool_sweep_seed", 0, "seed"),
        Term("batch", "--batch", "Batch", "fool_sweep_batch", fooling.SWEEP_BATCH, "batch",
             meaning="images per forward pass; results do not depend on it"),
        Term("families", "--families", "Noise families", "fool_sweep_families", ",".join(fooling.SWEEP_FAMILIES),
             meaning="comma-separated on the command line"),
    )


def _gallery_terms() -> tuple[Term, ...]:
    from .gallery.builder import THUMBNAILS

    return (
        Term("size", "--size", "Size (px)", "gal_size", THUMBNAILS.size, "size", meaning="thumbnail side"),
        Term("steps", "--steps", "Steps", "gal_steps", THUMBNAILS.steps, "steps", lo=1),
        Term("batch", "--batch", "Batch", "gal_batch", 16, "batch", meaning="units optimised together"),
    )


def _diffusion_terms() -> tuple[Term, ...]:
    import inspect

    from .diffusion.recorder import sample_chain

    p = {name: param.default for name, param in inspect.signature(sample_chain).parameters.items()}
    return (
        Term("sampler", "--sampler", "Sampler", "diff_sampler", p["sampler"], choices=("ddim", "ddpm", "ancestral")),
        Term("steps", "--steps", "Steps", "diff_steps", p["steps"],
             meaning="sampling steps: 1 to the model's training timesteps T"),
        Term("eta", "--eta", "η (DDIM)", "diff_eta", p["eta"], "eta", meaning="DDIM noise (0: deterministic)"),
        Term("seed", "--seed", "Seed", "diff_seed", p["seed"], "seed"),
        Term("n", "--n", "Samples", "diff_batch", p["batch"], "batch", meaning="chains sampled together"),
    )


def _audio_terms() -> tuple[Term, ...]:
    from .audio.dream import PARAMS, DreamSettings

    d = DreamSettings()
    return (
        Term("steps", "--steps", "Steps", "audio_steps", d.steps, "steps", lo=1),
        Term("lr", "--lr", "Learning rate", "audio_lr", d.lr, "lr", page_min=0.001),
        Term("seed", "--seed", "Seed", "audio_seed", d.seed, "seed"),
        Term("param", "--param", "Parameterisation", "audio_param", d.param, choices=tuple(PARAMS)),
        Term("start", "--start", "Start from", "audio_start", d.start,
             meaning="a built-in clip or a sound file; "
                     "with the synthesiser, noise/silence = random synthesiser settings"),
    )


_BUILDERS: tuple[tuple[tuple[str, ...], str, str, Callable[[], tuple[Term, ...]]], ...] = (
    (("visualize",), "feature_vis.py", "", _render_terms),
    (("invert",), "inversion.py", "Invert layers", _inversion_terms),
    (("dream",), "inversion.py", "DeepDream", _deep_dream_terms),
    (("caricature",), "inversion.py", "Caricature", _caricature_terms),
    (("fool", "grow"), "fooling.py", "Grow a fooling image", _grow_terms),
    (("fool", "sweep"), "fooling.py", "How often does noise fool it?", _sweep_terms),
    (("gallery", "build"), "gallery.py", "", _gallery_terms),
    (("diffusion", "sample"), "diffusion.py", "Sampling chain (reverse process)", _diffusion_terms),
    (("audio", "dream"), "audio.py", "", _audio_terms),
)


def commands() -> list[Command]:
    """Every command whose settings a page shares, with its terms (defaults read from the library now)."""
    return [Command(cmd, page, mode, build()) for cmd, page, mode, build in _BUILDERS]


def command(*words: str) -> Command:
    for c in commands():
        if c.command == tuple(words):
            return c
    raise KeyError(" ".join(words))


def term(command_words: str, name: str) -> Term:
    """``term("fool grow", "steps")``."""
    return command(*command_words.split()).term(name)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None or value == "" else str(value)


def markdown() -> str:
    """docs/vocabulary.md: one table per command (generated; a test compares the file with this)."""
    lines = ["# Vocabulary: one name, one default, one range",
             "",
             ("Generated from `explorer/vocabulary.py` (`python -m explorer.vocabulary > docs/vocabulary.md`); "
              "`tests/test_vocabulary.py` checks the CLI flags and defaults, the pages' widgets (label, default, "
              "range) and this file against it. The JSON a command writes uses the *name* column (its `settings` "
              "object). Ranges come from `explorer/limits.py`; a page whose range is open below (a learning rate must "
              "be > 0) starts its widget at the smallest useful value."),
             ""]
    for c in commands():
        where = f"page `{c.page}`" + (f", {c.mode}" if c.mode else "")
        lines += [f"## `python -m explorer {' '.join(c.command)}` — {where}", "",
                  "| name (JSON) | CLI flag | page label | default | range | meaning |", "|---|---|---|---|---|---|"]
        for t in c.terms:
            lines.append(f"| `{t.name}` | `{t.flag}` | {t.label} | {_fmt(t.default)} | {t.describe_range()} | "
                         f"{t.meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown(), end="")
