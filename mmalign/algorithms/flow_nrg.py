"""Flow-NRG: reward guidance on the noisy latents of a rectified-flow sampler (Liu et al.,
"Improving Video Generation with Human Feedback", 2025, arXiv:2501.13918, Sec. 4.3).

At each Euler step from noise level σ to σ', the classifier-free-guided velocity ``v`` is replaced by

    ṽ = v − w · σ/(1 − σ) · ∇ₓ r(x_σ)

and the sampler steps ``x ← x + (σ' − σ)·ṽ``. Since σ' < σ, the step moves ``x`` up the reward's
gradient. ``σ/(1 − σ)`` converts the score of a reward on ``x_σ = (1 − σ)x₀ + σε`` into velocity
units; at σ = 1 (pure noise) it is infinite, so the first step of a schedule that starts there
is left unguided. CFG comes first, then the reward guidance (the authors' order).

``r = Σ_h w_h · r_h`` is a weighted sum of a reward's heads (VQ:MQ:TA on video). Two kinds of
reward drive it:

- a latent reward model (:class:`~mmalign.algorithms.latent_reward.LatentRewardModel`), which reads
  ``x_σ`` and σ directly, trained by Bradley-Terry on preference pairs noised identically, as the
  paper trains its noise-aware reward (:mod:`mmalign.algorithms.latent_reward`);
- any differentiable pixel reward, applied to the decoded one-step estimate
  ``x̂₀ = x_σ − σ·v(x_σ)``, with the gradient taken through the transformer and the VAE decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..sampling import flow
from .latent_reward import LatentRewardModel


def guided_velocity(velocity: Tensor, reward_gradient: Tensor, sigmas: Tensor, weight: float = 1.0) -> Tensor:
    """``ṽ = v − w·σ/(1 − σ)·∇r``; σ ``[B]`` (or a scalar); rows at σ = 1 come back unguided."""
    sigma = torch.as_tensor(sigmas, dtype=velocity.dtype, device=velocity.device).reshape(-1, *([1] * (velocity.dim() - 1)))
    scale = torch.where(sigma < 1, sigma / (1 - sigma).clamp_min(1e-12), torch.zeros_like(sigma))
    return velocity - weight * scale * reward_gradient


def check_head_weights(weights: dict[str, float], heads: tuple[str, ...], reward_name: str) -> dict[str, float]:
    """``weights`` with every name checked against the reward's heads."""
    if not weights:
        raise InvalidInputError(f"head_weights: give at least one head of {reward_name}: {', '.join(heads)}.")
    unknown = sorted(set(weights) - set(heads))
    if unknown:
        raise InvalidInputError(f"head_weights: {reward_name} has no head {', '.join(map(repr, unknown))}; its heads are "
                                f"{', '.join(heads)}. Fix: e.g. {{{', '.join(f'{h!r}: 1.0' for h in heads)}}}.")
    return {head: float(weight) for head, weight in weights.items()}


