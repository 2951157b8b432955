"""A noise-aware classifier p(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, §4).

``NoisyCNN`` reads a noised image x_t (model space, data in [−1, 1]) and its noise level. The noise level
is given as log-SNR λ = log(ᾱ / (1 − ᾱ)), not as a timestep index: λ means the same thing under every
schedule, so a classifier trained on the linear T = 1000 schedule of ``fashion_ddpm`` can guide a cosine
or respaced chain at the noise level it was trained on (λ outside the trained range is clamped to it).
The embedding of λ modulates every convolution stage (FiLM: scale and shift after GroupNorm, which, unlike
BatchNorm, does not mix statistics of different noise levels in one batch). SiLU and average pooling keep
∇ₓ log p smooth for guidance.

Training shares :func:`explorer.diffusion.train.run_training` with the DDPM trainer: the batch of step k
(indices, shifts, timesteps, noise) is drawn from a generator seeded with (seed, k), so runs resume exactly.
The export is ``model.safetensors`` + ``config.json`` (architecture, labels, the training schedule's λ
range, the training run and the test accuracy per t range).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import adversarial, devices
from ..errors import UserInputError
from ..files import read_user_file, write_json, write_safetensors
from ..limits import LIMITS, check_fields
from ..models.weights import WeightsUnavailable, load_weights
from ..progress import ProgressCallback, ShouldStop
from .data import ImageDataset
from .train import EMA, _hardware, _same_settings, make_scheduler, run_training, warmup_cosine_lr

ASSETS = Path(__file__).resolve().parents[2] / "assets"
BUILTIN = {"fashion_noisy_cnn": ASSETS / "fashion_noisy_cnn"}
T_BINS = 10  # accuracy is reported per tenth of the training timesteps
MAX_ADV_EPS = 20.0  # an L2 attack radius beyond an image's own norm makes no sense
MAX_ADV_STEPS = 20  # each PGD step costs one more forward and backward per training step
_cache: dict[tuple[str, str], "NoisyClassifier"] = {}
_lock = threading.Lock()


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """λ = log(ᾱ / (1 − ᾱ)): the noise level of x_t = √ᾱ·x0 + √(1−ᾱ)·ε, independent of the schedule."""
    abar = alphas_cumprod.double().clamp(1e-12, 1 - 1e-12)
    return (abar.log() - torch.log1p(-abar)).float()


def level_embedding(level: torch.Tensor, dim: int, low: float, high: float) -> torch.Tensor:
    """Sinusoidal embedding (as for DDPM timesteps) of λ mapped to a pseudo-timestep in [0, 1000]:
    1000 at the noisiest trained λ (``low``), 0 at the cleanest (``high``)."""
    u = (high - level.float().clamp(low, high)) / (high - low) * 1000.0
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    angles = u[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FiLMConv(nn.Module):
    """conv 3×3 → GroupNorm → × (1 + scale) + shift from the noise-level embedding → SiLU."""

    def __init__(self, cin: int, cout: int, embed: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, cout), cout)
        self.film = nn.Linear(embed, 2 * cout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        return F.silu(self.norm(self.conv(x)) * (1 + scale) + shift)


class NoisyCNN(nn.Module):
    """Two stages of two FiLM convolutions with average pooling, and a head that also sees the embedding."""

    def __init__(self, input_size: tuple[int, int] = (28, 28), channels: int = 1, width: int = 32,
                 hidden: int = 128, num_classes: int = 10, embed: int = 64,
                 level_range: tuple[float, float] = (-10.5, 9.5)):
        super().__init__()
        self.embed_dim = embed
        self.level_range = (float(level_range[0]), float(level_range[1]))
        self.embed = nn.Sequential(nn.Linear(embed, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.block1 = nn.ModuleList([FiLMConv(channels, width, embed), FiLMConv(width, width, embed)])
        self.block2 = nn.ModuleList([FiLMConv(width, 2 * width, embed), FiLMConv(2 * width, 2 * width, embed)])
        flat = 2 * width * (input_size[0] // 4) * (input_size[1] // 4)
        self.hidden = nn.Linear(flat + embed, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The penultimate features (B × hidden)."""
        emb = self.embed(level_embedding(level.to(x.device).expand(x.shape[0]), self.embed_dim, *self.level_range))
        h = x
        for block in (self.block1, self.block2):
            for layer in block:
                h = layer(h, emb)
            h = F.avg_pool2d(h, 2)
        return F.silu(self.hidden(torch.cat([h.flatten(1), emb], dim=1)))

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Logits for x_t (model space) at log-SNR ``level`` (a scalar or one per image)."""
        return self.out(self.features(x, level))


def build_noisy_classifier(config: dict) -> NoisyCNN:
    return NoisyCNN(
        input_size=tuple(config["input_size"]), channels=int(config.get("channels", 1)),
        width=int(config.get("width", 32)), hidden=int(config.get("hidden", 128)),
        num_classes=len(config["labels"]), embed=int(config.get("embed", 64)),
        level_range=tuple(config["log_snr_range"]),
    )


@dataclass
class NoisyClassifier:
    """A loaded noise-aware classifier: p(y | x_t, λ) with its labels and trained noise range."""

    name: str
    module: NoisyCNN
    labels: list[str]
    config: dict
    device: torch.device

    @property
    def level_range(self) -> tuple[float, float]:
        return self.module.level_range

    def clamp_level(self, level: torch.Tensor) -> torch.Tensor:
        low, high = self.level_range
        return level.float().clamp(low, high)

    def logits(self, x_t: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """Logits for x_t (model space [−1, 1] plus noise) whose noise level is ᾱ (scalar or per image)."""
        abar = torch.as_tensor(alpha_bar, dtype=torch.float64, device=x_t.device).reshape(-1)
        return self.module(x_t.float(), self.clamp_level(log_snr(abar)).to(x_t.device))

    def log_prob_grad(self, x_t: torch.Tensor, alpha_bar: torch.Tensor | float, classes: torch.Tensor) -> torch.Tensor:
        """∇ₓ log p(y | x_t) for each image's target class (what guidance adds to the reverse step)."""
        return self.log_prob_and_grad(x_t, alpha_bar, classes)[1]

    def log_prob_and_grad(self, x_t: torch.Tensor, alpha_bar: torch.Tensor | float,
                          classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(y | x_t) per image, ∇ₓ log p(y | x_t)) for each image's target class, from one pass."""
        with torch.enable_grad():
            x = x_t.detach().float().requires_grad_(True)
            log_p = F.log_softmax(self.logits(x, alpha_bar), dim=-1)
            chosen = log_p.gather(1, classes.to(x.device).view(-1, 1)).reshape(-1)
            (grad,) = torch.autograd.grad(chosen.sum(), x)
        return chosen.detach(), grad

    @torch.no_grad()
    def probabilities_clean(self, images01: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """p(y | x_0) for clean images in [0, 1] (t = 0, ᾱ = 1 − 1e-4: the cleanest trained level)."""
        abar0 = float(self.config.get("alpha_bar_0", 1 - 1e-4))
        out = []
        for i in range(0, images01.shape[0], batch_size):
            x = images01[i : i + batch_size].to(self.device).float() * 2 - 1
            out.append(torch.softmax(self.logits(x, abar0), dim=-1).cpu())
        return torch.cat(out)


MAX_CONFIG_BYTES = 1 << 20  # a guide's config.json with its tables is a few kB


def _classifier_files(name_or_folder: str | Path) -> tuple[Path, dict]:
    """The folder of a built-in name or a path, and its config.json (size-bounded, checked to parse): the one
    way a guide's folder is read, for loading and for ``init_from``."""
    folder = BUILTIN.get(str(name_or_folder), Path(name_or_folder).expanduser())
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise WeightsUnavailable(
            f"{folder} needs config.json and model.safetensors of a noise-aware classifier; train one with "
            "`python -m explorer diffusion train-noisy-classifier --out runs/fashion_noisy_cnn`.")
    raw = read_user_file(config_file, "Noise-aware classifier config", max_bytes=MAX_CONFIG_BYTES)
    try:
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise TypeError("not a JSON object")
    except (ValueError, TypeError) as exc:
        raise UserInputError(f"{config_file} is not a noise-aware classifier config ({type(exc).__name__}: {exc}).") \
            from None
    return folder, config


def load_noisy_classifier(name_or_folder: str | Path = "fashion_noisy_cnn",
                          device: str | torch.device = "auto") -> NoisyClassifier:
    """The shipped ``fashion_noisy_cnn`` or a folder written by ``diffusion train-noisy-classifier`` (cached)."""
    dev = devices.choose_device(device)
    folder = BUILTIN.get(str(name_or_folder), Path(name_or_folder).expanduser())
    key = (str(Path(folder).resolve()), str(dev))
    with _lock:
        if key in _cache:
            return _cache[key]
        folder, config = _classifier_files(name_or_folder)
        try:
            module = build_noisy_classifier(config)
        except (ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"{folder / 'config.json'} is not a noise-aware classifier config "
                                 f"({type(exc).__name__}: {exc}).") from None
        weights_file = folder / "model.safetensors"
        load_weights(module, weights_file,
                     "the noise-aware classifier its config.json describes", label=str(weights_file))
        module.eval().requires_grad_(False).to(dev)
        model = NoisyClassifier(config.get("name", folder.name), module, list(config["labels"]), config, dev)
        _cache[key] = model
        return model


# ---- training -----------------------------------------------------------------------------------------
@dataclass
class NoisyClassifierConfig:
    """Everything that defines a training run of the noise-aware classifier (saved with each checkpoint)."""

    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.999
    seed: int = 0
    width: int = 32
    hidden: int = 128
    embed: int = 64
    schedule: str = "linear"  # the noise schedule of the DDPM it will guide
    num_train_timesteps: int = 1000
    shift: int = 2  # random translations of up to ±shift px, as the clean classifier's training
    checkpoint_every: int = 250
    t_max: int | None = None  # train only at t ≤ t_max: where a guidance interval (guide_from) uses the guide
    init_from: str = ""  # a noise-aware classifier (built-in name or folder) whose weights start the run
    adv_eps: float = 0.0  # > 0: adversarial training, L2 radius of the attack on x_t (model space); 0: plain
    adv_steps: int = 3  # PGD steps of that attack

    def __post_init__(self) -> None:
        check_fields(self, {"steps": LIMITS["train_steps"], "embed": LIMITS["width"], "hidden": LIMITS["width"],
                            "shift": None})
        if self.t_max is not None and (not isinstance(self.t_max, int) or isinstance(self.t_max, bool)
                                       or not 0 <= self.t_max < self.num_train_timesteps):
            raise UserInputError(f"t_max must be a timestep in [0, {self.num_train_timesteps - 1}], "
                                 f"not {self.t_max}.")
        if not (isinstance(self.adv_eps, (int, float)) and not isinstance(self.adv_eps, bool)
                and math.isfinite(self.adv_eps) and 0 <= self.adv_eps <= MAX_ADV_EPS):
            raise UserInputError(f"adv_eps must be a number in [0, {MAX_ADV_EPS}] (an L2 radius in model space, "
                                 f"where a 28×28 image's own norm is ≈ 20), not {self.adv_eps}.")
        if not (isinstance(self.adv_steps, int) and not isinstance(self.adv_steps, bool)
                and 1 <= self.adv_steps <= MAX_ADV_STEPS):
            raise UserInputError(f"adv_steps must be a whole number in [1, {MAX_ADV_STEPS}], not {self.adv_steps}.")

    @classmethod
    def from_dict(cls, data: dict) -> "NoisyClassifierConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class NoisyClassifierReport:
    steps_done: int
    seconds: float
    total_seconds: float
    losses: list[float]
    accuracy_by_t: list[dict]
    hardware: str
    out_dir: str
    stopped: str | None = None


def _noisy_batch(data: ImageDataset, config: NoisyClassifierConfig, step: int, abar: torch.Tensor):
    """Images, labels, timesteps and noised images of step ``step``: a pure function of (seed, step)."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    index = torch.randint(0, len(data), (config.batch_size,), generator=gen)
    x0 = data.images[index] * 2 - 1
    if config.shift:
        shift = torch.randint(-config.shift, config.shift + 1, (2,), generator=gen).tolist()
        x0 = torch.roll(x0, shifts=shift, dims=(2, 3))
    top = config.num_train_timesteps if config.t_max is None else int(config.t_max) + 1
    t = torch.randint(0, top, (config.batch_size,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    a = abar[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, data.labels[index], t


@torch.no_grad()
def t_ranges(T: int, bins: int = T_BINS) -> list[tuple[int, int]]:
    """The t ranges of :func:`accuracy_by_t`, in its order: t = 0 exactly, then ``bins`` equal ranges [lo, hi)."""
    edges = [round(i * T / bins) for i in range(bins + 1)]
    return [(0, 1)] + list(zip(edges[:-1], edges[1:]))


def noised_draws(data: ImageDataset, abar: torch.Tensor, *, bins: int = T_BINS, seed: int = 4321,
                 batch_size: int = 500) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(lo, hi, x_t, log-SNR, labels) batches: every image of ``data`` noised once per t range at a t drawn
    uniformly in [lo, hi), t and ε fixed by ``seed``. Any two classifiers fed these see the same draws, so
    their accuracies can be compared image by image."""
    levels = log_snr(abar)
    gen = torch.Generator().manual_seed(seed)
    for lo, hi in t_ranges(len(abar), bins):
        for start in range(0, len(data), batch_size):
            x0 = data.images[start : start + batch_size] * 2 - 1
            t = torch.randint(lo, hi, (x0.shape[0],), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            yield lo, hi, a.sqrt() * x0 + (1 - a).sqrt() * noise, levels[t], data.labels[start : start + batch_size]


def accuracy_by_t(module: NoisyCNN, data: ImageDataset, abar: torch.Tensor, *, bins: int = T_BINS, seed: int = 4321,
                  batch_size: int = 500, device: torch.device | str = "cpu") -> list[dict]:
    """Top-1 accuracy on ``data`` noised at t drawn uniformly inside each of ``bins`` equal t ranges (one
    draw of t and ε per image, fixed by ``seed``: :func:`noised_draws`), plus the row at t = 0 exactly."""
    module.eval()
    correct = dict.fromkeys(t_ranges(len(abar), bins), 0)
    for lo, hi, x_t, level, labels in noised_draws(data, abar, bins=bins, seed=seed, batch_size=batch_size):
        logits = module(x_t.to(device), level.to(device))
        correct[lo, hi] += int((logits.argmax(1).cpu() == labels).sum())
    return [{"t_from": lo, "t_to": hi - 1, "accuracy": round(c / max(1, len(data)), 4), "n": len(data)}
            for (lo, hi), c in correct.items()]


def l2_pgd(module: nn.Module, x_t: torch.Tensor, level: torch.Tensor, labels: torch.Tensor,
           eps: float, steps: int) -> torch.Tensor:
    """x_t moved, inside an L2 ball of radius ``eps`` per image, to raise the cross-entropy of ``labels`` at
    noise ``level``: the project's one attack (:func:`explorer.adversarial.l2_pgd`). Training on these points
    (Kawar et al. 2022, robust classifier guidance) asks the guide for gradients that change the class only by
    changing what the image looks like, not by small unseen patterns."""
    return adversarial.l2_pgd(lambda x: module(x, level), x_t, labels, eps, steps)


INIT_FROM_SAME = ("width", "hidden", "embed", "channels", "input_size", "labels", "log_snr_range")


def _init_from_classifier(model: NoisyCNN, name_or_folder: str, arch: dict) -> None:
    """Start from another noise-aware classifier's weights (fine-tuning). It must have the same architecture and
    the same log-SNR range (the range maps a noise level onto the embedding the weights learnt)."""
    folder, saved = _classifier_files(name_or_folder)
    differ = [k for k in INIT_FROM_SAME if saved.get(k) != arch[k]]
    if differ:
        raise UserInputError(f"--init-from {name_or_folder}: its {', '.join(differ)} differ from this run's.")
    weights_file = folder / "model.safetensors"
    load_weights(model, weights_file, "the noise-aware classifier its config.json describes", label=str(weights_file))


def train_noisy_classifier(
    train: ImageDataset,
    test: ImageDataset,
    out_dir: str | Path,
    config: NoisyClassifierConfig,
    *,
    name: str = "fashion_noisy_cnn",
    checkpoint: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "auto",
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    time_limit_s: float | None = None,
    log_every: int = 50,
    eval_images: int | None = None,
) -> NoisyClassifierReport:
    """Train ``NoisyCNN`` on training images noised at uniform random t of ``config.schedule`` (cross-entropy),
    export the EMA weights as safetensors + config.json with the test accuracy per t range."""
    dev = devices.choose_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(checkpoint) if checkpoint else out / "checkpoint.pt"
    abar = make_scheduler(config.schedule, config.num_train_timesteps, "ddpm").alphas_cumprod.float()
    levels = log_snr(abar)
    level_range = (float(levels.min()), float(levels.max()))
    arch = {"name": name, "input_size": list(train.size), "channels": int(train.images.shape[1]),
            "width": config.width, "hidden": config.hidden, "embed": config.embed, "labels": train.class_names,
            "log_snr_range": [round(level_range[0], 6), round(level_range[1], 6)], "alpha_bar_0": float(abar[0]),
            "input": "x_t in model space (clean data scaled to [-1, 1]); noise level as log-SNR log(abar/(1-abar))",
            "schedule": config.schedule, "num_train_timesteps": config.num_train_timesteps, "source": train.source,
            "description": f"Noise-aware classifier p(y | x_t, t) trained by the project on {train.source}"}
    with devices.seeded(config.seed, dev):  # module init draws from torch's global RNG
        model = build_noisy_classifier(arch).to(dev)
    if config.init_from and not (resume and ckpt_path.exists()):  # a resumed checkpoint has its own weights
        _init_from_classifier(model, config.init_from, arch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)

    def loss_at(step: int) -> torch.Tensor:
        x_t, y, t = _noisy_batch(train, config, step, abar)
        x_t, level, y = x_t.to(dev), levels[t].to(dev), y.to(dev)
        x_t = l2_pgd(model, x_t, level, y, config.adv_eps, config.adv_steps)  # unchanged when adv_eps = 0
        return F.cross_entropy(model(x_t, level), y)

    run = run_training(
        model, optimiser, EMA(model, config.ema_decay), loss_at,
        steps=config.steps, lr_at=lambda step: warmup_cosine_lr(step, config.lr, config.warmup, config.steps),
        config=asdict(config),
        same_settings=lambda saved: _same_settings(asdict(NoisyClassifierConfig.from_dict(saved)), asdict(config)),
        checkpoint=ckpt_path, resume=resume, checkpoint_every=config.checkpoint_every, log_every=log_every,
        callback=callback, should_stop=should_stop, time_limit_s=time_limit_s,
    )
    export = build_noisy_classifier(arch)
    run.ema.copy_to(export)
    export.eval()
    rows = accuracy_by_t(export, test.subset(slice(0, eval_images)) if eval_images else test, abar)
    state = {k: v.detach().cpu().contiguous() for k, v in export.state_dict().items()}
    write_safetensors(out / "model.safetensors", state)
    report = NoisyClassifierReport(run.step, run.seconds, run.earlier_seconds + run.seconds, run.losses, rows,
                                   _hardware(dev), str(out), run.stopped)
    write_json(out / "config.json", arch | {"training": {
        "config": asdict(config), "steps_done": run.step, "seconds": round(report.total_seconds, 1),
        "hardware": report.hardware, "torch": torch.__version__, "stopped": run.stopped,
        "loss_per_window": [round(v, 5) for v in run.losses], "test_source": test.source,
        "test_accuracy_by_t": rows,
    }})
    with _lock:  # a re-export replaces what an earlier load of this folder cached
        for key in [k for k in _cache if k[0] == str(out.resolve())]:
            del _cache[key]
    return report
