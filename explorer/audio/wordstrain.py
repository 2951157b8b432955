"""Training and testing the keyword network on synthesised speech, with the augmentations that
make a few thousand clean synthetic words stand for many more:

* **pitch and rate** — each clip is resampled by a random factor 0.85–1.18 (tape speed: pitch
  and tempo move together; the engines' own settings already move them apart);
* **position** — the word lands anywhere in its one-second window;
* **room** — with probability 0.4, an impulse response of exponentially decaying noise (RT60
  0.05–0.6 s) after the direct sound;
* **loudness** — peak-normalised, then a random gain of 0 to −25 dB;
* **noise** — with probability 0.8, white, pink or brown noise at 0–30 dB SNR;
* **silence** — the ``_silence_`` class is noise alone (any colour, −70 to −15 dBFS) or digital
  near-silence;
* **vocal-tract length** (opt-in, ``TrainSettings.vtlp``) — VTLP (Jaitly & Hinton 2013): the
  STFT magnitude's frequency axis is warped by a random factor α ∈ [1 − v, 1 + v] per example,
  drawn apart from the tape-speed factor, piecewise-linear so that 0 and the Nyquist frequency
  stay fixed. The harmonics move too, but the 40 mel bands resolve them only below about 1 kHz:
  mostly it is the spectral envelope (the formants) that moves, as a longer or shorter vocal
  tract moves it.
* **channel colour** (opt-in, ``TrainSettings.random_eq``) — each example's spectrum is multiplied by
  its own smooth random gain curve (± D dB at six anchors from 100 Hz to 8 kHz, straight lines in
  log-frequency between them), as a microphone, a room's colouring or a recording chain would tilt it.

Classes are drawn evenly (``_unknown_`` twice as often: it stands for every other word). The
random numbers for step k come from a generator seeded with (seed, k), so a run resumed from its
checkpoint continues exactly as an uninterrupted one. Validation: espeak-ng's ``en-029`` accent is
kept out of training and picks nothing but is printed; the **test** is the held-out synthesiser
(festival), never seen in training, reported per voice and word.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import adversarial, devices
from ..errors import UserInputError
from ..files import write_json, write_safetensors, write_torch
from ..progress import CANCELLED, ProgressCallback, ShouldStop
from .spectrogram import stft
from .words import ARCHES, SAMPLE_RATE, SPEECH_EMBEDDING, WINDOW, WORDS_STFT, WordNet, build_net, check_widths
from .wordsdata import ENGINES, HELD_OUT, KOKORO, LABELS, PSEUDO, SILENCE, UNKNOWN, WordClips, load_clips

VALIDATION_ACCENT = "en-029"
MAX_ADV_EPS = 20.0  # a third of a clip's log-mel norm: beyond it the attack can rewrite the word
MAX_ADV_STEPS = 20  # each step costs one more forward and backward of the body per training step
NYQUIST_HZ = SAMPLE_RATE / 2


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (16, 32, 48, 64)
    dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 250
    stop_after: int | None = None  # stop (and write the net) at this step of the ``steps``-long schedule
    spec_mask: bool = False  # SpecAugment-style masks on the log-mel (≤ 2 bands of ≤ 6 mels, ≤ 2 spans of ≤ 12 frames)
    flite_weight: float = 1.0  # how much more often a flite clip (recorded human voices) is drawn than an espeak-ng one
    vtlp: float = 0.0  # VTLP: warp each example's frequency axis by α ∈ [1 − vtlp, 1 + vtlp] (0: off)
    pseudo_weight: float = 0.0  # flite-pseudo clips too, each drawn this much as often as an espeak-ng one (0: no)
    kokoro_weight: float = 0.0  # Kokoro's neural voices too, each clip drawn this much as often as an espeak-ng one
    random_eq: float = 0.0  # channel colour: a smooth random gain curve of ± this many dB per example (0: off)
    adv_eps: float = 0.0  # > 0: adversarial training, L2 radius of the attack on the log-mel (a clip's norm ≈ 60)
    adv_steps: int = 3  # PGD steps of that attack (each costs one more forward and backward of the body)
    front: str = "log-mel"  # "speech-embedding": a head over Google's frozen speech embedding (trained on real speech)
    head_width: int = 128  # that head's temporal-conv channels

    def __post_init__(self) -> None:
        """Every recipe knob bounded here, where the CLI and library callers both pass (before data or a net)."""
        check_widths(self.widths)
        if self.front not in ARCHES:
            raise UserInputError(f"--front {self.front!r}: one of {', '.join(ARCHES)}.")
        if not (isinstance(self.head_width, int) and 1 <= self.head_width <= 1024):
            raise UserInputError(f"--head-width {self.head_width}: a whole number of channels, 1 to 1024.")
        if self.front == SPEECH_EMBEDDING and (self.vtlp > 0 or self.random_eq > 0):
            raise UserInputError("--vtlp and --random-eq warp a log-mel net's spectrum; the speech embedding reads "
                                 "its own front end: use them with --front log-mel.")
        if not 0 < self.flite_weight <= 100:
            raise UserInputError(f"--flite-weight {self.flite_weight}: between 0 (exclusive) and 100.")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.steps:
            raise UserInputError(f"--stop-after {self.stop_after}: between 1 and --steps ({self.steps}).")
        if not 0 <= self.pseudo_weight <= 100:
            raise UserInputError(f"--pseudo-weight {self.pseudo_weight}: between 0 (not used) and 100.")
        if not 0 <= self.kokoro_weight <= 100:
            raise UserInputError(f"--kokoro-weight {self.kokoro_weight}: between 0 (not used) and 100.")
        if not 0 <= self.vtlp <= 0.3:
            raise UserInputError(f"--vtlp {self.vtlp}: the largest warp, between 0 (off) and 0.3.")
        if not 0 <= self.random_eq <= 24:
            raise UserInputError(f"--random-eq {self.random_eq}: the largest gain in dB, between 0 (off) and 24.")
        if not (math.isfinite(self.adv_eps) and 0 <= self.adv_eps <= MAX_ADV_EPS):
            raise UserInputError(f"--adv-eps {self.adv_eps}: an L2 radius on the log-mel between 0 (off) and "
                                 f"{MAX_ADV_EPS:g} (a one-second clip's log-mel has a norm of about 60).")
        if not (isinstance(self.adv_steps, int) and 1 <= self.adv_steps <= MAX_ADV_STEPS):
            raise UserInputError(f"--adv-steps {self.adv_steps}: a whole number of PGD steps, 1 to {MAX_ADV_STEPS}.")


# ---- augmentation -------------------------------------------------------------------------------
def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f²) noise of n samples."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / 16000), 20.0)
    if colour == "pink":
        spectrum /= np.sqrt(f)
    elif colour == "brown":
        spectrum /= f
    x = np.fft.irfft(spectrum, n)
    return (x / max(np.sqrt((x ** 2).mean()), 1e-12)).astype(np.float32)


def place(rng: np.random.Generator, clip: np.ndarray, rate: float) -> np.ndarray:
    """The clip resampled by ``rate`` (tape speed) and put at a random place in one second."""
    n = max(int(round(len(clip) / rate)), 1)
    stretched = np.interp(np.arange(n) * rate, np.arange(len(clip)), clip).astype(np.float32)
    out = np.zeros(WINDOW, np.float32)
    if n >= WINDOW:
        start = int(rng.integers(0, n - WINDOW + 1))
        return stretched[start : start + WINDOW]
    start = int(rng.integers(0, WINDOW - n + 1))
    out[start : start + n] = stretched
    return out


def room(rng: np.random.Generator, wav: np.ndarray) -> np.ndarray:
    """``wav`` in a synthetic room: direct sound + exponentially decaying noise (RT60 0.05–0.6 s)."""
    rt60 = rng.uniform(0.05, 0.6)
    n = int(rt60 * 16000)
    t = np.arange(n) / 16000
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * rng.uniform(0.05, 0.4)
    tail[0] = 1.0
    size = len(wav) + n
    wet = np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(tail, size), size)[: len(wav)]
    return wet.astype(np.float32)


def augment(rng: np.random.Generator, clip: np.ndarray | None) -> np.ndarray:
    """One training example (a word clip, or None for the silence class)."""
    if clip is None:
        if rng.random() < 0.2:
            return (rng.standard_normal(WINDOW) * 10 ** rng.uniform(-5, -3.5)).astype(np.float32)
        colour = str(rng.choice(["white", "pink", "brown"]))
        return coloured_noise(rng, WINDOW, colour) * np.float32(10 ** (rng.uniform(-70, -15) / 20))
    wav = place(rng, clip, float(rng.uniform(0.85, 1.18)))
    if rng.random() < 0.4:
        wav = room(rng, wav)
    wav = wav / max(float(np.abs(wav).max()), 1e-8) * np.float32(10 ** (rng.uniform(-25, 0) / 20))
    if rng.random() < 0.8:
        active = max(float((np.abs(wav) > 0.01 * np.abs(wav).max()).mean()), 0.05)
        speech_rms = math.sqrt(float((wav ** 2).mean()) / active)
        colour = str(rng.choice(["white", "pink", "brown"]))
        wav = wav + coloured_noise(rng, WINDOW, colour) * np.float32(speech_rms * 10 ** (-rng.uniform(0, 30) / 20))
    return wav.astype(np.float32)


def draw_batch(data: WordClips, by_class: list[np.ndarray], rng: np.random.Generator, batch: int,
               clip_weights: list[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes drawn evenly (unknown ×2), a random clip of each (``clip_weights[c]``: its probabilities), augmented."""
    weights = np.array([2.0 if label == UNKNOWN else 1.0 for label in LABELS])
    classes = rng.choice(len(LABELS), size=batch, p=weights / weights.sum())
    silence = LABELS.index(SILENCE)
    wavs = []
    for c in classes:
        p = None if clip_weights is None else clip_weights[c]
        clip = None if c == silence else data.clips[int(rng.choice(by_class[c], p=p))]
        wavs.append(augment(rng, clip))
    return torch.from_numpy(np.stack(wavs)), torch.from_numpy(classes.astype(np.int64))