def weighted_heads(heads: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    return sum(weight * heads[head].float() for head, weight in weights.items())


def initial_latents(pipeline, batch_size: int, generator: torch.Generator | None, height: int, width: int,
                    num_frames: int | None = None) -> Tensor:
    """Unit Gaussian noise in the pipeline's latent layout, drawn as its ``prepare_latents`` draws it
    (Flux: unpacked, then packed), so one generator seed gives the stock pipeline's start."""
    from diffusers.utils.torch_utils import randn_tensor

    name = flow.check_flow_pipeline(pipeline, "Flow-NRG")
    config = flow.denoiser(pipeline).config
    device, dtype = pipeline._execution_device, pipeline.transformer.dtype
    if name == "WanPipeline":
        spatial, temporal = pipeline.vae_scale_factor_spatial, pipeline.vae_scale_factor_temporal
        shape = (batch_size, config.in_channels, (num_frames - 1) // temporal + 1, height // spatial, width // spatial)
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
    scale = pipeline.vae_scale_factor
    if name == "FluxPipeline":
        rows, columns, channels = 2 * (height // (scale * 2)), 2 * (width // (scale * 2)), config.in_channels // 4
        noise = randn_tensor((batch_size, channels, rows, columns), generator=generator, device=device, dtype=dtype)
        return pipeline._pack_latents(noise, batch_size, channels, rows, columns)
    shape = (batch_size, config.in_channels, height // scale, width // scale)
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def check_euler_sampler(pipeline) -> None:
    """Flow-NRG takes plain Euler steps; refuse a pipeline that samples otherwise, since its
    unguided samples would then not be the stock pipeline's."""
    scheduler = pipeline.scheduler
    if type(scheduler).__name__ != "FlowMatchEulerDiscreteScheduler" or getattr(scheduler.config, "stochastic_sampling", False):
        shift = getattr(scheduler.config, "flow_shift", None) or getattr(scheduler.config, "shift", 1.0)
        raise InvalidInputError(
            f"scheduler: Flow-NRG steps with Euler; {type(scheduler).__name__} samples otherwise. Fix: "
            f"pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift={shift:g}) (Wan's UniPC flow_shift becomes shift).")
    if getattr(pipeline, "transformer_2", None) is not None:
        raise InvalidInputError("pipeline: Flow-NRG guides one transformer; two-stage Wan 2.2 pipelines are not supported.")


def sampling_sigmas(pipeline, num_inference_steps: int, latents: Tensor) -> Tensor:
    """The σ schedule the stock pipeline samples with, ending at 0: Flux's linear σs, the others'
    own ``set_timesteps``, shifted by the token count when the scheduler shifts dynamically."""
    import copy

    import numpy as np

    scheduler = copy.deepcopy(pipeline.scheduler)
    shifting = ({"mu": flow.dynamic_shift_mu(scheduler, flow.latent_tokens(pipeline, latents))}
                if scheduler.config.use_dynamic_shifting else {})
    if flow.check_flow_pipeline(pipeline, "Flow-NRG") == "FluxPipeline":
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_inference_steps, num_inference_steps), **shifting)
    else:
        scheduler.set_timesteps(num_inference_steps, **shifting)
    return scheduler.sigmas.float().cpu()


@dataclass
class NRGOutput:
    """``samples``: pixels in [0,1], ``[B,3,H,W]`` images or ``[B,T,3,H,W]`` videos; ``latents``:
    the final latents; ``head_weights``: the weights used."""

    samples: Tensor
    latents: Tensor
    head_weights: dict


def nrg_sample(pipeline, prompt: str | list[str], reward, head_weights: dict[str, float],
               num_inference_steps: int | None = None, guidance_scale: float | None = None,
               generator: torch.Generator | None = None, height: int | None = None, width: int | None = None,
               num_frames: int | None = None, max_sequence_length: int | None = None, progress: bool = False) -> NRGOutput:
    """Sample ``prompt`` with Flow-NRG. ``reward``: a :class:`LatentRewardModel`, or a differentiable
    :class:`~mmalign.rewards.Reward` applied to the decoded one-step estimate ``x_σ − σ·v_cond``
    (the conditional velocity, before CFG); ``head_weights``: ``{head: w}`` over its heads (a reward
    without heads has one, ``"reward"``). Steps, guidance and size default to the pipeline's own.
    All weights zero gives the stock pipeline's samples for the same generator."""
    from tqdm.auto import tqdm

    name = flow.check_flow_pipeline(pipeline, "Flow-NRG")
    check_euler_sampler(pipeline)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    calls = call_defaults(pipeline)
    num_inference_steps = num_inference_steps or calls["num_inference_steps"]
    guidance_scale = calls["guidance_scale"] if guidance_scale is None else guidance_scale
    if num_inference_steps < 1:
        raise InvalidInputError(f"num_inference_steps: must be at least 1, got {num_inference_steps}.")
    latent_reward = isinstance(reward, LatentRewardModel)
    if latent_reward:
        head_weights = check_head_weights(head_weights, reward.config.heads, "the latent reward")
        if name == "FluxPipeline":
            raise InvalidInputError("reward: a latent reward reads unpacked latents; for Flux use a pixel reward.")
    else:
        check_guidance_reward(reward, name in flow.VIDEO_FAMILIES)
    cond = flow.flow_conditioning(pipeline, prompts, max_sequence_length)
    guided_cfg = guidance_scale > 1 and name != "FluxPipeline"  # Flux embeds its guidance instead
    uncond = flow.flow_conditioning(pipeline, [""] * len(prompts), max_sequence_length) if guided_cfg else None
    latents = initial_latents(pipeline, len(prompts), generator, **default_size(pipeline, height, width, num_frames))
    if not latent_reward:  # a pixel reward names its heads only when it scores: score the start once
        with torch.no_grad():
            named = reward_heads(reward(flow.decode(pipeline, latents), prompts))
        head_weights = check_head_weights(head_weights, tuple(named), reward.name)
    guiding = any(w != 0 for w in head_weights.values())
    sigmas = sampling_sigmas(pipeline, num_inference_steps, latents)
    model = flow.denoiser(pipeline)
    for step in tqdm(range(num_inference_steps), desc="Flow-NRG", unit="step", disable=not progress):
        sigma = sigmas[step].expand(len(prompts)).to(latents.device)
        guided_step = guiding and bool(sigma[0] < 1)  # σ/(1−σ) is infinite at pure noise
        x = latents.detach().requires_grad_(guided_step)
        with torch.set_grad_enabled(guided_step and not latent_reward):  # the pixel path differentiates through v
            conditional = flow.velocity(pipeline, model, x, sigma, cond, guidance=guidance_scale)
        gradient = torch.zeros_like(latents, dtype=torch.float32)
        if guided_step:
            with torch.enable_grad():
                if latent_reward:
                    parameter = next(reward.parameters())
                    heads = reward(x.to(parameter), sigma.to(parameter), cond["encoder_hidden_states"].to(parameter))
                else:
                    estimate = x - sigma.view(-1, *([1] * (x.dim() - 1))).to(x) * conditional
                    heads = reward_heads(reward(flow.decode(pipeline, estimate), prompts))
                objective = torch.nan_to_num(weighted_heads(heads, head_weights)).sum()
                gradient = torch.autograd.grad(objective, x)[0].float()
        v = conditional.detach()
        if guided_cfg:
            with torch.no_grad():
                unconditional = flow.velocity(pipeline, model, latents, sigma, uncond)
            v = unconditional + guidance_scale * (v - unconditional)
        v = guided_velocity(v, gradient, sigma)
        latents = (latents.float() + (sigmas[step + 1] - sigmas[step]) * v).to(latents.dtype)
    with torch.no_grad():
        samples = flow.decode(pipeline, latents)
    return NRGOutput(samples.float().cpu(), latents.detach().cpu(), head_weights)


def call_defaults(pipeline) -> dict:
    import inspect

    call = inspect.signature(type(pipeline).__call__).parameters
    return {key: call[key].default for key in ("num_inference_steps", "guidance_scale")}


def reward_heads(output) -> dict[str, Tensor]:
    return dict(output.heads) if output.heads else {"reward": output.reward}


def check_guidance_reward(reward, video: bool) -> None:
    spec = getattr(reward, "spec", None)
    if spec is None:
        raise InvalidInputError(f"reward: expected a LatentRewardModel or a Reward, got {type(reward).__name__}.")
    wanted = "video" if video else "image"
    if spec.modality != wanted:
        raise InvalidInputError(f"reward: {reward.name} scores {spec.modality}, but this pipeline generates {wanted}s. "
                                f"Fix: pick a {wanted} reward (`mmalign rewards` lists them).")
    if not spec.differentiable:
        raise InvalidInputError(f"reward: {reward.name} is not differentiable, so it cannot guide sampling. Fix: a "
                                "differentiable reward, or a latent reward trained with train_latent_reward.")


def default_size(pipeline, height: int | None, width: int | None, num_frames: int | None) -> dict:
    """The sample size: the arguments, else the pipeline's ``__call__`` defaults (images: its
    default sample size times the VAE's scale)."""
    import inspect

    call = inspect.signature(type(pipeline).__call__).parameters
    num_frames = flow.check_num_frames(pipeline, num_frames)  # the pipeline's default and rounding; None for images
    if num_frames is not None:
        return {"height": height or call["height"].default, "width": width or call["width"].default,
                "num_frames": num_frames}
    side = pipeline.default_sample_size * pipeline.vae_scale_factor
    return {"height": height or side, "width": width or side}
