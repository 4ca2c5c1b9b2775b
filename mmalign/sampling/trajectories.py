"""Denoising trajectories of UNet pipelines (SD and SDXL classes) with the log-probability of each
step, for the methods that fine-tune through them (D3PO, PRDP).

A trajectory keeps every latent ``x_T … x_0``, the timesteps, and each step's log-probability under
the model that sampled it (the "old" log-probs, computed at sampling time as DDPO and D3PO do).
Training scores a stored step again with :func:`step_log_probs`, which runs the same guided
prediction and the same :func:`~mmalign.sampling.ddim.ddim_step`, so a stored sample is always
scored by exactly the step function that produced it.

Classifier-free guidance is part of the policy: the step's mean uses the guided prediction, with the
same guidance scale for the policy, the reference and the old policy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .ddim import check_eta, check_reduction, check_scheduler, ddim_step, gaussian_kl
from .pipelines import decode_latents, denoiser, family, prompt_embedding_kwargs, require_family

TRAJECTORY_FAMILIES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


@dataclass
class Trajectories:
    """``B`` sampled trajectories of ``T`` steps.

    latents: ``[B, T+1, C, H, W]``, ``x_T`` first and ``x_0`` last, fp32 on the CPU.
    timesteps, prev_timesteps: ``[T]``; step ``j`` goes from ``timesteps[j]`` to ``prev_timesteps[j]``.
    log_probs: ``[B, T]`` log-probabilities of each step under the sampling model (fp32).
    ref_log_probs: ``[B, T]`` the same steps under the reference (the adapters disabled), when asked for.
    kl: ``[B]`` Σ_t KL(sampling model ‖ reference) of each step's Gaussian, when the reference was asked for.
    conditioning: the denoiser's per-sample text conditioning, ``{name: [B, ...]}`` on the CPU.
    images: ``[B, 3, H, W]`` decoded ``x_0`` in [0, 1].
    """

    latents: Tensor
    timesteps: Tensor
    prev_timesteps: Tensor
    log_probs: Tensor
    conditioning: dict[str, Tensor]
    images: Tensor
    ref_log_probs: Tensor | None = None
    kl: Tensor | None = None


def check_trajectory_pipeline(pipeline) -> None:
    require_family(pipeline, TRAJECTORY_FAMILIES, "sampling with per-step log-probabilities (a UNet pipeline)",
                   "use an SD- or SDXL-class model; rectified-flow models (SD3, Flux) are for Flow-DPO.")
    check_scheduler(pipeline.scheduler)


def ddim_scheduler(pipeline, num_inference_steps: int):
    """A DDIMScheduler on the pipeline's own ᾱ schedule, spacing and prediction type, with its
    timesteps set. Kept apart from ``pipeline.scheduler``, whose state evaluation changes.

    The last step always ends at ``ᾱ_0`` (``set_alpha_to_one=False``, as Stable Diffusion ships its
    scheduler and DDPO/D3PO sample): with ᾱ = 1 there the last step would have no variance and so
    no log-probability. Schedulers that omit the setting (SDXL's Euler) would otherwise get True."""
    from diffusers import DDIMScheduler

    check_trajectory_pipeline(pipeline)
    scheduler = DDIMScheduler.from_config(pipeline.scheduler.config, set_alpha_to_one=False)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def previous_timesteps(scheduler) -> Tensor:
    """Where each of ``scheduler.timesteps`` steps to (``DDIMScheduler.step``'s rule); −1 is ``x_0``."""
    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return scheduler.timesteps - step


def text_conditioning(pipeline, prompts: list[str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(conditional, unconditional)`` denoiser inputs for ``prompts``: ``[B, ...]`` and ``[1, ...]``.

    The unconditional one is what the pipeline's own guidance subtracts (SDXL's zeroed embedding
    for an empty negative prompt included). SDXL's size-and-crop ids are those of an uncropped
    image at the default resolution, as its ``__call__`` uses by default."""
    embeds = prompt_embedding_kwargs(pipeline, list(prompts), guidance_scale=2.0)
    conditional = {"encoder_hidden_states": embeds["prompt_embeds"]}
    unconditional = {"encoder_hidden_states": embeds["negative_prompt_embeds"][:1]}
    if family(pipeline) == "StableDiffusionXLPipeline":
        size = pipeline.default_sample_size * pipeline.vae_scale_factor
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=embeds["prompt_embeds"].dtype,
                                device=embeds["prompt_embeds"].device)
        conditional.update(text_embeds=embeds["pooled_prompt_embeds"], time_ids=time_ids.expand(len(prompts), -1))
        unconditional.update(text_embeds=embeds["negative_pooled_prompt_embeds"][:1], time_ids=time_ids)
    return conditional, unconditional


def guided_prediction(model, latents: Tensor, timesteps: Tensor, conditioning: dict[str, Tensor],
                      unconditional: dict[str, Tensor], guidance_scale: float) -> Tensor:
    """The UNet's classifier-free-guided output ``u + g·(c − u)``, in one batched forward (as the
    stock pipelines run it); without guidance (``g ≤ 1``), the conditional output alone."""
    guided = guidance_scale > 1.0
    batch = latents.shape[0]
    if guided:
        conditioning = {key: torch.cat([unconditional[key].expand(batch, *value.shape[1:]).to(value), value])
                        for key, value in conditioning.items()}
        latents, timesteps = torch.cat([latents, latents]), torch.cat([timesteps, timesteps])
    added = {key: conditioning[key] for key in ("text_embeds", "time_ids") if key in conditioning}
    output = model(latents, timesteps, encoder_hidden_states=conditioning["encoder_hidden_states"],
                   added_cond_kwargs=added or None, return_dict=False)[0]
    if not guided:
        return output
    unconditional_output, conditional_output = output.chunk(2)
    return unconditional_output + guidance_scale * (conditional_output - unconditional_output)


@contextlib.contextmanager
def adapters_disabled(model):
    """The reference policy: the same diffusers denoiser with its LoRA adapters off, switched back on
    afterwards even on error (a no-op without adapters)."""
    model = getattr(model, "module", model)  # unwrapped from DDP
    if not getattr(model, "peft_config", None):
        yield
        return
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()


@torch.no_grad()
def sample_trajectories(pipeline, prompts: list[str], num_inference_steps: int = 20, guidance_scale: float = 5.0,
                        eta: float = 1.0, generator: torch.Generator | None = None, latents: Tensor | None = None,
                        log_prob_reduction: str = "mean", with_reference: bool = False) -> Trajectories:
    """Sample one trajectory per prompt with DDIM at ``eta`` and guidance ``guidance_scale``.

    ``latents`` are the starting ``x_T`` (unit Gaussian; pass the same tensor to two calls, or repeat
    rows, for trajectories that share their start, as D3PO's pairs do). ``with_reference`` also
    scores every step under the adapters-disabled model and records the KL between the two steps.
    """
    from .pipelines import initial_noise

    check_eta(eta)
    check_reduction(log_prob_reduction)
    model = denoiser(pipeline)
    scheduler = ddim_scheduler(pipeline, num_inference_steps)
    conditioning, unconditional = text_conditioning(pipeline, prompts)
    x = initial_noise(pipeline, len(prompts), generator=generator) if latents is None else latents.to(pipeline.device, model.dtype)
    if x.shape[0] != len(prompts):
        raise InvalidInputError(f"latents: {x.shape[0]} starting latents for {len(prompts)} prompts.")
    x = x * scheduler.init_noise_sigma
    previous = previous_timesteps(scheduler)
    path, log_probs, ref_log_probs, kl = [x.float().cpu()], [], [], []
    for t, t_prev in zip(scheduler.timesteps, previous):
        timestep = t.expand(len(prompts)).to(x.device)
        output = guided_prediction(model, scheduler.scale_model_input(x, t), timestep, conditioning, unconditional, guidance_scale)
        step = ddim_step(scheduler, output, t, t_prev, x, eta, generator=generator, reduction=log_prob_reduction)
        if with_reference:
            with adapters_disabled(model):
                reference = guided_prediction(model, scheduler.scale_model_input(x, t), timestep, conditioning,
                                              unconditional, guidance_scale)
            ref_step = ddim_step(scheduler, reference, t, t_prev, x, eta, prev_sample=step.prev_sample, reduction=log_prob_reduction)
            ref_log_probs.append(ref_step.log_prob.cpu())
            kl.append(gaussian_kl(step.mean, ref_step.mean, step.std, log_prob_reduction).cpu())
        x = step.prev_sample
        path.append(x.float().cpu())
        log_probs.append(step.log_prob.cpu())
    return Trajectories(
        latents=torch.stack(path, 1), timesteps=scheduler.timesteps.cpu(), prev_timesteps=previous.cpu(),
        log_probs=torch.stack(log_probs, 1), images=decode_latents(pipeline, x).float().cpu(),
        conditioning={key: value.cpu() for key, value in conditioning.items()},
        ref_log_probs=torch.stack(ref_log_probs, 1) if with_reference else None,
        kl=torch.stack(kl, 1).sum(1) if with_reference else None)


def step_log_probs(model, scheduler, latents: Tensor, next_latents: Tensor, timesteps: Tensor, prev_timesteps: Tensor,
                   conditioning: dict[str, Tensor], unconditional: dict[str, Tensor], guidance_scale: float,
                   eta: float, reduction: str = "mean") -> Tensor:
    """``[N]`` log-probabilities of the stored steps ``latents → next_latents`` (each at its own
    timestep) under ``model``'s guided prediction, with gradients when ``model`` has them."""
    output = guided_prediction(model, scheduler.scale_model_input(latents, timesteps[0]), timesteps, conditioning,
                               unconditional, guidance_scale)
    return ddim_step(scheduler, output, timesteps, prev_timesteps, latents, eta, prev_sample=next_latents,
                     reduction=reduction).log_prob


def encode_images(pipeline, images: Tensor) -> Tensor:
    """VAE latents (the posterior mean, scaled as the pipeline scales them) of ``[B,3,H,W]`` images
    in [0,1], resized to the pipeline's default resolution when they differ."""
    import torch.nn.functional as F

    vae = pipeline.vae
    size = (getattr(pipeline, "default_sample_size", None) or denoiser(pipeline).config.sample_size) * pipeline.vae_scale_factor
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    pixels = (images * 2 - 1).to(pipeline.device, vae.dtype)
    latents = vae.encode(pixels).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()


def posterior_trajectories(scheduler, x0: Tensor, noise_rows: Tensor, generator: torch.Generator, eta: float = 1.0) -> Tensor:
    """``[B, T+1, C, H, W]`` trajectories that end at given ``x0`` (images nobody recorded a sampling
    path for, such as preference records): ``x_T ~ q(x_T | x_0)``, then each step drawn from the DDIM
    posterior ``q_σ(x_{t'} | x_t, x_0)`` (Song et al. 2021, Eq. 7), i.e. the step the model would take
    if it predicted ``x_0`` exactly. This is Diffusion-DPO's use of the forward process in place of
    the model's own path (Wallace et al., CVPR 2024, Sec. 4).

    ``noise_rows[b]`` names the noise stream of row ``b``: rows with the same value share every noise
    draw (a preference pair's two images, as D3PO's pairs share theirs); their ``x_T`` then differ
    only by ``√ᾱ_T·(x_0 − x_0')``, which is small at the first timestep."""
    streams = int(noise_rows.max()) + 1
    previous = previous_timesteps(scheduler)
    alphas = scheduler.alphas_cumprod.float()
    x0 = x0.float()
    first = alphas[scheduler.timesteps[0]]
    shared = torch.randn(streams, *x0.shape[1:], generator=generator)[noise_rows]
    x = first.sqrt() * x0 + (1 - first).sqrt() * shared
    path = [x]
    for t, t_prev in zip(scheduler.timesteps, previous):
        alpha = alphas[t]
        epsilon = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        kind = scheduler.config.prediction_type
        output = {"epsilon": epsilon, "sample": x0, "v_prediction": alpha.sqrt() * epsilon - (1 - alpha).sqrt() * x0}[kind]
        step = ddim_step(scheduler, output, t, t_prev, x, eta, prev_sample=x)  # its mean and std; the draw is shared
        x = step.mean + step.std * torch.randn(streams, *x0.shape[1:], generator=generator)[noise_rows]
        path.append(x)
    return torch.stack(path, 1)
