"""Trainers for the project's own models: a small Fashion-MNIST CNN and a DDPM (diffusers UNet2DModel).

Both are reproducible from a seed. The DDPM trainer draws batch indices, timesteps and noise for step k
from a generator seeded with (seed, k), so a run resumed from a checkpoint continues exactly as an
uninterrupted one would. Checkpoints are written atomically every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import devices
from ..compat import import_diffusers
from ..errors import UserInputError
from ..limits import LIMITS, check, check_fields
from ..files import move_in, write_json, write_safetensors, write_torch
from ..progress import CANCELLED, TIME_LIMIT, ProgressCallback, ShouldStop, stop_requested
from .data import ImageDataset
from .gaussian import GaussianDiffusion


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
            f"{os.cpu_count()} cores visible")


# ---- classifier ---------------------------------------------------------------------------------
@dataclass
class ClassifierReport:
    test_accuracy: float
    seconds: float
    epochs: int
    hardware: str
    out_dir: str


def train_classifier(
    train: ImageDataset,
    test: ImageDataset,
    out_dir: str | Path,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    device: str | torch.device = "auto",
    callback: ProgressCallback | None = None,
    name: str = "fashion_cnn",
) -> ClassifierReport:
    """Train SmallCNN with AdamW + one-cycle LR and light shift augmentation; save safetensors + config.json."""
    from ..models.fashion import build_classifier

    dev = devices.choose_device(device)
    with devices.seeded(seed, dev):  # module init and dropout draw from torch's global RNG
        mean, std = float(train.images.mean()), float(train.images.std())
        config = {
            "name": name, "input_size": list(train.size), "channels": 1, "width": width, "hidden": 128,
            "labels": train.class_names, "normalize": [[mean], [std]], "source": train.source,
            "description": f"SmallCNN trained by the project on {train.source}",
        }
        model = build_classifier(config).to(dev)
        steps_per_epoch = math.ceil(len(train) / batch_size)
        total = epochs * steps_per_epoch
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total)
        gen = torch.Generator().manual_seed(seed)
        start, step = time.perf_counter(), 0
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(train), generator=gen)
            for i in range(steps_per_epoch):
                index = order[i * batch_size : (i + 1) * batch_size]
                x = train.images[index]
                shift = torch.randint(-2, 3, (2,), generator=gen).tolist()  # small translations generalise better
                x = torch.roll(x, shifts=shift, dims=(2, 3))
                x = ((x - mean) / std).to(dev)
                loss = F.cross_entropy(model(x), train.labels[index].to(dev), label_smoothing=0.05)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                step += 1
                if callback:
                    callback(step, total, None, loss.detach().reshape(1))
        seconds = time.perf_counter() - start
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.eval()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        loaded_config = dict(config)
        write_safetensors(out / "model.safetensors", state)
        accuracy = classifier_accuracy(load_classifier_dir_from(out, config), test)
        loaded_config["training"] = {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "seconds": round(seconds, 1),
            "hardware": _hardware(dev), "test_accuracy": round(accuracy, 4), "test_source": test.source,
        }
        write_json(out / "config.json", loaded_config)
        return ClassifierReport(accuracy, seconds, epochs, _hardware(dev), str(out))


def load_classifier_dir_from(folder: Path, config: dict):
    """Load a just-written classifier before its config.json exists (config passed in)."""
    write_json(folder / "config.json", config)
    from ..models.fashion import load_classifier_dir

    return load_classifier_dir(folder, "cpu")


@torch.no_grad()
def classifier_accuracy(model, data: ImageDataset, batch_size: int = 500) -> float:
    """Top-1 accuracy of a LoadedModel on images in [0, 1]."""
    correct = 0
    for start in range(0, len(data), batch_size):
        probs = model.probabilities(data.images[start : start + batch_size], batch_size=batch_size)
        correct += int((probs.argmax(1) == data.labels[start : start + batch_size]).sum())
    return correct / max(len(data), 1)


# ---- DDPM -----------------------------------------------------------------------------------------
MAX_CLASSES = 1000  # a class-conditional UNet's labels (its embedding has one more row: the null label)

@dataclass
class DDPMConfig:
    """Everything that defines a DDPM training run (saved with each checkpoint and the final model)."""

    steps: int = 8000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    schedule: str = "linear"  # or "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: bool = True  # self-attention at the coarsest resolution
    norm_num_groups: int = 8
    checkpoint_every: int = 250
    hflip: bool = False  # Fashion-MNIST shoes all face left: flips would only add a mode the probe never saw
    variance_type: str = "fixed_small"  # "learned_range": Improved DDPM (2C outputs, hybrid loss)
    vlb_weight: float = 0.001  # λ of the hybrid loss L_simple + λ·L_vlb (learned variances only)
    init_from: str = ""  # a diffusers UNet folder whose weights start the run where shapes match
    num_classes: int = 0  # > 0: class-conditional (labels 0 … num_classes−1, and num_classes: the null label)
    class_dropout: float = 0.1  # share of a conditional run's images shown with the null label (Ho & Salimans)
    class_lr_scale: float = 1.0  # the class embedding's learning rate over the rest's (it starts at zero)

    def __post_init__(self) -> None:
        check_fields(self, {"steps": LIMITS["train_steps"]})
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or not 0 <= self.num_classes <= MAX_CLASSES:
            raise UserInputError(f"The number of classes must be a whole number in [0, {MAX_CLASSES}] "
                                 f"(0: unconditional), not {self.num_classes!r}.")
        if not (0 < self.class_dropout < 1 and math.isfinite(self.class_dropout)):
            raise UserInputError("The share of null labels must lie strictly between 0 and 1 "
                                 f"(Ho & Salimans: 0.1–0.2), not {self.class_dropout}.")
        if not (0 < self.class_lr_scale <= 100 and math.isfinite(self.class_lr_scale)):
            raise UserInputError(f"The class embedding's learning-rate scale must lie in (0, 100], "
                                 f"not {self.class_lr_scale}.")
        if self.variance_type not in ("fixed_small", "fixed_large", "learned_range"):
            raise UserInputError(f"Unknown variance type {self.variance_type!r}: "
                                 "use fixed_small, fixed_large or learned_range.")
        if not (0 <= self.vlb_weight <= 1 and math.isfinite(self.vlb_weight)):
            raise UserInputError("The hybrid loss weight λ must lie in [0, 1] (Improved DDPM: 0.001).")
        for width in self.block_out_channels:
            check("channels", width, what="UNet block channels")

    @classmethod
    def from_dict(cls, data: dict) -> "DDPMConfig":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        if "block_out_channels" in values:
            values["block_out_channels"] = tuple(values["block_out_channels"])
        return cls(**values)


SCHEDULES = ("linear", "squaredcos_cap_v2")


def make_scheduler(schedule: str = "linear", num_train_timesteps: int = 1000, sampler: str = "ddpm",
                   variance_type: str = "fixed_small"):
    """A diffusers DDPMScheduler/DDIMScheduler with the given beta schedule (ε-prediction, clipped x̂0); the
    DDPM scheduler's ``variance_type`` is what an exported folder's scheduler_config.json records."""
    if schedule not in SCHEDULES:
        raise UserInputError(f"Unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}.")
    diffusers = import_diffusers()
    kwargs = dict(num_train_timesteps=num_train_timesteps, beta_schedule=schedule, prediction_type="epsilon",
                  clip_sample=True)
    if sampler == "ddpm":
        return diffusers.DDPMScheduler(**kwargs, variance_type=variance_type)
    if sampler == "ddim":
        return diffusers.DDIMScheduler(**kwargs, set_alpha_to_one=True)
    raise UserInputError(f"Unknown sampler {sampler!r}: use ddpm or ddim.")


def build_unet(config: DDPMConfig, sample_size: int, channels: int = 1):
    """A small UNet2DModel: len(block_out_channels) levels, attention (optional) only at the coarsest one;
    twice the output channels (ε and v) for learned variances. A class-conditional one has a class embedding of
    num_classes + 1 rows (the last: the null label), added to the timestep embedding and started at zero, so
    it starts as the unconditional model with the same weights."""
    diffusers = import_diffusers()
    out_channels = channels * (2 if config.variance_type == "learned_range" else 1)
    levels = len(config.block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if config.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    unet = diffusers.UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=out_channels,
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=config.norm_num_groups,
        attention_head_dim=None if not config.attention else min(32, config.block_out_channels[-1]),
        add_attention=config.attention,
        num_class_embeds=config.num_classes + 1 if config.num_classes else None,
    )
    if config.num_classes:
        with torch.no_grad():
            unet.class_embedding.weight.zero_()
    return unet


def check_sample_size(size: tuple[int, int], levels: int) -> None:
    factor = 2 ** (levels - 1)
    if size[0] != size[1] or size[0] % factor:
        raise UserInputError(
            f"Images are {size[0]}×{size[1]}: a {levels}-level UNet needs square images divisible by {factor}."
        )


class EMA:
    """Exponential moving average of parameters, with the usual warm-up min(decay, (1+k)/(10+k))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.detach().float(), 1 - decay)
            else:
                self.shadow[key].copy_(value)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