def mask_log_mel(log_mel: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """SpecAugment-style: per example up to 2 mel bands (≤ 6 wide) and 2 time spans (≤ 12 frames) set to the
    clip's mean (≈ 0 for the log-mel net, whose front end removes it; the embedding's log-mel keeps the level)."""
    keep = torch.ones_like(log_mel)
    batch, _, mels, frames = log_mel.shape
    for b in range(batch):
        for _ in range(int(rng.integers(0, 3))):
            w = int(rng.integers(1, 7))
            f = int(rng.integers(0, mels - w + 1))
            keep[b, :, f : f + w] = 0
        for _ in range(int(rng.integers(0, 3))):
            w = int(rng.integers(1, 13))
            t = int(rng.integers(0, frames - w + 1))
            keep[b, :, :, t : t + w] = 0
    return log_mel * keep + log_mel.mean(dim=(1, 2, 3), keepdim=True) * (1 - keep)


VTLP_KNEE = 0.9  # the warp is α·f up to this share of the Nyquist frequency (times min(α, 1)), then a line to Nyquist


def vtlp_source_bins(bins: int, alpha: float) -> np.ndarray:
    """For each output bin of a ``bins``-bin spectrum (0 … Nyquist), the (fractional) input bin it reads under a
    VTLP warp by ``alpha``: f → α·f below the knee, a straight line from the knee to Nyquist above it (Nyquist and
    0 stay put). The inverse of the warp, so interpolating the input there moves a peak at bin k to ≈ α·k."""
    top = bins - 1
    knee_out = VTLP_KNEE * top * min(alpha, 1.0)  # where the knee lands in the output
    return np.interp(np.arange(bins, dtype=np.float64), [0.0, knee_out, top], [0.0, knee_out / alpha, top])


def vtlp_warp(magnitude: torch.Tensor, alphas: np.ndarray) -> torch.Tensor:
    """B×bins×frames spectra, each warped along frequency by its own α (linear interpolation between bins)."""
    bins = magnitude.shape[1]
    source = torch.from_numpy(np.stack([vtlp_source_bins(bins, float(a)) for a in alphas])).to(magnitude)
    low = source.floor().long().clamp(0, bins - 1)
    high = (low + 1).clamp(max=bins - 1)
    frac = (source - low.to(source))[:, :, None]
    frames = magnitude.shape[2]
    pick_low = torch.gather(magnitude, 1, low[:, :, None].expand(-1, -1, frames))
    pick_high = torch.gather(magnitude, 1, high[:, :, None].expand(-1, -1, frames))
    return pick_low * (1 - frac) + pick_high * frac


EQ_ANCHORS_HZ = (100.0, 250.0, 600.0, 1500.0, 3500.0, 8000.0)  # where the random channel curve's gains are drawn


def eq_gains_db(bins: int, anchor_db: np.ndarray) -> np.ndarray:
    """B×anchors gains in dB at ``EQ_ANCHORS_HZ`` → B×bins gains at the STFT's bins (0 … Nyquist): straight lines
    in log-frequency between anchors, flat beyond the first and the last."""
    hz = np.linspace(0.0, NYQUIST_HZ, bins)
    where = np.log(np.maximum(hz, 1.0))
    anchors = np.log(np.asarray(EQ_ANCHORS_HZ))
    return np.stack([np.interp(where, anchors, row) for row in np.atleast_2d(anchor_db)])


def random_eq(magnitude: torch.Tensor, rng: np.random.Generator, max_db: float) -> torch.Tensor:
    """B×bins×frames spectra, each multiplied by its own smooth gain curve (anchors uniform in ± ``max_db`` dB)."""
    anchor_db = rng.uniform(-max_db, max_db, size=(magnitude.shape[0], len(EQ_ANCHORS_HZ)))
    gain = torch.from_numpy(10.0 ** (eq_gains_db(magnitude.shape[1], anchor_db) / 20.0)).to(magnitude)
    return magnitude * gain[:, :, None]


def training_log_mel(net: torch.nn.Module, wav: torch.Tensor, rng: np.random.Generator,
                     settings: TrainSettings) -> torch.Tensor:
    """The net's log-mel of a training batch, with VTLP (α drawn from ``rng``, one per example), the random
    channel colour and the masks when the settings ask for them."""
    if settings.vtlp > 0 or settings.random_eq > 0:
        magnitude = stft(wav, WORDS_STFT).abs()
        if settings.vtlp > 0:
            alphas = rng.uniform(1 - settings.vtlp, 1 + settings.vtlp, size=wav.shape[0])
            magnitude = vtlp_warp(magnitude, alphas)
        if settings.random_eq > 0:
            magnitude = random_eq(magnitude, rng, settings.random_eq)
        log_mel = net.front.from_magnitude(magnitude)
    else:
        log_mel = net.front(wav)
    return mask_log_mel(log_mel, rng) if settings.spec_mask else log_mel


# ---- evaluation ---------------------------------------------------------------------------------
def centred(clip: np.ndarray) -> np.ndarray:
    """A clip in the middle of one second (how the test clips are read: no augmentation)."""
    out = np.zeros(WINDOW, np.float32)
    clip = clip[:WINDOW]
    start = (WINDOW - len(clip)) // 2
    out[start : start + len(clip)] = clip
    return out


@torch.no_grad()
def clip_logits(net: torch.nn.Module | WordNet, clips: list[np.ndarray], batch: int = 256,
                warp: float = 1.0) -> np.ndarray:
    """The net's scores (clips × classes) on clean clips centred in one second: how every table reads a clip. A
    module gives its logits, a :class:`WordNet` its log-probabilities (the same order within a clip; an ensemble's
    renormalised mean), so argmax and top-k read alike. ``warp`` ≠ 1 reads every clip's spectrum warped along
    frequency by that factor (the training VTLP warp: test-time speaker normalisation)."""
    module = net.net if isinstance(net, WordNet) else net
    device = next(module.parameters()).device
    front = net.front if isinstance(net, WordNet) else module.front  # a WordNet: each member's own front end
    out = []
    for start in range(0, len(clips), batch):
        x = torch.from_numpy(np.stack([centred(c) for c in clips[start : start + batch]])).to(device)
        if warp == 1.0:
            log_mel = front(x)
        else:
            magnitude = vtlp_warp(stft(x, WORDS_STFT).abs(), np.full(x.shape[0], warp))
            log_mel = (net.front_from_magnitude(magnitude) if isinstance(net, WordNet)
                       else front.from_magnitude(magnitude))
        read = (net.log_probabilities_from_log_mel(log_mel) if isinstance(net, WordNet)
                else module.head(module.features(log_mel)))
        out.append(read.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)


def predict_clips(net: torch.nn.Module | WordNet, clips: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """The class each clip is read as (:func:`clip_logits`' argmax)."""
    return clip_logits(net, clips, batch).argmax(-1) if len(clips) else np.zeros(0, np.int64)


def accuracy_table(net, data: WordClips) -> dict:
    """Top-1 over the keyword clips (and, apart, the unknown words), overall, per voice and per word."""
    predicted = predict_clips(net, data.clips)
    right = predicted == data.labels
    keyword = np.array([LABELS[i] != UNKNOWN for i in data.labels])

    def share(mask: np.ndarray) -> dict:
        return {"correct": int(right[mask].sum()), "n": int(mask.sum()),
                "accuracy": round(float(right[mask].mean()), 4) if mask.any() else None}

    return {
        "keywords": share(keyword),
        "unknown_words": share(~keyword),
        "per_voice": {v: share(keyword & (data.voices == v)) for v in sorted(set(data.voices))},
        "per_word": {w: share(data.words == w) for w in LABELS if w not in (SILENCE, UNKNOWN)},
        "confusions": _confusions(data.words[keyword & ~right], predicted[keyword & ~right]),
    }


def recipe_engines(pseudo_weight: float, kokoro_weight: float) -> tuple[str, ...]:
    """The engines a recipe reads: the three synthesisers, plus the opt-in ones it gives a weight."""
    return ENGINES + ((PSEUDO,) if pseudo_weight > 0 else ()) + ((KOKORO,) if kokoro_weight > 0 else ())


@torch.no_grad()
def class_centroids(net: torch.nn.Module, train: WordClips, batch: int = 256) -> torch.Tensor:
    """classes×channels: the mean of the net's pooled features over each class's training clips (clean, centred
    in one second, as the tables read them); ``_silence_``, which has no clips, gets digital silence's. What a
    ``typical`` word dream matches (``WordNet.typicality``)."""
    net.eval()
    features = []
    for start in range(0, len(train.labels), batch):
        wav = torch.from_numpy(np.stack([centred(c) for c in train.clips[start:start + batch]])).float()
        features.append(net.features(net.front(wav)))
    pooled, labels = torch.cat(features), torch.from_numpy(np.asarray(train.labels))
    silence = net.features(net.front(torch.zeros(1, WINDOW)))[0]
    return torch.stack([pooled[labels == c].mean(0) if bool((labels == c).any()) else silence
                        for c in range(len(LABELS))]).contiguous()


def write_centroids(net_dir: str | Path, data_dir: str | Path) -> Path:
    """``net_dir/centroids.safetensors`` from the training split of ``data_dir`` (the engines the net's recipe
    trained on)."""
    from .words import CENTROIDS_FILE, load_word_net_dir

    folder = Path(net_dir)
    words = load_word_net_dir(folder)
    recipe = words.config.get("training", {})
    engines = recipe_engines(recipe.get("pseudo_weight", 0), recipe.get("kokoro_weight", 0))
    train, _, _ = split(load_clips(data_dir, engines))
    if not len(train):
        raise UserInputError(f"No training clips in {data_dir}.")
    write_safetensors(folder / CENTROIDS_FILE, {"centroids": class_centroids(words.net, train)})
    return folder / CENTROIDS_FILE


def _confusions(words: np.ndarray, predicted: np.ndarray, top: int = 12) -> dict[str, int]:
    """The commonest "said → heard" mistakes."""
    said_heard = [f"{w}→{LABELS[p]}" for w, p in zip(words, predicted)]
    pairs, counts = np.unique(np.array(said_heard or [""]), return_counts=True)
    order = np.argsort(-counts)[:top]
    return {str(pairs[i]): int(counts[i]) for i in order if pairs[i]}


# ---- training -----------------------------------------------------------------------------------
def _hardware() -> str:
    return (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
            f"{os.cpu_count()} cores visible")


def split(data: WordClips) -> tuple[WordClips, WordClips, WordClips]:
    """(train, validation, test): test = the held-out synthesiser, validation = one espeak-ng accent."""
    test = data.engines == HELD_OUT
    validation = (data.engines == "espeak-ng") & np.char.startswith(data.voices.astype(str), VALIDATION_ACCENT + "+")
    return data.subset(~test & ~validation), data.subset(validation), data.subset(test)


def class_clip_weights(train: WordClips, by_class: list[np.ndarray],
                       engine_weights: dict[str, float]) -> list[np.ndarray] | None:
    """Per class, each clip's probability of being drawn when an engine's clips count ``engine_weights[engine]``
    times an espeak-ng clip (None: all equal)."""
    if all(train.engines[train.engines == e].size == 0 or w == 1.0 for e, w in engine_weights.items()):
        return None
    out = []
    for idx in by_class:
        w = np.array([engine_weights.get(str(e), 1.0) for e in train.engines[idx]], dtype=np.float64)
        out.append(w / w.sum() if len(w) else w)
    return out


RESUME_MAY_DIFFER = ("stop_after", "checkpoint_every")  # a resumed run may stop elsewhere; its recipe is the same


def _check_resumable(ckpt: Path, saved: dict | None, settings: TrainSettings) -> None:
    """Refuse to resume a checkpoint made with another recipe (other widths would not even load; another
    augmentation would silently mix two recipes in one net). Settings a checkpoint predates take their defaults."""
    if not isinstance(saved, dict):
        return  # a checkpoint from before settings were saved: nothing to compare
    defaults, wanted = asdict(TrainSettings()), asdict(settings)

    def norm(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    differ = [k for k in wanted if k not in RESUME_MAY_DIFFER and norm(saved.get(k, defaults[k])) != norm(wanted[k])]
    if differ:
        raise UserInputError(f"{ckpt} was made with other settings ({', '.join(differ)}): give another --checkpoint "
                             f"or the same settings.")


def train_word_net(
    data_dir: str | Path,
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    *,
    checkpoint: str | Path | None = None,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    command: str = "",
) -> dict:
    """Train on espeak-ng + flite (less one validation accent; + flite's pseudo-speakers when
    ``settings.pseudo_weight`` > 0, + Kokoro's voices when ``settings.kokoro_weight`` > 0), test on festival, write
    ``out_dir/model.safetensors`` + ``config.json`` (with the accuracy tables). Resumes from
    ``checkpoint`` when it exists; returns the config written (or {"stopped": CANCELLED})."""
    engines = recipe_engines(settings.pseudo_weight, settings.kokoro_weight)
    data = load_clips(data_dir, engines)
    train, validation, test = split(data)
    if not len(train):
        raise UserInputError(f"No training clips in {data_dir}.")
    by_class = [np.flatnonzero(train.labels == c) for c in range(len(LABELS))]
    clip_weights = class_clip_weights(train, by_class, {"flite": settings.flite_weight, PSEUDO: settings.pseudo_weight,
                                                        KOKORO: settings.kokoro_weight})
    if settings.front == SPEECH_EMBEDDING:
        from .speech_embedding import N_MELS as EMBEDDING_MELS

        config = {"name": "words", "arch": SPEECH_EMBEDDING, "labels": list(LABELS), "width": settings.head_width,
                  "n_mels": EMBEDDING_MELS, "dropout": settings.dropout, "sample_rate": 16000,
                  "window_samples": WINDOW}
    else:
        config = {"name": "words", "labels": list(LABELS), "widths": list(settings.widths), "n_mels": 40,
                  "dropout": settings.dropout, "sample_rate": 16000, "window_samples": WINDOW}
    with devices.seeded(settings.seed, torch.device("cpu")):
        net = build_net(config)
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, seconds = 0, 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        _check_resumable(ckpt, state.get("settings"), settings)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, seconds = int(state["step"]), float(state["seconds"])

    def lr_at(k: int) -> float:  # warm-up 100 steps, then cosine to 5 %
        if k < 100:
            return settings.lr * (k + 1) / 100
        progress = (k - 100) / max(settings.steps - 100, 1)
        return settings.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    def save_checkpoint() -> None:
        if ckpt is not None:
            write_torch(ckpt, {"model": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                               "seconds": seconds, "settings": asdict(settings)})

    net.train()
    started = time.perf_counter() - seconds
    last = settings.steps if settings.stop_after is None else min(settings.stop_after, settings.steps)
    while step < last:
        if should_stop is not None and should_stop():
            seconds = time.perf_counter() - started
            save_checkpoint()
            return {"stopped": CANCELLED, "step": step}
        rng = np.random.default_rng([settings.seed, step])
        x, y = draw_batch(train, by_class, rng, settings.batch_size, clip_weights)
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step)
        # dropout draws from torch's global RNG: seeded per step too, so a run (and a resumed one) repeats exactly
        with devices.seeded(settings.seed * 1_000_003 + step, torch.device("cpu")):
            if settings.adv_eps > 0:  # trained on the log-mel's worst point nearby (after the augmentations)
                def logits_of(log_mel: torch.Tensor) -> torch.Tensor:
                    return net.head(net.features(log_mel))
                log_mel = adversarial.l2_pgd(logits_of, training_log_mel(net, x, rng, settings), y,
                                             settings.adv_eps, settings.adv_steps)
                logits = logits_of(log_mel)
            elif settings.spec_mask or settings.vtlp > 0 or settings.random_eq > 0:
                logits = net.head(net.features(training_log_mel(net, x, rng, settings)))
            else:
                logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
        optimiser.step()
        step += 1
        if callback is not None:
            callback(step, last, None, loss.detach().reshape(1))
        if step % settings.checkpoint_every == 0:
            seconds = time.perf_counter() - started
            save_checkpoint()
    seconds = time.perf_counter() - started
    save_checkpoint()
    net.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors",
                      {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    config["parameters"] = sum(p.numel() for p in net.parameters())
    config["training"] = {
        **asdict(settings), "steps_done": step, "command": command, "seconds": round(seconds, 1),
        "hardware": _hardware(),
        "data": {"train": {e: int((train.engines == e).sum()) for e in engines},
                 "validation": f"espeak-ng accent {VALIDATION_ACCENT} ({len(validation)} clips)",
                 "test": f"{HELD_OUT} ({len(test)} clips), never seen in training"},
        "validation": accuracy_table(net, validation) if len(validation) else None,
        "test_held_out": accuracy_table(net, test) if len(test) else None,
    }
    write_json(out / "config.json", config)
    from .words import CENTROIDS_FILE

    write_safetensors(out / CENTROIDS_FILE, {"centroids": class_centroids(net, train)})  # for typical dreams
    return config
