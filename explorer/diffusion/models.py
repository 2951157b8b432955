"""Diffusion models for the inspector: the shipped Fashion-MNIST DDPM or any diffusers-format UNet folder.

A folder works when it holds a ``UNet2DModel`` (config.json + diffusion_pytorch_model.safetensors/.bin),
either at its top level or in ``unet/`` (pipeline layout), with an optional ``scheduler_config.json``
(top level or ``scheduler/``). Models are expected to work on images in [-1, 1] and predict ε.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import devices
from ..compat import import_diffusers
from ..errors import UserInputError
from .train import SCHEDULES, make_scheduler

if TYPE_CHECKING:  # pragma: no cover
    from .gaussian import GaussianDiffusion

ASSETS = Path(__file__).resolve().parents[2] / "assets"
BUILTIN = {"fashion_ddpm": ASSETS / "fashion_ddpm", "fashion_iddpm": ASSETS / "fashion_iddpm",
           "fashion_cddpm": ASSETS / "fashion_cddpm"}
_cache: dict[tuple[str, str], "DiffusionModel"] = {}
_lock = threading.Lock()


class ClassConditionalUNet(torch.nn.Module):
    """A class-conditional ``UNet2DModel`` (``num_class_embeds`` = classes + 1, the last row the null label it was
    trained with for classifier-free guidance). Called without labels it is the model's unconditional mode, so
    every tool that calls ``unet(x, t)`` — the recorder, the likelihood, inpainting — works on it unchanged."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.inner = unet

    @property
    def config(self):
        return self.inner.config

    @property
    def num_classes(self) -> int:
        return int(self.inner.config.num_class_embeds) - 1

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor | None = None):
        if class_labels is None:
            class_labels = torch.full((sample.shape[0],), self.null_label, dtype=torch.long, device=sample.device)
        return self.inner(sample, timestep, class_labels=class_labels)


@dataclass
class DiffusionModel:
    """A loaded UNet plus the schedule it was trained with; makes samplers for any schedule."""

    name: str
    unet: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    path: str

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def sample_size(self) -> tuple[int, int]:
        size = self.unet.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def num_classes(self) -> int:
        """The classes a class-conditional model is told (0: unconditional)."""
        return self.unet.num_classes if isinstance(self.unet, ClassConditionalUNet) else 0

    @property
    def train_schedule(self) -> str:
        return str(self.scheduler_config.get("beta_schedule", "linear"))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def variance_type(self) -> str:
        """fixed_small / fixed_large (the UNet outputs ε) or learned_range (ε and v: Improved DDPM)."""
        return str(self.scheduler_config.get("variance_type") or "fixed_small")

    @property
    def learned_variance(self) -> bool:
        return self.variance_type == "learned_range"

    def gaussian(self, steps: int | None = None) -> "GaussianDiffusion":
        """The model's training diffusion (explorer.diffusion.gaussian), respaced to ``steps`` if given."""
        from .gaussian import GaussianDiffusion

        full = GaussianDiffusion.for_model(self)
        return full if steps is None or steps == full.num_steps else full.respaced(steps)

    def scheduler(self, sampler: str = "ddim", schedule: str | None = None):
        """A fresh DDPM/DDIM scheduler (schedulers keep state: one per chain) with the given β schedule."""
        schedule = schedule or self.train_schedule
        if schedule not in SCHEDULES and schedule != self.train_schedule:
            raise UserInputError(f"Unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}.")
        if schedule == self.train_schedule:
            diffusers = import_diffusers()
            cls = {"ddpm": diffusers.DDPMScheduler, "ddim": diffusers.DDIMScheduler}.get(sampler)
            if cls is None:
                raise UserInputError(f"Unknown sampler {sampler!r}: use ddpm or ddim.")
            config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
            return cls.from_config(config)
        return make_scheduler(schedule, self.num_train_timesteps, sampler)

    def _train_log_abar(self) -> np.ndarray:
        train = self.scheduler("ddpm", self.train_schedule)
        return np.log(train.alphas_cumprod.double().numpy())

    def model_timesteps_for(self, schedule: str | None, timesteps: list[int]) -> list[torch.Tensor]:
        """The timestep to feed the UNet at each sampler timestep.

        Same schedule as training: t itself. Another schedule: the (fractional) training timestep with the
        same noise level ᾱ, so a UNet trained on the linear schedule can still denoise a cosine chain.
        """
        if schedule in (None, self.train_schedule):
            return [torch.tensor(int(t), device=self.device) for t in timesteps]
        target = self.scheduler("ddpm", schedule).alphas_cumprod.double().numpy()
        train = self._train_log_abar()
        grid = np.arange(len(train), dtype=np.float64)
        # log ᾱ decreases with t: interpolate t over the reversed (increasing) table
        mapped = np.interp(np.log(target[np.asarray(timesteps)]), train[::-1], grid[::-1])
        return [torch.tensor(float(m), device=self.device, dtype=torch.float32) for m in mapped]

    def model_timesteps(self, scheduler) -> list[torch.Tensor]:
        schedule = scheduler.config.beta_schedule
        return self.model_timesteps_for(schedule, [int(t) for t in scheduler.timesteps])

    def adapt_images(self, images01: torch.Tensor) -> torch.Tensor:
        """Real images -> the UNet's channels and size (grey↔RGB, resize-and-pad)."""
        from ..images import fit

        x = images01.float()
        if x.ndim == 3:
            x = x[None]
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x[:, :1].expand(-1, self.channels, -1, -1)
        if tuple(x.shape[-2:]) != self.sample_size:
            x = fit(x, self.sample_size, "pad")
        return x.contiguous()

    def describe(self) -> str:
        params = sum(p.numel() for p in self.unet.parameters())
        told = f", class-conditional ({self.num_classes} classes + the null label)" if self.num_classes else ""
        return (f"{self.name}: UNet2DModel {params / 1e6:.2f} M parameters, {self.channels}×{self.sample_size[0]}×"
                f"{self.sample_size[1]}, trained on the {self.train_schedule} schedule "
                f"with T={self.num_train_timesteps}{told}")