# ---- the one training loop --------------------------------------------------------------------------
def warmup_cosine_lr(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 10 % of it at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _same_settings(saved: dict, current: dict) -> bool:
    """A checkpoint resumes a run when everything but the step budget and checkpoint interval matches."""
    ignore = {"steps": 0, "checkpoint_every": 0}
    return saved | ignore == current | ignore


@dataclass
class TrainingRun:
    """What :func:`run_training` leaves behind: the trained model, its EMA and the books."""

    model: torch.nn.Module
    ema: "EMA"
    step: int
    start_step: int
    seconds: float  # this run's wall time
    earlier_seconds: float  # resumed runs before it
    losses: list[float]
    stopped: str | None


def run_training(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    ema: "EMA",
    loss_at,  # step -> scalar loss tensor; draws its batch from (seed, step) so resumes are exact
    *,
    steps: int,
    lr_at,  # step -> learning rate
    config: dict,
    same_settings,  # saved config dict -> bool
    checkpoint: Path,
    resume: bool = True,
    checkpoint_every: int = 250,
    log_every: int = 50,
    clip: float = 1.0,
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    time_limit_s: float | None = None,
) -> TrainingRun:
    """Step ``model`` from its last checkpoint to ``steps``: AdamW-style step, gradient clipping, EMA, mean loss
    per ``log_every`` window, an atomic checkpoint every ``checkpoint_every`` steps and on a stop. Shared by
    the DDPM and the noise-aware classifier trainers; a run resumed from its checkpoint continues exactly as
    an uninterrupted one (``loss_at`` must be a pure function of the step and the weights)."""
    start_step, earlier_seconds, losses = 0, 0.0, []
    window: list[float] = []  # losses of the current logging window (aligned to absolute steps)
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if not same_settings(state["config"]):
            raise UserInputError(
                f"{checkpoint} was written with different settings; pass --no-resume or another --out.")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        ema.shadow = {k: v.float() for k, v in state["ema"].items()}
        start_step, earlier_seconds, losses = int(state["step"]), float(state["seconds"]), list(state["losses"])
        window = list(state.get("window", []))

    def save_checkpoint(step: int, seconds: float) -> None:
        write_torch(checkpoint, {"config": config, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                 "ema": ema.shadow, "step": step, "seconds": seconds,
                                 "losses": losses, "window": window})

    model.train()
    started = time.perf_counter()
    step, stopped = start_step, None
    while step < steps:
        if stop_requested(should_stop):
            stopped = CANCELLED
            break
        if time_limit_s is not None and time.perf_counter() - started > time_limit_s:
            stopped = TIME_LIMIT
            break
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step) * group.get("lr_scale", 1.0)
        loss = loss_at(step)
        if not torch.isfinite(loss):
            stopped = f"diverged at step {step}"
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimiser.step()
        ema.update(model, step)
        step += 1
        window.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            losses.append(sum(window) / len(window))
            window = []
        if callback:
            callback(step, steps, None, loss.detach().reshape(1))
        if step % checkpoint_every == 0 or step == steps:
            save_checkpoint(step, earlier_seconds + time.perf_counter() - started)
    seconds = time.perf_counter() - started
    if step > start_step and (stopped is None or stopped in (CANCELLED, TIME_LIMIT)):
        save_checkpoint(step, earlier_seconds + seconds)
    model.eval()
    return TrainingRun(model, ema, step, start_step, seconds, earlier_seconds, losses, stopped)


