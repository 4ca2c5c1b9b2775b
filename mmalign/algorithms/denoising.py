"""The denoising loss a diffusion model was trained with, for fine-tuning it on chosen samples.

Every supported scheduler writes a noisy latent as ``x_t = α_t·x_0 + σ_t·ε``:

- DDPM-family schedulers (DDPM, DDIM, Euler, …): ``α_t = √ᾱ_t``, ``σ_t = √(1−ᾱ_t)``; the model
  predicts ε, ``v = α_t·ε − σ_t·x_0`` (Salimans & Ho 2022) or ``x_0``, per ``prediction_type``;
- rectified flow (``FlowMatchEulerDiscreteScheduler``): ``α_t = 1−σ``, ``σ_t = σ = t/1000``;
  the model predicts the velocity ``ε − x_0`` (Liu et al. 2022; Esser et al. 2024, SD3).

The loss is the MSE between prediction and target, averaged over latent dimensions, in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError
from ..sampling.pipelines import prompt_embedding_kwargs, require_family

SUPPORTED_FAMILIES = ("StableDiffusionPipeline", "StableDiffusion3Pipeline")


def check_supported(pipeline) -> str:
    return require_family(pipeline, SUPPORTED_FAMILIES, "fine-tuning with the denoising loss",
                          "pass an SD-class (UNet) or SD3-class (rectified-flow transformer) pipeline.")


def is_flow(scheduler) -> bool:
    return not hasattr(scheduler, "alphas_cumprod")


def noise_coefficients(scheduler, timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """``(α_t, σ_t)`` of ``x_t = α_t·x_0 + σ_t·ε`` for each timestep, shaped ``[B,1,1,1]``."""
    if is_flow(scheduler):
        sigma = timesteps.float() / scheduler.config.num_train_timesteps
        alpha = 1 - sigma
    else:
        alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()]
        alpha, sigma = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    return alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)


def prediction_target(scheduler, x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    if is_flow(scheduler):
        return noise - x0
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return alpha * noise - sigma * x0
    if kind == "sample":
        return x0
    raise InvalidInputError(f"scheduler: prediction_type {kind!r} is not epsilon, v_prediction or sample.")


def uniform_timesteps(scheduler, batch_size: int, generator: torch.Generator) -> Tensor:
    """Training timesteps: uniform over the DDPM schedule; for flows, σ uniform then shifted as the
    scheduler shifts its sampling σs (SD3: ``shift·σ / (1 + (shift−1)·σ)``)."""
    total = scheduler.config.num_train_timesteps
    if not is_flow(scheduler):
        return torch.randint(0, total, (batch_size,), generator=generator)
    sigma = torch.rand(batch_size, generator=generator).clamp(1e-3, 1.0)
    shift = getattr(scheduler.config, "shift", 1.0)
    return shift * sigma / (1 + (shift - 1) * sigma) * total


def denoiser_conditioning(pipeline, prompts: list[str]) -> dict[str, Tensor]:
    """Text conditioning of the denoiser's forward for ``prompts``, without classifier-free guidance."""
    name = check_supported(pipeline)
    embeds = prompt_embedding_kwargs(pipeline, prompts, guidance_scale=0.0)
    conditioning = {"encoder_hidden_states": embeds["prompt_embeds"]}
    if name == "StableDiffusion3Pipeline":
        conditioning["pooled_projections"] = embeds["pooled_prompt_embeds"]
    return conditioning


def predict(model, latents: Tensor, timesteps: Tensor, conditioning: dict[str, Tensor]) -> Tensor:
    """One forward of a UNet or SD3-class transformer (possibly wrapped for DDP); the two name their
    inputs differently, so they are passed by the name each uses."""
    if "pooled_projections" in conditioning:
        return model(hidden_states=latents, timestep=timesteps, **conditioning, return_dict=False)[0]
    return model(latents, timesteps, **conditioning, return_dict=False)[0]


def denoising_loss(model, scheduler, x0: Tensor, noise: Tensor, timesteps: Tensor, conditioning: dict[str, Tensor]) -> Tensor:
    """Mean over the batch of the per-sample MSE between the model's prediction at
    ``x_t = α_t·x_0 + σ_t·ε`` and its target, in fp32."""
    alpha, sigma = noise_coefficients(scheduler, timesteps)
    noisy = alpha * x0 + sigma * noise
    dtype = next(iter(conditioning.values())).dtype
    prediction = predict(model, noisy.to(dtype), timesteps.to(x0.device), conditioning)
    target = prediction_target(scheduler, x0, noise, alpha, sigma)
    return F.mse_loss(prediction.float(), target.float())