def _resolve(name_or_path: str) -> tuple[str, Path]:
    if name_or_path in BUILTIN:
        return name_or_path, BUILTIN[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise UserInputError(
            f"Unknown diffusion model {name_or_path!r}: use {', '.join(BUILTIN)} or a folder in diffusers format "
            "(config.json + diffusion_pytorch_model.safetensors, or unet/ + scheduler/)."
        )
    return path.name, path


def _find_unet_dir(path: Path) -> Path:
    for candidate in (path, path / "unet"):
        if (candidate / "config.json").is_file():
            return candidate
    raise UserInputError(f"{path} has no UNet config.json (looked in {path} and {path / 'unet'}).")


def _scheduler_config(path: Path) -> dict:
    for candidate in (path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon", "clip_sample": True}


def available_diffusion_models() -> list[str]:
    """Built-in names whose files are present."""
    return [name for name, path in BUILTIN.items() if (path / "config.json").is_file()]


def load_diffusion_model(name_or_path: str = "fashion_ddpm",
                         device: str | torch.device | None = "auto") -> DiffusionModel:
    """Load (once per process and device) a built-in name or a diffusers-format folder."""
    dev = devices.choose_device(device)
    name, path = _resolve(name_or_path)
    key = (str(path.resolve()), str(dev))
    with _lock:
        if key in _cache:
            return _cache[key]
        unet_dir = _find_unet_dir(path)
        config = json.loads((unet_dir / "config.json").read_text())
        if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
            raise UserInputError(f"{unet_dir} holds a {config.get('_class_name')}; "
                                 "the inspector takes UNet2DModel folders.")
        if config.get("class_embed_type") is not None:  # refused from the config, before any weight is read
            raise UserInputError(f"{unet_dir}: class embeddings of type {config['class_embed_type']!r} are not "
                                 "supported (the inspector takes label-embedding models: num_class_embeds).")
        labels = config.get("num_class_embeds")
        if labels is not None and (not isinstance(labels, int) or isinstance(labels, bool) or not 2 <= labels <= 1001):
            raise UserInputError(f"{unet_dir}: a class-conditional UNet needs a class and the null label "
                                 f"(num_class_embeds 2…1001), not {labels!r}.")
        diffusers = import_diffusers()
        verbosity = diffusers.utils.logging.get_verbosity()
        diffusers.utils.logging.set_verbosity_error()  # no "install accelerate" advice for a 3 MB model
        try:
            unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir))
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserInputError(f"Could not load the UNet in {unet_dir}: {str(exc).splitlines()[0]}") from exc
        finally:
            diffusers.utils.logging.set_verbosity(verbosity)
        if config.get("num_class_embeds") is not None:
            unet = ClassConditionalUNet(unet)
        unet.eval().requires_grad_(False).to(dev)
        scheduler_config = _scheduler_config(path)
        if scheduler_config.get("prediction_type", "epsilon") != "epsilon":
            raise UserInputError(f"{path}: only ε-prediction models are supported "
                                 f"(found {scheduler_config['prediction_type']}).")
        model = DiffusionModel(name, unet, scheduler_config, dev, str(path))
        _cache[key] = model
        return model
