"""One DDIM step as a Gaussian policy, with the log-probability of the sample it took.

DDIM (Song et al., ICLR 2021, Eq. 12) steps from ``x_t`` to ``x_{t'}`` (``t' < t``) by sampling

    x_{t'} ~ N(μ_t, σ_t²),  μ_t = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'} − σ_t²)·ε̂,
    σ_t = η·√((1 − ᾱ_{t'}) / (1 − ᾱ_t))·√(1 − ᾱ_t / ᾱ_{t'}),

where ``x̂_0`` and ``ε̂`` come from the model's prediction (ε, v or x_0). With η > 0 each step is a
Gaussian policy over the next latent, whose log-density is what D3PO and PRDP (and DDPO before
them, ``ddim_with_logprob``) differentiate. η = 0 is deterministic: no density, so it is refused.

The mean is diffusers' ``DDIMScheduler.step`` (tests check it against that), computed here so that
every quantity is in fp32 and the previous timestep is explicit rather than read from the
scheduler's state, which sampling for evaluation changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError

REDUCTIONS = ("mean", "sum")


@dataclass
class DDIMStep:
    """One step: the next latent, the Gaussian it was drawn from, and its log-density ``[B]``."""

    prev_sample: Tensor
    mean: Tensor
    std: Tensor
    log_prob: Tensor


def check_eta(eta: float) -> None:
    if not eta > 0:
        raise InvalidInputError(
            f"eta: must be > 0 for per-step log-probabilities, got {eta}. With eta=0 a DDIM step is deterministic "
            "and has no density. Fix: use eta=1.0 (DDPM-like, as D3PO and DDPO sample)."
        )


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise InvalidInputError(f"log_prob_reduction: must be one of {REDUCTIONS}, got {reduction!r}.")


def check_scheduler(scheduler) -> None:
    """Refuse schedulers whose step is not a DDPM-family Gaussian (rectified flows have no ᾱ)."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise InvalidInputError(
            f"scheduler: {type(scheduler).__name__} has no ᾱ schedule, so a DDIM step has no log-probability on it "
            "(rectified-flow models need a flow SDE). Fix: use an ε/v-prediction model (SD, SDXL) with a DDPM-family "
            "scheduler (DDIM, DDPM, Euler, ...); mmalign samples it with DDIM."
        )
    if getattr(scheduler.config, "thresholding", False):
        raise InvalidInputError("scheduler: dynamic thresholding is not supported by the log-probability step. "
                                "Fix: load the scheduler with thresholding=False.")


def gaussian_log_prob(sample: Tensor, mean: Tensor, std: Tensor, reduction: str = "mean") -> Tensor:
    """``log N(sample; mean, std²)`` per element, reduced over every dimension but the first."""
    sample, mean, std = sample.float(), mean.float(), std.float()
    log_density = -((sample - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    dims = tuple(range(1, sample.ndim))
    return log_density.mean(dims) if reduction == "mean" else log_density.sum(dims)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.float().view(-1, *([1] * (like.ndim - 1)))


def ddim_step(scheduler, model_output: Tensor, timestep: Tensor | int, prev_timestep: Tensor | int, sample: Tensor,
              eta: float = 1.0, prev_sample: Tensor | None = None, generator: torch.Generator | None = None,
              reduction: str = "mean") -> DDIMStep:
    """Step ``sample`` (``x_t``) to ``x_{t'}`` given the model's (guided) output.

    ``timestep`` and ``prev_timestep`` are ints or ``[B]`` tensors (a batch may mix steps, as training
    on shuffled steps does); ``prev_timestep < 0`` means the final step to ``x_0``, with the
    scheduler's ``final_alpha_cumprod``. Pass ``prev_sample`` to score a stored step instead of
    drawing one; the log-density is then that of ``prev_sample`` under the current model.
    """
    check_eta(eta)
    batch = sample.shape[0]
    alphas = scheduler.alphas_cumprod.to(sample.device, torch.float32)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32, device=sample.device)
    t = torch.as_tensor(timestep, device=sample.device).long().expand(batch)
    t_prev = torch.as_tensor(prev_timestep, device=sample.device).long().expand(batch)
    alpha_t = _per_sample(alphas[t], sample)
    alpha_prev = _per_sample(torch.where(t_prev >= 0, alphas[t_prev.clamp(min=0)], final), sample)
    beta_t = 1 - alpha_t
    x_t, output = sample.float(), model_output.float()

    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0, epsilon = (x_t - beta_t.sqrt() * output) / alpha_t.sqrt(), output
    elif kind == "v_prediction":
        x0, epsilon = alpha_t.sqrt() * x_t - beta_t.sqrt() * output, alpha_t.sqrt() * output + beta_t.sqrt() * x_t
    elif kind == "sample":
        x0, epsilon = output, (x_t - alpha_t.sqrt() * output) / beta_t.sqrt()
    else:
        raise InvalidInputError(f"scheduler: prediction_type {kind!r} is not epsilon, v_prediction or sample.")
    if getattr(scheduler.config, "clip_sample", False):
        limit = scheduler.config.clip_sample_range
        x0 = x0.clamp(-limit, limit)

    variance = (1 - alpha_prev) / beta_t * (1 - alpha_t / alpha_prev)
    std = eta * variance.clamp(min=0).sqrt()
    if not bool((std > 0).all()):
        raise InvalidInputError(
            "scheduler: a step has zero variance (ᾱ of the final step is 1: set_alpha_to_one=True), so it has no "
            "log-probability. Fix: load the scheduler with set_alpha_to_one=False, as Stable Diffusion ships it."
        )
    mean = alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).clamp(min=0).sqrt() * epsilon
    if prev_sample is None:
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
        prev_sample = mean + std * noise
    log_prob = gaussian_log_prob(prev_sample.detach(), mean, std, reduction)
    return DDIMStep(prev_sample.to(sample.dtype), mean, std, log_prob)


def gaussian_kl(mean_p: Tensor, mean_q: Tensor, std: Tensor, reduction: str = "mean") -> Tensor:
    """``KL(N(mean_p, std²) ‖ N(mean_q, std²))`` per sample: ``‖mean_p − mean_q‖² / 2std²``, reduced
    over dimensions as the log-probabilities are."""
    per_element = (mean_p.float() - mean_q.float()) ** 2 / (2 * std.float() ** 2)
    dims = tuple(range(1, per_element.ndim))
    return per_element.mean(dims) if reduction == "mean" else per_element.sum(dims)
