"""The keyword network: a small CNN on log-mel spectrograms that names one of 20 spoken words
(yes, no, up, down, left, right, on, off, stop, go, zero … nine), silence or an unknown word.

Trained by the project on speech made by Debian's synthesisers (:mod:`explorer.audio.wordsdata`,
:mod:`explorer.audio.wordstrain`) and shipped in ``assets/words/`` (``model.safetensors`` +
``config.json``). The front end is plain torch — waveform → STFT (32 ms, 10 ms hop) → 40 mel
bands → log, minus the clip's mean log-mel (so the loudness of a clip does not matter) — and
differentiable, so a dream can push a waveform (or the synthesiser's knobs) towards a word.
A clip longer than one second is read in one-second windows (hop ½ s) whose log-probabilities
are averaged and renormalised.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserInputError
from ..files import read_user_file
from .speech_embedding import INT16_SCALE
from .spectrogram import STFTConfig, mel_filterbank, stft

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "words"
SAMPLE_RATE = 16000
WINDOW = SAMPLE_RATE  # the net reads one second at a time
WORDS_STFT = STFTConfig(n_fft=512, hop=160)
N_MELS = 40
FMIN, FMAX = 20.0, 7600.0
LOG_FLOOR = 1e-6  # power floor of the log (≈ −60 dB below a full-scale sine's mel energy)


class LogMel(nn.Module):
    """Waveform B×N at 16 kHz → B×1×mels×frames log-mel, minus each clip's mean (gain invariant)."""

    def __init__(self, n_mels: int = N_MELS):
        super().__init__()
        fb = mel_filterbank(SAMPLE_RATE, WORDS_STFT.n_fft, n_mels, FMIN, FMAX)
        self.register_buffer("filterbank", torch.from_numpy(fb), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.from_magnitude(stft(wav, WORDS_STFT).abs())

    def from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        """B×bins×frames |STFT| (WORDS_STFT) → B×1×mels×frames (what a free spectrogram dream optimises)."""
        power = magnitude.pow(2) / WORDS_STFT.full_scale ** 2
        log_mel = torch.log(torch.einsum("mf,bft->bmt", self.filterbank, power) + LOG_FLOOR)
        return (log_mel - log_mel.mean(dim=(1, 2), keepdim=True))[:, None]


class KeywordNet(nn.Module):
    """3×3 conv blocks (batch norm, ReLU, a 2×2 max-pool after every block but the last; four by default),
    global average pool, dropout, linear: ≈ 50 k parameters at the default widths."""

    def __init__(self, classes: int, widths: tuple[int, ...] = (16, 32, 48, 64),
                 n_mels: int = N_MELS, dropout: float = 0.1):
        super().__init__()
        self.front = LogMel(n_mels)
        layers: list[nn.Module] = []
        channels = 1
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, classes))

    def features(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.body(log_mel).mean(dim=(2, 3))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Logits for one-second waveforms B×16000 (other lengths work: the pool is global)."""
        return self.head(self.features(self.front(wav)))


class EmbeddingKeywordNet(nn.Module):
    """A keyword head over Google's speech embedding (:mod:`explorer.audio.speech_embedding`, trained on real
    speech, frozen): waveform → its 32-band log-mel → an embedding every 80 ms (each reading 0.775 s) → a temporal
    conv (``width`` channels, ReLU) → max over time → dropout → linear. Only the head is trained and saved; the
    embedding's weights come from the ``openwakeword`` wheel at load time. A one-second clip is read with
    ``EMBEDDING_PAD`` of silence on each side so that every part of the second lies inside some window."""

    def __init__(self, classes: int, width: int = 128, dropout: float = 0.1):
        super().__init__()
        from . import speech_embedding

        log_mel, self.embedding = speech_embedding.read_front_end()
        self.front = _PaddedFront(log_mel)
        self.temporal = nn.Conv1d(speech_embedding.EMBEDDING_DIM, width, 3, padding=1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, classes))

    def features(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.embedding(log_mel))

    def pooled(self, embedding: torch.Tensor) -> torch.Tensor:
        """B×T×96 embeddings → B×width: what the head reads (members of an ensemble share the embeddings)."""
        return F.relu(self.temporal(embedding.transpose(1, 2))).amax(-1)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.front(wav)))


EMBEDDING_PAD = 1600  # 0.1 s each side of a one-second window: 1.2 s → 117 frames → 6 embeddings


class _PaddedFront(nn.Module):
    """The embedding's log-mel of each clip with ``EMBEDDING_PAD`` zeros on both sides."""

    def __init__(self, log_mel: nn.Module):
        super().__init__()
        self.log_mel = log_mel
        # a WORDS_STFT power → the graph's power: the windows' energies and 16-bit units (a constant, so a free
        # spectrogram dream's step reads it without a host sync)
        ours = float(WORDS_STFT.window("cpu").pow(2).sum())
        self.power_scale = log_mel.window_energy() / ours * INT16_SCALE ** 2

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.log_mel(F.pad(wav.reshape(wav.shape[0], -1), (EMBEDDING_PAD, EMBEDDING_PAD)))

    def from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        """B×bins×frames |STFT| (WORDS_STFT, a 512-sample Hann window) → the embedding's log-mel, for free
        spectrogram dreams. The graph's own window is a 400-sample Hann inside 512: the power is rescaled by the
        two windows' energies (exact for noise, close for speech; the tests bound the difference), and the
        silence each side is added as zero-power frames."""
        power = magnitude.pow(2) * self.power_scale
        # WORDS_STFT's frames are centred on k·hop, the graph's start at 0 (centred 256 samples later): 8 frames of
        # silence before put each frame within 64 samples of the waveform path's, 9 after give as many frames
        left = (EMBEDDING_PAD - self.log_mel.n_fft // 2) // WORDS_STFT.hop
        return self.log_mel.from_power(F.pad(power, (left, left + 1)))


Reading = "dict[str, torch.Tensor] | torch.Tensor"  # each front end's log-mel by its key (one front end: its tensor)


def front_key(net: nn.Module) -> str:
    """Which front end a member reads: members with the same key read one log-mel (computed once)."""
    if isinstance(net, EmbeddingKeywordNet):
        return SPEECH_EMBEDDING
    return f"log-mel/{net.front.filterbank.shape[0]}"


class WordNet:
    """The keyword network and what it knows: labels, the words it can be asked for. It may be an ensemble of
    nets (same labels): their log-probabilities are averaged and renormalised (a product of experts), so a dream
    must please every member, not one net's quirks. Members may read different front ends (a log-mel CNN and
    heads over the speech embedding): each front end is computed once for the members that read it."""

    def __init__(self, net: nn.Module | list[nn.Module] | tuple[nn.Module, ...], config: dict,
                 device: torch.device | str = "cpu", centroids: list[torch.Tensor | None] | None = None,
                 folders: list[str] | None = None):
        self.nets = [m.to(device).eval() for m in (list(net) if isinstance(net, (list, tuple)) else [net])]
        # per member, classes×channels: the mean pooled features of each class's training clips (None: not made)
        self.centroids = [None if c is None else c.to(device) for c in (centroids or [None] * len(self.nets))]
        self.folders = list(folders or [])
        for member in self.nets:
            for p in member.parameters():
                p.requires_grad_(False)
        self.net = self.nets[0]  # the first member
        self.fronts: dict[str, list[int]] = {}  # front key → the members that read it
        for i, member in enumerate(self.nets):
            self.fronts.setdefault(front_key(member), []).append(i)
        self.config = config
        self.labels: list[str] = list(config["labels"])
        self.keywords: list[str] = [w for w in self.labels if not w.startswith("_")]
        self.device = torch.device(device)

    def index(self, word: str) -> int:
        word = word.strip().lower()
        if word not in self.keywords:
            raise UserInputError(f"The word net knows {', '.join(self.keywords)}; not {word!r}.")
        return self.labels.index(word)

    def windows(self, wav: torch.Tensor) -> torch.Tensor:
        """B×N → (B·W)×WINDOW one-second windows (hop ½ s; a clip shorter than 1 s is zero-padded)."""
        n = wav.shape[-1]
        if n <= WINDOW:
            return F.pad(wav, (0, WINDOW - n))
        starts = list(range(0, n - WINDOW + 1, WINDOW // 2))
        if starts[-1] != n - WINDOW:
            starts.append(n - WINDOW)
        return torch.stack([wav[:, s : s + WINDOW] for s in starts], 1).reshape(-1, WINDOW)

    def front(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×N waveforms → what the members read: each front end's B×1×mels×frames, by :func:`front_key`."""
        return {key: self.nets[members[0]].front(wav) for key, members in self.fronts.items()}

    def front_from_magnitude(self, magnitude: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×bins×frames |STFT| (WORDS_STFT) → what the members read (a free spectrogram dream's input)."""
        return {key: self.nets[members[0]].front.from_magnitude(magnitude) for key, members in self.fronts.items()}

    def log_probabilities_from_log_mel(self, log_mel: Reading) -> torch.Tensor:
        """:meth:`front`'s reading → B×classes: the members' log-softmax averaged and renormalised (one member:
        its log-softmax exactly). Differentiable."""
        logp = [F.log_softmax(m.head(f).float(), -1) for m, f in zip(self.nets, self.member_features(log_mel))]
        return logp[0] if len(logp) == 1 else F.log_softmax(torch.stack(logp).mean(0), -1)

    def member_features(self, log_mel: Reading) -> list[torch.Tensor]:
        """Each member's pooled features of :meth:`front`'s reading. Heads over the speech embedding share one
        frozen embedding, so it is computed once for all of them (the same numbers, a member's cost each)."""
        if not isinstance(log_mel, dict):  # one front end's log-mel, given by a caller that computed it
            if len(self.fronts) > 1:
                raise ValueError("members read different front ends: pass WordNet.front's reading")
            log_mel = {key: log_mel for key in self.fronts}
        reading = log_mel
        features: list[torch.Tensor | None] = [None] * len(self.nets)
        for key, members in self.fronts.items():
            if key == SPEECH_EMBEDDING:
                embedding = self.nets[members[0]].embedding(reading[key])
                for i in members:
                    features[i] = self.nets[i].pooled(embedding)
            else:
                for i in members:
                    features[i] = self.nets[i].features(reading[key])
        return features

    def log_probabilities(self, wav: torch.Tensor) -> torch.Tensor:
        """B×N waveforms → B×classes log-probabilities (mean over one-second windows). Differentiable."""
        wav = wav.reshape(wav.shape[0], -1).to(self.device)
        batch = wav.shape[0]
        logp = self.log_probabilities_from_log_mel(self.front(self.windows(wav)))
        # the windows' geometric mean, renormalised (one window: exactly the net's log-softmax)
        return F.log_softmax(logp.reshape(batch, -1, logp.shape[-1]).mean(1), -1)

    def typicality_from_log_mel(self, log_mel: Reading, index: int) -> torch.Tensor:
        """:meth:`front`'s reading → B: how much this sounds to the net like a *typical* clip of class ``index``:
        −‖φ − μ‖² / ‖μ‖², φ the net's pooled features (what its last layer reads), μ the mean of them over the
        class's training clips; members averaged. Log p(word) asks for as much of the word as possible (a
        bag of its best features, repeated); this asks for the amount a spoken word has. Differentiable."""
        self.require_centroids()
        values = []
        for features, centroids in zip(self.member_features(log_mel), self.centroids):
            mu = centroids[index]
            values.append(-((features - mu) ** 2).sum(-1) / mu.pow(2).sum().clamp_min(1e-12))
        return torch.stack(values).mean(0)

    def require_centroids(self) -> None:
        """Refuse (one line that says what to run) when a member has no class centroids."""
        missing = [f for f, c in zip(self.folders or ["the word net"] * len(self.nets), self.centroids) if c is None]
        if missing:
            raise UserInputError(f"No class centroids for {missing[0]} (centroids.safetensors): make them with "
                                 f"`python -m explorer audio words-centroids --net FOLDER --data runs/words/data`.")

    def typicality(self, wav: torch.Tensor, index: int) -> torch.Tensor:
        """B×N waveforms → B (:meth:`typicality_from_log_mel`, mean over one-second windows). Differentiable."""
        wav = wav.reshape(wav.shape[0], -1).to(self.device)
        value = self.typicality_from_log_mel(self.front(self.windows(wav)), index)
        return value.reshape(wav.shape[0], -1).mean(1)

    @torch.no_grad()
    def probabilities(self, wav: torch.Tensor) -> torch.Tensor:
        return self.log_probabilities(wav).exp()

    @torch.no_grad()
    def predict(self, audio: np.ndarray) -> tuple[str, float]:
        """(label, probability) of one 16 kHz clip."""
        probs = self.probabilities(torch.from_numpy(np.asarray(audio, dtype=np.float32))[None])[0]
        i = int(probs.argmax())
        return self.labels[i], float(probs[i])


SPEECH_EMBEDDING = "speech-embedding"  # config["arch"] of a head over the speech embedding ("log-mel": KeywordNet)
ARCHES = ("log-mel", SPEECH_EMBEDDING)


def build_net(config: dict) -> nn.Module:
    if config.get("arch", "log-mel") == SPEECH_EMBEDDING:
        return EmbeddingKeywordNet(len(config["labels"]), int(config["width"]), config.get("dropout", 0.1))
    return KeywordNet(len(config["labels"]), tuple(config["widths"]), config.get("n_mels", N_MELS),
                      config.get("dropout", 0.1))


MAX_CONFIG_BYTES = 1 << 20  # a word net's config.json with all its tables is ~8 kB
MAX_ENSEMBLE = 8
ENSEMBLE = "ensemble"  # --word-net ensemble: the log-mel net and the two trained alike under assets/words/ensemble
ENSEMBLE_MEMBERS = ("ensemble/seed1", "ensemble/seed2")
LOG_MEL = "log-mel"  # --word-net log-mel: the log-mel net alone (assets/words; the word net until the 22nd look)
# the word net: the log-mel net and two heads over the speech embedding, their log-probabilities averaged (held-out
# festival keywords 235/240 against the log-mel net's 183, docs/audio.md's twenty-second look)
DEFAULT_MEMBERS = ("speech-embedding/seed0", "speech-embedding/seed1")
WORD_NET_LABELS = {"": "log-mel CNN + speech-embedding heads (the word net)", LOG_MEL: "log-mel CNN alone",
                   ENSEMBLE: "log-mel CNN, ensemble of three"}  # the page's names for the shipped choices
# how records name the word net a default dream went through ("shipped" in records made before it was these three)
DEFAULT_NAME = "+".join((LOG_MEL, *DEFAULT_MEMBERS))
FRONT_END_KEYS = ("sample_rate",)  # what every member of an ensemble shares (each reads its own front end)


def check_widths(widths, n_mels: int = N_MELS) -> None:
    """The conv blocks' channels, bounded before a net is built (a config or an option could ask for a huge net,
    or for more blocks than the mel bands survive: every block but the last halves them)."""
    if (not isinstance(widths, (list, tuple)) or not 1 <= len(widths) <= 8
            or not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 1024 for w in widths)):
        raise UserInputError(f"widths must be 1 to 8 whole numbers in [1, 1024], not {widths!r}")
    if n_mels >> (len(widths) - 1) < 1:
        raise UserInputError(f"{len(widths)} blocks halve {n_mels} mel bands to nothing")


def _check_config(config: dict) -> None:
    """A config's sizes bounded before the net is built (a hostile one could ask for a huge one)."""
    labels = config["labels"]
    if not isinstance(labels, list) or not 2 <= len(labels) <= 1000 or not all(isinstance(w, str) for w in labels):
        raise UserInputError("labels must be 2 to 1000 names")
    n_mels, dropout = config.get("n_mels", N_MELS), config.get("dropout", 0.1)
    if not isinstance(n_mels, int) or not 8 <= n_mels <= 256 or not 0 <= float(dropout) < 1:
        raise UserInputError("n_mels must lie in [8, 256] and dropout in [0, 1)")
    arch = config.get("arch", "log-mel")
    if arch not in ARCHES:
        raise UserInputError(f"arch must be one of {', '.join(ARCHES)}, not {arch!r}")
    if arch == SPEECH_EMBEDDING:
        width = config.get("width")
        if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 1024:
            raise UserInputError(f"width must be a whole number in [1, 1024], not {width!r}")
    else:
        check_widths(config["widths"], n_mels)
    if config.get("sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
        raise UserInputError(f"the word net reads {SAMPLE_RATE} Hz audio, not {config.get('sample_rate')}")


def _read_member(folder: Path) -> tuple[nn.Module, dict]:
    from ..models.weights import load_weights

    if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
        raise UserInputError(f"No word network in {folder} (config.json and model.safetensors): train one with "
                             f"`python -m explorer audio words-train`.")
    raw = read_user_file(folder / "config.json", "Word net config", max_bytes=MAX_CONFIG_BYTES)
    try:
        config = json.loads(raw)
        _check_config(config)
        net = build_net(config)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = str(exc) if isinstance(exc, UserInputError) else type(exc).__name__
        raise UserInputError(f"{folder / 'config.json'} is not a word net's config ({detail}).") from None
    load_weights(net, folder / "model.safetensors", "the word network")
    return net, config


CENTROIDS_FILE = "centroids.safetensors"


def read_centroids(folder: Path, net: nn.Module, config: dict) -> torch.Tensor | None:
    """``folder/centroids.safetensors`` (classes × what the head reads, finite), or None when absent."""
    from ..models.weights import read_state_dict

    path = folder / CENTROIDS_FILE
    if not path.exists():
        return None
    tensors = read_state_dict(path)
    centroids = tensors.get("centroids")
    shape = (len(config["labels"]), net.head[-1].in_features)
    if (not isinstance(centroids, torch.Tensor) or tuple(centroids.shape) != shape
            or not bool(torch.isfinite(centroids).all())):
        raise UserInputError(f"{path} must hold a finite 'centroids' tensor of shape {shape}: make it again with "
                             f"`python -m explorer audio words-centroids --net {folder}`.")
    return centroids.float()


def load_word_net_dir(folder: str | Path | list[str | Path] | tuple[str | Path, ...],
                      device: torch.device | str = "cpu") -> WordNet:
    """A keyword network from ``folder/config.json`` + ``folder/model.safetensors`` (checked tensors); several
    folders make an ensemble (they must name the same classes in the same order and read 16 kHz audio)."""
    folders = [Path(f) for f in (folder if isinstance(folder, (list, tuple)) else [folder])]
    members = [_read_member(f) for f in folders]
    first = members[0][1]
    for f, (_, config) in zip(folders[1:], members[1:]):
        if config["labels"] != first["labels"]:
            raise UserInputError(f"The word net in {f} names other classes than {folders[0]}'s: no ensemble.")
        differ = [k for k in FRONT_END_KEYS if config.get(k) != first.get(k)]
        if differ:
            raise UserInputError(f"The word net in {f} reads another front end than {folders[0]}'s "
                                 f"({', '.join(differ)}): no ensemble.")
    centroids = [read_centroids(f, net, config) for f, (net, config) in zip(folders, members)]
    return WordNet([net for net, _ in members], first, device, centroids, [str(f) for f in folders])


@lru_cache(maxsize=4)
def _cached(folders: tuple[str, ...], device: str) -> WordNet:
    return load_word_net_dir(list(folders), device)


def word_net_folders(spec: str | None) -> tuple[str, ...]:
    """``--word-net``: "" (the word net: the log-mel net and the two speech-embedding heads), ``log-mel`` (the
    log-mel net alone), ``ensemble`` (the log-mel net and two trained alike: held-out keywords 80.4 % against its
    76.3 %, a favourable draw — five such nets give 77.5 %, docs/audio.md) or folders separated by commas (several:
    an ensemble)."""
    spec = (spec or "").strip()
    if spec == ENSEMBLE:
        return (str(ASSET_DIR), *(str(ASSET_DIR / m) for m in ENSEMBLE_MEMBERS))
    if spec == LOG_MEL:
        return (str(ASSET_DIR),)
    if not spec:
        return (str(ASSET_DIR), *(str(ASSET_DIR / m) for m in DEFAULT_MEMBERS))
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if len(parts) > MAX_ENSEMBLE:
        raise UserInputError(f"At most {MAX_ENSEMBLE} word nets in an ensemble, not {len(parts)}.")
    return tuple(str(Path(p).expanduser().resolve()) for p in parts) or word_net_folders("")


def load_word_net(device: torch.device | str = "cpu", folder: str | Path | None = None) -> WordNet:
    """The word net (:func:`word_net_folders` ""), or the net(s) that ``folder`` names — a ``Path`` is one folder,
    a string a ``--word-net`` spec ("a,b": an ensemble; "log-mel", "ensemble": shipped ones); loaded once per device."""
    folders = (str(folder.expanduser().resolve()),) if isinstance(folder, Path) else word_net_folders(folder)
    return _cached(folders, str(torch.device(device)))


def word_net_available(folder: str | Path | None = None) -> str | None:
    """Why the word net (or the net in ``folder``) cannot load (None when it can)."""
    if folder is None:
        return next(filter(None, (word_net_available(f) for f in word_net_folders(""))), None)
    folder = Path(folder)
    if not (folder / "model.safetensors").exists():
        return f"no trained word network in {folder}"
    try:
        arch = json.loads(read_user_file(folder / "config.json", "Word net config",
                                         max_bytes=MAX_CONFIG_BYTES)).get("arch")
    except (UserInputError, ValueError, AttributeError, OSError):
        return None  # loading it says what is wrong with the config
    if arch == SPEECH_EMBEDDING:
        from .speech_embedding import available

        return available()
    return None