def _labelled(labels: torch.Tensor | None) -> dict:
    """The UNet's keyword for a conditional batch (nothing for an unconditional one)."""
    return {} if labels is None else {"class_labels": labels}


def hybrid_loss(unet, gaussian: GaussianDiffusion, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
                vlb_weight: float = 0.001, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Improved DDPM's L_hybrid = L_simple + λ·L_vlb (mean over the batch); L_vlb trains Σ only."""
    x_t = gaussian.q_sample(x0, timesteps, noise)
    out = unet(x_t, timesteps, **_labelled(labels)).sample
    return gaussian.training_losses(out, x0, x_t, noise, timesteps, vlb_weight)["loss"].mean()


@torch.no_grad()
def evaluation_losses(unet, gaussian: GaussianDiffusion, images01: torch.Tensor, seed: int = 1234,
                      repeats: int = 4) -> dict[str, float]:
    """ε-MSE and L_t (bits/dim, uniform t) on fixed images, timesteps and noise: comparable between checkpoints."""
    gen = torch.Generator().manual_seed(seed)
    device = next(unet.parameters()).device
    x0 = (images01 * 2 - 1).repeat(repeats, 1, 1, 1)
    t = torch.randint(0, gaussian.num_steps, (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    was_training = unet.training
    unet.eval()
    x0, t, noise = x0.to(device), t.to(device), noise.to(device)
    x_t = gaussian.q_sample(x0, t, noise)
    out = unet(x_t, gaussian.model_timestep(t, device)).sample
    losses = gaussian.training_losses(out, x0, x_t, noise, t)
    unet.train(was_training)
    return {k: float(v.mean()) for k, v in losses.items()}


def init_from_pretrained(unet: torch.nn.Module, folder: str | Path) -> dict[str, str]:
    """Start ``unet`` from a diffusers UNet folder's (or a built-in model's) weights where the shapes match.
    An output conv with twice the channels (ε and v) takes the old conv in its ε half and starts its v half
    at zero weights and bias, i.e. v = 0.5: log Σ halfway between log β̃_t and log β_t. Returns what was
    done per tensor kind."""
    from ..models.weights import read_state_dict
    from .models import BUILTIN  # here, not at the top: models imports this module

    path = Path(BUILTIN.get(str(folder), folder)).expanduser()
    for candidate in (path / "diffusion_pytorch_model.safetensors",
                      path / "unet" / "diffusion_pytorch_model.safetensors"):
        if candidate.is_file():
            source = read_state_dict(candidate)
            break
    else:
        raise UserInputError(f"--init-from {folder}: no diffusion_pytorch_model.safetensors there (or in unet/).")
    target = unet.state_dict()
    loaded, widened = 0, []
    with torch.no_grad():
        for key, value in source.items():
            if key not in target:
                continue
            dest = target[key]
            if dest.shape == value.shape:
                dest.copy_(value)
                loaded += 1
            elif dest.ndim >= 1 and dest.shape[0] == 2 * value.shape[0] and dest.shape[1:] == value.shape[1:]:
                dest.zero_()
                dest[: value.shape[0]].copy_(value)  # ε half: the old output; v half: 0
                widened.append(key)
    if not loaded:
        raise UserInputError(f"--init-from {folder}: no tensor matches this UNet's shapes.")
    unet.load_state_dict(target)
    return {"copied": str(loaded), "widened": ", ".join(widened)}


def diffusion_loss(unet, scheduler, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """ε-prediction MSE: ‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t[, y])‖², x0 in [−1, 1]."""
    noisy = scheduler.add_noise(x0, noise, timesteps)
    return F.mse_loss(unet(noisy, timesteps, **_labelled(labels)).sample, noise)


@torch.no_grad()
def evaluation_loss(unet, scheduler, images01: torch.Tensor, seed: int = 1234, repeats: int = 4) -> float:
    """The diffusion loss on fixed images, timesteps and noise: comparable between checkpoints."""
    gen = torch.Generator().manual_seed(seed)
    device = next(unet.parameters()).device
    x0 = (images01 * 2 - 1).repeat(repeats, 1, 1, 1)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    was_training = unet.training
    unet.eval()
    loss = float(diffusion_loss(unet, scheduler, x0.to(device), t.to(device), noise.to(device)))
    unet.train(was_training)
    return loss


@dataclass
class DDPMReport:
    steps_done: int
    seconds: float  # wall time of this run (excluding earlier, resumed runs)
    total_seconds: float  # including earlier runs
    losses: list[float] = field(default_factory=list)  # mean training loss per logging window
    hardware: str = ""
    out_dir: str = ""
    stopped: str | None = None


def _batch_for_step(data: ImageDataset, config: DDPMConfig, step: int, num_timesteps: int):
    """Images, timesteps, noise and (conditional runs) labels of step ``step``, the null label on a
    ``class_dropout`` share of them: a pure function of (seed, step)."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    index = torch.randint(0, len(data), (config.batch_size,), generator=gen)
    x = data.images[index] * 2 - 1
    if config.hflip:
        flip = torch.rand(config.batch_size, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    t = torch.randint(0, num_timesteps, (config.batch_size,), generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    labels = None
    if config.num_classes:  # drawn after the noise: an unconditional run's batches stay what they were
        labels = data.labels[index].clone()
        null = torch.rand(config.batch_size, generator=gen) < config.class_dropout
        labels[null] = config.num_classes
    return x, t, noise, labels


def _parameter_groups(unet: torch.nn.Module, config: DDPMConfig) -> list[dict]:
    """One group, or two for a conditional model: its class embedding starts at zero and gets the small gradient
    of a label's marginal use, so ``class_lr_scale`` lets it move faster than the rest."""
    if not config.num_classes or config.class_lr_scale == 1.0:
        return [{"params": list(unet.parameters())}]
    table = list(unet.class_embedding.parameters())
    ids = {id(p) for p in table}
    rest = [p for p in unet.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": table, "lr_scale": config.class_lr_scale}]


def train_ddpm(
    data: ImageDataset,
    out_dir: str | Path,
    config: DDPMConfig,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "auto",
    callback: ProgressCallback | None = None,
    should_stop: ShouldStop | None = None,
    log_every: int = 50,
    time_limit_s: float | None = None,
) -> DDPMReport:
    """Train a DDPM on ``data`` and save the EMA UNet + scheduler in diffusers format under ``out_dir``.

    ``checkpoint`` (default ``out_dir/checkpoint.pt``) holds model, EMA, optimiser and step; with
    ``resume`` a run picks up where the last checkpoint left it. ``time_limit_s`` stops this run cleanly
    (checkpoint + export) after that much wall time; resuming continues the same step sequence.
    """
    dev = devices.choose_device(device)
    check_sample_size(data.size, len(config.block_out_channels))
    if config.num_classes and config.num_classes != len(data.class_names):
        raise UserInputError(f"A class-conditional model of {data.source} needs {len(data.class_names)} classes, "
                             f"not {config.num_classes}.")
    if config.num_classes and len(data) and (int(data.labels.min()) < 0
                                             or int(data.labels.max()) >= config.num_classes):
        raise UserInputError(f"The data's labels run {int(data.labels.min())}…{int(data.labels.max())}: a model "
                             f"with {config.num_classes} classes takes 0…{config.num_classes - 1}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(checkpoint) if checkpoint else out / "checkpoint.pt"
    with devices.seeded(config.seed, dev):  # module init draws from torch's global RNG
        unet = build_unet(config, data.size[0], channels=data.images.shape[1]).to(dev)
    if config.init_from:
        init_from_pretrained(unet, config.init_from)
    scheduler = make_scheduler(config.schedule, config.num_train_timesteps, "ddpm", config.variance_type)
    optimiser = torch.optim.AdamW(_parameter_groups(unet, config), lr=config.lr, weight_decay=0.0)
    learned = config.variance_type == "learned_range"
    gaussian = GaussianDiffusion.from_schedule(config.schedule, config.num_train_timesteps, config.variance_type)

    def loss_at(step: int) -> torch.Tensor:
        x, t, noise, labels = _batch_for_step(data, config, step, config.num_train_timesteps)
        labels = None if labels is None else labels.to(dev)
        if not learned:  # the original ε-MSE through the diffusers scheduler: old runs resume bit for bit
            return diffusion_loss(unet, scheduler, x.to(dev), t.to(dev), noise.to(dev), labels)
        return hybrid_loss(unet, gaussian, x.to(dev), t.to(dev), noise.to(dev), config.vlb_weight, labels)

    run = run_training(
        unet, optimiser, EMA(unet, config.ema_decay), loss_at,
        steps=config.steps, lr_at=lambda step: warmup_cosine_lr(step, config.lr, config.warmup, config.steps),
        config=asdict(config),
        same_settings=lambda saved: _same_settings(asdict(DDPMConfig.from_dict(saved)), asdict(config)),
        checkpoint=ckpt_path, resume=resume, checkpoint_every=config.checkpoint_every, log_every=log_every,
        callback=callback, should_stop=should_stop, time_limit_s=time_limit_s,
    )
    report = DDPMReport(run.step, run.seconds, run.earlier_seconds + run.seconds, run.losses, _hardware(dev), str(out),
                        run.stopped)
    export_ddpm(unet, run.ema, scheduler, config, out, report, data.source)
    return report


def export_ddpm(unet, ema: EMA, scheduler, config: DDPMConfig, out: Path, report: DDPMReport, source: str) -> None:
    """Write the EMA weights in diffusers format (config.json + diffusion_pytorch_model.safetensors +
    scheduler_config.json) plus training.json (settings, loss curve, time, hardware)."""
    import copy

    export = copy.deepcopy(unet).cpu()
    ema.copy_to(export)
    # diffusers writes its files in place: stage them, then move each one in atomically
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as staging:
        export.save_pretrained(staging, safe_serialization=True)
        scheduler.save_pretrained(staging)
        move_in(staging, out)
    write_json(out / "training.json", {
        "config": asdict(config), "data": source, "steps_done": report.steps_done,
        "seconds": round(report.total_seconds, 1), "hardware": report.hardware,
        "torch": torch.__version__, "loss_per_window": [round(v, 5) for v in report.losses],
        "stopped": report.stopped,
    })
