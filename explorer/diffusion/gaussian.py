"""Gaussian diffusion maths (Ho et al. 2020; Nichol & Dhariwal 2021), one class for every variance type.

Scheduler-style, as in diffusers: each step is a function that returns named outputs and the loop is
the caller's (the recorder, the likelihood, the trainer, guidance). Tables are float64; they are cast to
the sample's dtype and device where they are used.

Indexing: a ``GaussianDiffusion`` has ``num_steps`` kept steps ``i = 0 … K−1``; ``timesteps[i]`` is the
training timestep (an index into the training T) the UNet is fed for step i. Without respacing
``timesteps[i] == i``. ``respaced(K)`` keeps K evenly spaced training steps (always the last) and
recomputes β from ᾱ of the kept steps: β'_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}} (Improved DDPM §4), so the
kept steps' ᾱ are those of training.

Variance types (what ``predict`` uses for the reverse step's Σ):
* ``fixed_small``: β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t, the posterior variance (log clipped at t = 0);
* ``fixed_large``: β_t (β̃_1 at t = 0, as Improved DDPM's code does);
* ``learned_range``: the UNet outputs 2C channels (ε, r); with v = (r + 1) / 2,
  log Σ = v · log β_t + (1 − v) · log β̃_t (Improved DDPM eq. 15; r is not clamped, so Σ may leave the
  range a little, as in the paper's code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from ..errors import UserInputError

if TYPE_CHECKING:  # pragma: no cover
    from .models import DiffusionModel

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
SCHEDULE_NAMES = ("linear", "scaled_linear", "squaredcos_cap_v2")
COSINE_OFFSET = 0.008  # s in Improved DDPM's cosine schedule
MAX_BETA = 0.999  # cosine β clipped below 1 (Improved DDPM §3.2)
LOG2 = math.log(2.0)


class Prediction(NamedTuple):
    eps: torch.Tensor  # the UNet's ε (its first C channels)
    x0: torch.Tensor  # x̂0 from ε (clipped to [−1, 1] when asked)
    mean: torch.Tensor  # μ_θ(x_t): the posterior mean q(x_{t−1} | x_t, x̂0)
    variance: torch.Tensor  # Σ_θ (broadcastable to x_t)
    log_variance: torch.Tensor


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor  # x_{t−1} (of the kept steps)
    x0: torch.Tensor
    eps: torch.Tensor
    mean: torch.Tensor
    log_variance: torch.Tensor


def beta_schedule(schedule: str, num_train_timesteps: int, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> np.ndarray:
    """β_1..β_T (float64) of a named schedule, with diffusers' names: linear, scaled_linear, squaredcos_cap_v2."""
    T = int(num_train_timesteps)
    if T < 1:
        raise UserInputError("A diffusion needs at least 1 timestep.")
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, T, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    if schedule in ("squaredcos_cap_v2", "cosine"):
        def abar(t: np.ndarray) -> np.ndarray:
            return np.cos((t / T + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        t = np.arange(T, dtype=np.float64)
        return np.minimum(1 - abar(t + 1) / abar(t), MAX_BETA)
    raise UserInputError(f"Unknown β schedule {schedule!r}: use one of {', '.join(SCHEDULE_NAMES)}.")


def kept_steps(num_steps: int, k: int) -> np.ndarray:
    """K evenly spaced indices of 0 … num_steps−1, always including the first and the last."""
    if not 1 <= k <= num_steps:
        raise UserInputError(f"Steps must be between 1 and {num_steps} (the model's timesteps), not {k}.")
    if k == 1:
        return np.array([num_steps - 1])
    keep = np.unique(np.round(np.linspace(0, num_steps - 1, k)).astype(np.int64))
    return keep


def _table(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def _at(table: torch.Tensor, i: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """table[i] shaped to broadcast against ``like`` (B×…), in its dtype and on its device."""
    if isinstance(i, torch.Tensor) and i.ndim > 0:
        values = table[i.cpu().long()]
        return values.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))
    return torch.tensor(float(table[int(i)]), dtype=like.dtype, device=like.device)


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) like x, drawn from ``generator`` on its own device (a CPU generator gives the same draws on
    every device), then moved to x's device."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32).to(x.device, x.dtype)


def _nonzero(i: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """1 where the step index is above 0 (the last reverse step adds no noise), broadcastable to ``like``."""
    if isinstance(i, torch.Tensor) and i.ndim > 0:
        return (i != 0).to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))
    return torch.tensor(float(int(i) != 0), dtype=like.dtype, device=like.device)


