"""What an audio dream ascends: a network's unit, class, tag or word, read from a magnitude
spectrogram or a waveform.

* ``speech`` — Silero VAD speech probability (mean log p over 32 ms chunks);
* ``words:WORD`` — one keyword of the project's word network (log p, mean over 1 s windows);
* ``music:TAG`` — a MagnaTagATune tag of a musicnn tagger, MTT_vgg or MTT_musicnn (log-sigmoid);
* ``image:MODEL:LAYER[:UNIT]`` or ``image:MODEL:class:N`` — any registry image classifier looking
  at the spectrogram as a picture (low frequencies at the bottom): DeepDream of a layer, a
  channel, or a class.

Each target scores (differentiably, for the loop) and reports (without gradients, for the page
and the round trip); how a sound becomes that input is the parameterisation's business
(:mod:`explorer.audio.parameterisations`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserInputError
from .spectrogram import DBMap, STFTConfig, stft

DEFAULT_IMAGE_STFT = STFTConfig(n_fft=512, hop=128)
SAMPLE_RATE = 16000


class AudioTarget:
    """What a dream maximises. Subclasses say how a magnitude spectrogram (B×bins×frames) scores
    and how to report a waveform's network output for the round trip."""

    name: str = "target"
    sample_rate: int = SAMPLE_RATE
    stft: STFTConfig = DEFAULT_IMAGE_STFT
    value_label: str = "value"
    device: torch.device = torch.device("cpu")
    dbmap: DBMap | None = None  # set by dream(): how magnitudes map to the [0, 1] picture

    def score(self, magnitude: torch.Tensor, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-item objective to maximise (differentiable)."""
        raise NotImplementedError

    def report(self, magnitude: torch.Tensor) -> dict:
        """{"value": the headline number, "scores": {label: value} for bar charts} without gradients."""
        raise NotImplementedError

    def report_waveform(self, wav: torch.Tensor) -> dict:
        mag = stft(wav.reshape(1, -1).to(self.device), self.stft).abs()
        return self.report(mag)

    def score_waveform(self, wav: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-item objective of B×N waveforms, differentiable through the target's own front end."""
        magnitude = stft(wav, self.stft).abs()
        image = self.dbmap.to_unit(magnitude)[:, None] if self.dbmap is not None else None
        return self.score(magnitude, image, generator)


class SpeechTarget(AudioTarget):
    """Silero VAD's speech probability, averaged over the clip's 32 ms chunks."""

    value_label = "speech probability"

    def __init__(self, device: torch.device):
        from .silero import SPEECH_STFT, load_silero

        self.model = load_silero(device)
        self.device, self.stft, self.name = device, SPEECH_STFT, "speech"

    def score(self, magnitude, image, generator):
        probs = self.model(magnitude)
        return torch.log(probs.clamp(min=1e-6)).mean(-1)

    @torch.no_grad()
    def report(self, magnitude):
        probs = self.model(magnitude)[0]
        return {"value": float(probs.mean()), "scores": {"speech": float(probs.mean())},
                "per_chunk": [round(float(p), 4) for p in probs]}

    def score_waveform(self, wav, generator):
        # the exact streaming framing of the shipped model: what the round trip will measure
        return self.score(self.model.chunk_magnitudes(wav), None, generator)

    @torch.no_grad()
    def report_waveform(self, wav):
        # the exact streaming framing of the shipped model, not the uniform STFT the dream used
        probs = self.model.speech_probability(wav.reshape(1, -1).to(self.device))[0]
        return {"value": float(probs.mean()), "scores": {"speech": float(probs.mean())},
                "per_chunk": [round(float(p), 4) for p in probs]}


class MusicTarget(AudioTarget):
    """One MagnaTagATune tag of the musicnn VGG tagger; reports all 50 tags."""

    value_label = "tag probability"

    def __init__(self, tag: str, device: torch.device, model: str = "MTT_vgg"):
        from .musicnn import MUSIC_STFT, PATCH_FRAMES, load_music_tagger

        self.model = load_music_tagger(model, device)
        self.index = self.model.tag_index(tag)
        self.tag = self.model.labels[self.index]
        self.device, self.stft, self.name = device, MUSIC_STFT, f"music:{self.tag}"
        self.model_name = model
        self.value_label = f"p({self.tag})"
        self.patch_frames = PATCH_FRAMES

    def score(self, magnitude, image, generator):
        log_mel = self.model.log_mel(magnitude)
        frames = log_mel.shape[-1]
        if frames > self.patch_frames:
            # one random 3 s patch per step: a time-jitter transform that also saves compute
            draw_on = generator.device if generator is not None else "cpu"
            start = int(torch.randint(0, frames - self.patch_frames + 1, (1,), generator=generator, device=draw_on))
            log_mel = log_mel[..., start : start + self.patch_frames]
        logits = self.model(log_mel)[..., self.index]  # B×P
        return F.logsigmoid(logits).mean(-1)

    @torch.no_grad()
    def report(self, magnitude):
        probs = torch.sigmoid(self.model.logits_from_magnitude(magnitude)).mean(1)[0]
        scores = {label: float(p) for label, p in zip(self.model.labels, probs)}
        return {"value": float(probs[self.index]), "scores": scores}


WORD_OBJECTIVES = {
    "probability": "log p(word): as much of the word as the net can hear",
    "typical": "a typical clip of the word to the net: its pooled features near the word's mean (centroid)",
    "log-odds": "log p(word) − log(1 − p(word)): keeps asking for more of the word once p(word) ≈ 1",
}
WORD_OBJECTIVE_LABELS = {"probability": "as much of the word as it can hear", "typical": "a typical clip of the word",
                         "log-odds": "ever more of the word (log-odds)"}  # the page's names for them


def check_word_objective(objective: str) -> None:
    """Refuse an objective a word dream does not know (settings and targets both ask, before anything loads)."""
    if objective not in WORD_OBJECTIVES:
        raise UserInputError(f"Word objective {objective!r}: one of {', '.join(WORD_OBJECTIVES)}.")


class WordTarget(AudioTarget):
    """One keyword of the project's word network (assets/words): log p(word), mean over 1 s windows — or, with
    ``objective="typical"``, how near the net's pooled features are to those of the word's typical clip, or with
    ``"log-odds"`` the word's log-odds (WORD_OBJECTIVES). The reported value is p(word) whatever was ascended."""

    value_label = "word probability"

    def __init__(self, word: str, device: torch.device, word_net: str = "", objective: str = "probability"):
        from .words import WORDS_STFT, load_word_net

        check_word_objective(objective)
        self.objective = objective
        self.words = load_word_net(device, word_net or None)  # "a,b,c": an ensemble
        if objective == "typical":  # refused now (no centroids) rather than at the first step
            self.words.require_centroids()
        self.index = self.words.index(word)
        self.word = self.words.labels[self.index]
        self.device, self.stft, self.name = device, WORDS_STFT, f"words:{self.word}"
        self.value_label = f"p({self.word})"

    def _log_probs_from_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        return self.words.log_probabilities_from_log_mel(self.words.front_from_magnitude(magnitude))

    def _objective(self, log_probs: torch.Tensor) -> torch.Tensor:
        """B×classes log-probabilities → B: log p(word), or its log-odds (which does not flatten as p → 1)."""
        if self.objective == "log-odds":
            others = torch.cat([log_probs[:, :self.index], log_probs[:, self.index + 1:]], dim=1)
            return log_probs[:, self.index] - torch.logsumexp(others, dim=1)
        return log_probs[:, self.index]

    def score(self, magnitude, image, generator):
        if self.objective == "typical":
            return self.words.typicality_from_log_mel(self.words.front_from_magnitude(magnitude), self.index)
        return self._objective(self._log_probs_from_magnitude(magnitude))

    @torch.no_grad()
    def report(self, magnitude):
        probs = self._log_probs_from_magnitude(magnitude)[0].exp()
        return {"value": float(probs[self.index]), "scores": dict(zip(self.words.labels, map(float, probs)))}

    def score_waveform(self, wav, generator):
        if self.objective == "typical":
            return self.words.typicality(wav, self.index)
        return self._objective(self.words.log_probabilities(wav))

    @torch.no_grad()
    def report_waveform(self, wav):
        probs = self.words.probabilities(wav.reshape(1, -1))[0]
        return {"value": float(probs[self.index]), "scores": dict(zip(self.words.labels, map(float, probs)))}


class ImageTarget(AudioTarget):
    """An image classifier looking at the spectrogram as a grey picture (low pitch at the bottom)."""

    value_label = "objective"

    def __init__(self, model, objective, device: torch.device | None = None):
        objective.validate(model.layer_shapes)
        self.model, self.objective = model, objective
        self.device, self.stft = device or model.device, DEFAULT_IMAGE_STFT
        self.name = f"image:{model.name}:{objective.name}"
        self.dbmap: DBMap | None = None  # set by dream(): how magnitudes become a [0, 1] picture

    @classmethod
    def from_spec(cls, spec: str, device: torch.device) -> "ImageTarget":
        """image:MODEL[:LAYER[:UNIT]] (DeepDream of the layer, or one channel) or image:MODEL:class:N."""
        from ..models import load_model
        from ..optvis import objectives

        parts = spec.split(":")
        if len(parts) < 2 or not parts[1]:
            raise UserInputError(
                "Image targets look like image:MODEL:LAYER, image:MODEL:LAYER:UNIT or image:MODEL:class:N.")
        model = load_model(parts[1], device=device)
        layer = parts[2] if len(parts) > 2 and parts[2] else (model.default_layer or "output")
        if layer == "class":
            if len(parts) < 4:
                raise UserInputError("image:MODEL:class:N needs a class index N.")
            objective = objectives.class_logit(_int(parts[3], "class"))
        elif len(parts) > 3:
            objective = objectives.channel(layer, _int(parts[3], "unit"))
        else:
            objective = objectives.deepdream(layer)
        return cls(model, objective, device)

    def picture(self, unit: torch.Tensor) -> torch.Tensor:
        """B×1×bins×frames in [0, 1] → B×C×H×W at the model's input size, low frequencies at the bottom."""
        flipped = torch.flip(unit, dims=[-2])
        resized = F.interpolate(flipped, size=tuple(self.model.input_size), mode="bilinear", align_corners=False)
        return resized.expand(-1, self.model.channels, -1, -1)

    def _value(self, unit: torch.Tensor) -> torch.Tensor:
        from ..capture import OUTPUT
        from ..optvis.objectives import Context

        picture = self.picture(unit)
        layers = sorted(self.objective.layers | {OUTPUT})
        acts = self.model.activations(picture, layers)
        return self.objective(Context(acts=acts, image=picture)), acts[OUTPUT]

    def score(self, magnitude, image, generator):
        return self._value(image)[0]

    @torch.no_grad()
    def report(self, magnitude):
        value, logits = self._value(self.dbmap.to_unit(magnitude)[:, None])
        probs = torch.softmax(logits.float(), -1)[0]
        top = probs.argsort(descending=True)[:8]
        return {"value": float(value[0]), "scores": {self.model.label(int(i)): float(probs[i]) for i in top}}


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"The {what} must be a whole number, got {text!r}.") from None




def make_target(net: str, device: torch.device, music_model: str = "MTT_vgg", word: str = "yes",
                word_net: str = "", word_objective: str = "probability") -> AudioTarget:
    """Parse ``speech``, ``words`` / ``words:WORD``, ``music:TAG`` or ``image:MODEL:…`` into a target
    (``word_net``: the word net's folder(s), "" for the shipped one; ``word_objective``: WORD_OBJECTIVES)."""
    kind, _, rest = net.partition(":")
    if kind == "speech":
        return SpeechTarget(device)
    if kind == "words":
        return WordTarget(rest or word, device, word_net, word_objective)
    if kind == "music":
        return MusicTarget(rest or "piano", device, music_model)
    if kind == "image":
        return ImageTarget.from_spec(net, device)
    raise UserInputError(
        f"Unknown net {net!r}: use speech, words (with a word), music:TAG or image:MODEL:LAYER[:UNIT].")