@dataclass(frozen=True, eq=False)
class GaussianDiffusion:
    """A Gaussian diffusion with ``num_steps`` (kept) steps; see the module docstring for the conventions."""

    betas: torch.Tensor  # float64, K
    timesteps: torch.Tensor  # int64, K: training timestep fed to the UNet at step i
    variance_type: str = "fixed_small"

    def __post_init__(self) -> None:
        if self.variance_type not in VARIANCE_TYPES:
            raise UserInputError(f"Unknown variance type {self.variance_type!r}: use one of "
                                 f"{', '.join(VARIANCE_TYPES)}.")
        if self.betas.ndim != 1 or len(self.betas) != len(self.timesteps) or len(self.betas) == 0:
            raise UserInputError("betas and timesteps must be 1-D and of the same, non-zero length.")
        if not bool(((self.betas > 0) & (self.betas <= 1)).all()):
            raise UserInputError("Every β must lie in (0, 1].")

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def from_schedule(cls, schedule: str, num_train_timesteps: int, variance_type: str = "fixed_small",
                      beta_start: float = 1e-4, beta_end: float = 0.02) -> "GaussianDiffusion":
        betas = beta_schedule(schedule, num_train_timesteps, beta_start, beta_end)
        return cls(_table(betas), torch.arange(len(betas), dtype=torch.int64), variance_type)

    @classmethod
    def from_config(cls, config: dict) -> "GaussianDiffusion":
        """From a diffusers scheduler config (DDPMScheduler/DDIMScheduler keys)."""
        T = int(config.get("num_train_timesteps", 1000))
        if config.get("trained_betas") is not None:
            betas = np.asarray(config["trained_betas"], dtype=np.float64)
        else:
            betas = beta_schedule(str(config.get("beta_schedule", "linear")), T,
                                  float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)))
        variance = str(config.get("variance_type") or "fixed_small")
        if variance == "learned":  # diffusers' "learned" (direct log Σ) is not supported: say so
            raise UserInputError("variance_type 'learned' is not supported; "
                                 "use learned_range, fixed_small or fixed_large.")
        return cls(_table(betas), torch.arange(len(betas), dtype=torch.int64), variance)

    @classmethod
    def for_model(cls, model: "DiffusionModel") -> "GaussianDiffusion":
        """The training diffusion of a loaded diffusers folder (its scheduler config)."""
        return cls.from_config(model.scheduler_config)

    def respaced(self, k: int) -> "GaussianDiffusion":
        """K evenly spaced kept steps (always including the last), β recomputed from the kept steps' ᾱ."""
        keep = kept_steps(self.num_steps, int(k))
        abar = self.alphas_cumprod[torch.as_tensor(keep)]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = (1 - abar / prev).clamp(max=1.0)
        return GaussianDiffusion(betas, self.timesteps[torch.as_tensor(keep)].clone(), self.variance_type)

    def with_variance(self, variance_type: str) -> "GaussianDiffusion":
        return GaussianDiffusion(self.betas, self.timesteps, variance_type)

    # ---- tables ------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return int(len(self.betas))

    @property
    def learned(self) -> bool:
        return self.variance_type == "learned_range"

    def output_channels(self, channels: int) -> int:
        """The UNet's output channels for images of ``channels`` channels."""
        return 2 * channels if self.learned else channels

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas, dim=0)

    @cached_property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @cached_property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_i = (1 − ᾱ_{i−1}) / (1 − ᾱ_i) · β_i (0 at i = 0)."""
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @cached_property
    def posterior_log_variance_clipped(self) -> torch.Tensor:
        """log β̃ with β̃_0 = 0 replaced by β̃_1 (a finite decoder variance at the last step)."""
        v = self.posterior_variance
        first = v[1] if len(v) > 1 else self.betas[0]
        return torch.log(torch.cat([first.view(1), v[1:]]))

    @cached_property
    def log_betas_for_large(self) -> torch.Tensor:
        """log Σ of fixed_large: β_i, with β̃_1 at i = 0 (Improved DDPM's code)."""
        v = self.posterior_variance
        first = v[1] if len(v) > 1 else self.betas[0]
        return torch.log(torch.cat([first.view(1), self.betas[1:]]))

    @cached_property
    def posterior_mean_coef1(self) -> torch.Tensor:  # × x0
        return self.betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)

    @cached_property
    def posterior_mean_coef2(self) -> torch.Tensor:  # × x_t
        return (1 - self.alphas_cumprod_prev) * (1 - self.betas).sqrt() / (1 - self.alphas_cumprod)

    def model_timestep(self, i: torch.Tensor | int, device: torch.device | None = None) -> torch.Tensor:
        """The training timestep(s) to feed the UNet at step(s) i."""
        index = i.cpu().long() if isinstance(i, torch.Tensor) else int(i)
        return self.timesteps[index].to(device) if device is not None else self.timesteps[index]

    # ---- forward process ---------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, i: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """x_i = √ᾱ_i · x0 + √(1 − ᾱ_i) · ε."""
        abar = _at(self.alphas_cumprod, i, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor,
                    i: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance (clipped) of q(x_{i−1} | x_i, x0)."""
        mean = _at(self.posterior_mean_coef1, i, x_t) * x0 + _at(self.posterior_mean_coef2, i, x_t) * x_t
        return mean, _at(self.posterior_log_variance_clipped, i, x_t)

    # ---- reverse process ---------------------------------------------------------------------------
    def split_output(self, model_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ε, r): r is the variance output of a learned_range UNet (None otherwise)."""
        if self.learned:
            if model_output.shape[1] % 2:
                raise UserInputError("A learned_range model must output 2C channels (ε and v).")
            eps, r = model_output.chunk(2, dim=1)
            return eps, r
        return model_output, None

    def x0_from_eps(self, x_t: torch.Tensor, i: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        abar = _at(self.alphas_cumprod, i, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def eps_from_x0(self, x_t: torch.Tensor, i: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        abar = _at(self.alphas_cumprod, i, x_t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    def log_variance(self, r: torch.Tensor | None, i: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """log Σ_θ at step i for this variance type (r: the learned output, in [−1, 1] nominally)."""
        if self.variance_type == "fixed_small":
            return _at(self.posterior_log_variance_clipped, i, like)
        if self.variance_type == "fixed_large":
            return _at(self.log_betas_for_large, i, like)
        if r is None:
            raise UserInputError("A learned_range diffusion needs the model's variance output.")
        low = _at(self.posterior_log_variance_clipped, i, like)
        high = _at(torch.log(self.betas), i, like)
        v = (r + 1) / 2
        return v * high + (1 - v) * low

    def predict(self, model_output: torch.Tensor, x_t: torch.Tensor, i: torch.Tensor | int,
                clip_x0: bool = True) -> Prediction:
        """ε, x̂0, the reverse mean μ_θ and variance Σ_θ from the UNet's output at step i."""
        eps, r = self.split_output(model_output)
        x0 = self.x0_from_eps(x_t, i, eps)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, x_t, i)
        log_var = self.log_variance(r, i, x_t)
        return Prediction(eps, x0, mean, log_var.exp(), log_var)

    def ancestral_step(self, model_output: torch.Tensor, x_t: torch.Tensor, i: torch.Tensor | int,
                       generator: torch.Generator | None = None, mean_shift: torch.Tensor | None = None,
                       clip_x0: bool = True) -> StepOutput:
        """x_{i−1} ~ N(μ_θ + mean_shift, Σ_θ) (no noise at i = 0). ``mean_shift`` is added as given, e.g.
        s · Σ · ∇ log p(y | x_t) for classifier guidance."""
        pred = self.predict(model_output, x_t, i, clip_x0)
        mean = pred.mean if mean_shift is None else pred.mean + mean_shift
        noise = _noise_like(x_t, generator)
        prev = mean + _nonzero(i, x_t) * (0.5 * pred.log_variance).exp() * noise
        return StepOutput(prev, pred.x0, pred.eps, mean, pred.log_variance)

    def ddim_step(self, model_output: torch.Tensor, x_t: torch.Tensor, i: torch.Tensor | int, eta: float = 0.0,
                  generator: torch.Generator | None = None, eps_override: torch.Tensor | None = None,
                  clip_x0: bool = True) -> StepOutput:
        """DDIM (Song et al. 2021, eq. 12) from step i to step i−1 of the kept steps (ᾱ = 1 after the last).

        ε is recomputed from the clipped x̂0, as Improved DDPM's code does, so the step stays consistent
        with the x̂0 it reports. ``eps_override`` replaces the UNet's ε first (e.g. a guided ε)."""
        eps, _ = self.split_output(model_output)
        if eps_override is not None:
            eps = eps_override
        x0 = self.x0_from_eps(x_t, i, eps)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = self.eps_from_x0(x_t, i, x0)
        abar = _at(self.alphas_cumprod, i, x_t)
        abar_prev = _at(self.alphas_cumprod_prev, i, x_t)
        sigma = eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()
        mean = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        prev = mean
        if eta > 0:
            prev = mean + _nonzero(i, x_t) * sigma * _noise_like(x_t, generator)
        log_var = torch.log((sigma**2).clamp(min=1e-30)) * torch.ones_like(abar)
        return StepOutput(prev, x0, eps, mean, log_var)

    # ---- the variational bound (in bits per dimension) ---------------------------------------------
    def prior_bits(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x0) ‖ N(0, I)) per image, in bits per dimension."""
        x = x0.double()
        abar = float(self.alphas_cumprod[-1])
        mean, log_var = math.sqrt(abar) * x, math.log(1 - abar)
        kl = normal_kl(mean, torch.tensor(log_var, dtype=torch.float64), torch.zeros_like(x),
                       torch.zeros((), dtype=torch.float64))
        return kl.flatten(1).mean(1) / LOG2

    def vlb_bits(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, i: torch.Tensor | int,
                 clip_x0: bool = True, detach_mean: bool = False) -> torch.Tensor:
        """The bound's term at step i per image, in bits/dim: KL(q(x_{i−1} | x_i, x0) ‖ p_θ(x_{i−1} | x_i))
        for i > 0, the discretised-Gaussian decoder's −log p_θ(x0 | x_i) at i = 0 (x0 on 256 levels in
        [−1, 1]). ``detach_mean``: no gradient through ε (Improved DDPM's hybrid loss: L_vlb trains Σ only)."""
        if detach_mean:
            eps, r = self.split_output(model_output)
            model_output = torch.cat([eps.detach(), r], 1) if r is not None else eps.detach()
        pred = self.predict(model_output, x_t, i, clip_x0)
        true_mean, true_log_var = self.q_posterior(x0, x_t, i)
        kl = normal_kl(true_mean.double(), true_log_var.double(), pred.mean.double(), pred.log_variance.double())
        kl = kl.flatten(1).mean(1) / LOG2
        decoder = -discretized_gaussian_log_likelihood(x0.double(), pred.mean.double(), pred.log_variance.double())
        decoder = decoder.flatten(1).mean(1) / LOG2
        return torch.where(_nonzero(i, kl) > 0, kl, decoder)

    def training_losses(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor,
                        i: torch.Tensor, vlb_weight: float = 0.001) -> dict[str, torch.Tensor]:
        """Per-image losses: ``mse`` (L_simple, ε-MSE), ``vlb`` (L_t in bits/dim, mean frozen) and ``loss``
        = mse + λ · T · vlb (λ · L_vlb with L_vlb = T · E_t[L_t]: Improved DDPM's hybrid objective; the
        ``vlb`` term is only present for learned variances)."""
        eps, r = self.split_output(model_output)
        mse = (eps.float() - noise.float()).pow(2).flatten(1).mean(1)
        out = {"mse": mse, "loss": mse}
        if r is not None:
            vlb = self.vlb_bits(model_output, x0, x_t, i, clip_x0=False, detach_mean=True).float()
            out["vlb"] = vlb
            out["loss"] = mse + vlb_weight * self.num_steps * vlb
        return out


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^log_var1) ‖ N(mean2, e^log_var2)) element-wise, in nats."""
    return 0.5 * (log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2) - 1)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 − e^d) for d ≤ 0 (floored at 1e−300 so equal masses give a large finite penalty, not −inf)."""
    return torch.log((-torch.expm1(d.clamp(max=0))).clamp(min=1e-300))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor,
                                        bins: int = 256) -> torch.Tensor:
    """log P(x) element-wise (nats) for x on ``bins`` levels in [−1, 1] under N(mean, e^log_var) integrated
    over each level's bin (width 2/(bins−1)); the outermost bins reach to ±∞ (Ho et al. 2020, eq. 13)."""
    half = 1.0 / (bins - 1)
    inv_std = torch.exp(-0.5 * log_var)
    upper = inv_std * (x - mean + half)
    lower = inv_std * (x - mean - half)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    # log(Φ(u) − Φ(l)) computed stably on the side of the mean where the masses are not both ~1
    mid = torch.where(
        lower > 0,
        log_sf_lower + _log1mexp(torch.special.log_ndtr(-upper) - log_sf_lower),
        log_cdf_upper + _log1mexp(torch.special.log_ndtr(lower) - log_cdf_upper),
    )
    edge = 1 - half / 2
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, mid))
