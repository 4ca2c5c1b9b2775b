"""What the flow methods (Flow-DPO, Flow-RWR, Flow-NRG) need of each rectified-flow family.

Every family writes a noisy sample as ``x_σ = (1 − σ)·x₀ + σ·ε`` (σ = 1 is pure noise) and its
transformer predicts the velocity ``v = ε − x₀`` (Liu et al. 2022; Esser et al. 2024). They differ
in the forward's argument names, in the latent layout and in how latents map to pixels:

- SD3 (``SD3Transformer2DModel``): ``[B,C,h,w]`` latents, timestep ``1000σ``, pooled text;
- Flux (``FluxTransformer2DModel``): 2×2 patches packed into ``[B, hw/4, 4C]``, timestep ``σ``,
  pooled text, position ids, and the distilled guidance as an input;
- Wan (``WanTransformer3DModel``): ``[B,C,F,h,w]`` video latents, timestep ``1000σ``, normalised
  per channel with the VAE's ``latents_mean``/``latents_std``.

Latents here are always in the layout the pipeline's ``latents=`` argument takes and its
``output_type="latent"`` returns, so a sample drawn by the stock pipeline trains as it is.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .pipelines import decode_latents, denoiser, family, prompt_embedding_kwargs, require_family

FLOW_FAMILIES = ("StableDiffusion3Pipeline", "FluxPipeline", "WanPipeline")
VIDEO_FAMILIES = ("WanPipeline",)


def check_flow_pipeline(pipeline, what: str) -> str:
    """The pipeline's family, refused unless it is a rectified-flow family with a flow scheduler."""
    name = require_family(pipeline, FLOW_FAMILIES, what, "pass an SD3-, Flux- or Wan-class pipeline "
                          "(rectified flow); SD-class models train with RAFT, D3PO or PRDP.")
    scheduler = pipeline.scheduler
    config = scheduler.config
    flow = type(scheduler).__name__.startswith("FlowMatch") or getattr(config, "use_flow_sigmas", False)
    if not flow:
        raise InvalidInputError(
            f"scheduler: {what} needs a rectified-flow scheduler, got {type(scheduler).__name__}. Fix: "
            "pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config).")
    return name


def is_video(pipeline) -> bool:
    return check_flow_pipeline(pipeline, "this") in VIDEO_FAMILIES


def wan_num_frames(pipeline, num_frames: int | None) -> int:
    """The length WanPipeline actually makes of ``num_frames``: its ``__call__`` default when
    ``None``, and rounded as it rounds a length that is not 1 + a multiple of the VAE's temporal
    scale (down to one, plus one)."""
    import inspect

    if num_frames is None:
        num_frames = inspect.signature(type(pipeline).__call__).parameters["num_frames"].default
    scale = pipeline.vae_scale_factor_temporal
    return num_frames if num_frames % scale == 1 else num_frames // scale * scale + 1


def check_num_frames(pipeline, num_frames: int | None, argument: str = "num_frames") -> int | None:
    """``num_frames`` as WanPipeline will make it (:func:`wan_num_frames`), or ``None`` for an image
    pipeline of any family (SD-class too), which refuses any. Refused when the transformer cannot
    patch it: a transformer with temporal patches of ``p`` latent frames needs a multiple of ``p``
    of them (else the stock pipeline fails deep in the scheduler with a shape mismatch)."""
    if family(pipeline) not in VIDEO_FAMILIES:
        if num_frames is not None:
            raise InvalidInputError(f"{argument}: this pipeline generates images; leave {argument} unset.")
        return None
    if num_frames is not None and num_frames < 1:
        raise InvalidInputError(f"{argument}: must be at least 1, got {num_frames}.")
    frames = wan_num_frames(pipeline, num_frames)
    patch = denoiser(pipeline).config.patch_size
    temporal_patch = patch[0] if isinstance(patch, (tuple, list)) else 1
    scale = pipeline.vae_scale_factor_temporal
    latent_frames = (frames - 1) // scale + 1
    if latent_frames % temporal_patch:
        fits = [scale * (temporal_patch * k - 1) + 1 for k in (1, 2, 3)]
        given = (f"{frames} frames (the pipeline's default)" if num_frames is None else f"{num_frames} frames"
                 + (f" (WanPipeline rounds them to {frames})" if frames != num_frames else ""))
        raise InvalidInputError(
            f"{argument}: {given} make {latent_frames} latent frames, and this model's transformer "
            f"takes them {temporal_patch} at a time. Fix: {fits[0]}, {fits[1]} or {fits[2]} frames "
            f"(any 1 + {scale}·({temporal_patch}k − 1)).")
    return frames


@torch.no_grad()
def flow_conditioning(pipeline, prompts: list[str], max_sequence_length: int | None = None) -> dict[str, Tensor]:
    """Per-sample text inputs of the transformer for ``prompts`` (no guidance): ``{name: [B, ...]}``.
    ``max_sequence_length`` defaults to the pipeline ``__call__``'s, since the padding it adds is
    part of the context the transformer attends to (Wan's ``encode_prompt`` pads to 226, its
    ``__call__`` to 512)."""
    import inspect

    if max_sequence_length is None:
        max_sequence_length = inspect.signature(type(pipeline).__call__).parameters["max_sequence_length"].default
    if is_video(pipeline):
        embeds = pipeline.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length)
        return {"encoder_hidden_states": embeds[0]}
    embeds = prompt_embedding_kwargs(pipeline, prompts, guidance_scale=0.0, max_sequence_length=max_sequence_length)
    return {"encoder_hidden_states": embeds["prompt_embeds"], "pooled_projections": embeds["pooled_prompt_embeds"]}


def velocity(pipeline, model, latents: Tensor, sigmas: Tensor, conditioning: dict[str, Tensor],
             guidance: float = 3.5) -> Tensor:
    """The velocity ``model`` (the pipeline's transformer, possibly wrapped for DDP or disabled-LoRA)
    predicts at ``latents`` and noise levels ``sigmas`` ``[B]``. ``guidance`` is Flux-dev's embedded
    guidance, used only by transformers that embed it."""
    name = check_flow_pipeline(pipeline, "velocity prediction")
    dtype = denoiser(pipeline).dtype  # as the pipelines cast: inputs to the transformer's dtype
    conditioning = {key: value.to(dtype) for key, value in conditioning.items()}
    sigmas = sigmas.to(latents.device)
    kwargs = dict(hidden_states=latents.to(dtype), encoder_hidden_states=conditioning["encoder_hidden_states"],
                  return_dict=False)
    if name == "FluxPipeline":
        side = flux_side(latents)
        kwargs.update(timestep=sigmas.to(dtype), pooled_projections=conditioning["pooled_projections"],
                      img_ids=pipeline._prepare_latent_image_ids(latents.shape[0], side, side, latents.device, dtype),
                      txt_ids=torch.zeros(conditioning["encoder_hidden_states"].shape[1], 3, device=latents.device, dtype=dtype))
        if denoiser(pipeline).config.guidance_embeds:
            kwargs["guidance"] = torch.full((latents.shape[0],), guidance, device=latents.device, dtype=torch.float32)
    else:
        kwargs["timestep"] = sigmas * 1000
        if name == "StableDiffusion3Pipeline":
            kwargs["pooled_projections"] = conditioning["pooled_projections"]
    return model(**kwargs)[0].float()


def flux_side(latents: Tensor) -> int:
    """The side, in 2×2 patches, of packed Flux latents ``[B, hw/4, 4C]``; mmalign's flow methods
    take square Flux images only, since the packed layout no longer holds the aspect ratio."""
    side = math.isqrt(latents.shape[1])
    if side * side != latents.shape[1]:
        raise InvalidInputError(f"height, width: Flux latents of {latents.shape[1]} packed tokens are not square; "
                                "mmalign's flow methods take square Flux images. Fix: height == width.")
    return side


def latent_tokens(pipeline, latents: Tensor) -> int:
    """How many tokens the transformer makes of one latent: what a dynamically shifted scheduler's
    μ is interpolated from (``image_seq_len`` in the pipelines)."""
    if check_flow_pipeline(pipeline, "training") == "FluxPipeline":
        return latents.shape[1]
    patch = denoiser(pipeline).config.patch_size
    patch = patch if isinstance(patch, (tuple, list)) else (1, patch, patch)
    cells = latents.shape[2:] if latents.dim() == 5 else (1, *latents.shape[2:])
    return math.prod(n // p for n, p in zip(cells, patch))


def noised(x0: Tensor, noise: Tensor, sigmas: Tensor) -> Tensor:
    """``x_σ = (1 − σ)·x₀ + σ·ε``, with ``sigmas`` ``[B]`` broadcast over the rest."""
    sigma = sigmas.view(-1, *([1] * (x0.dim() - 1))).to(x0)
    return (1 - sigma) * x0 + sigma * noise


def decode(pipeline, latents: Tensor) -> Tensor:
    """Pixels in [0,1] of pipeline-layout latents: ``[B,3,H,W]`` images or ``[B,T,3,H,W]`` videos,
    with gradients when ``latents`` carry them."""
    name = check_flow_pipeline(pipeline, "decoding")
    vae = pipeline.vae
    if name == "WanPipeline":
        mean, std = (torch.tensor(getattr(vae.config, key), device=latents.device).view(1, -1, 1, 1, 1)
                     for key in ("latents_mean", "latents_std"))
        frames = vae.decode((latents * std + mean).to(vae.dtype), return_dict=False)[0]
        return (frames.float() / 2 + 0.5).clamp(0, 1).transpose(1, 2)
    if name == "FluxPipeline":
        side = flux_side(latents) * 2 * pipeline.vae_scale_factor
        latents = pipeline._unpack_latents(latents, side, side, pipeline.vae_scale_factor)
    return decode_latents(pipeline, latents)


@torch.no_grad()
def encode(pipeline, pixels: Tensor) -> Tensor:
    """Pipeline-layout latents (the posterior mean) of pixels in [0,1]: ``[B,3,H,W]`` images for an
    image family, ``[B,T,3,H,W]`` videos for a video family, at a size the VAE takes."""
    name = check_flow_pipeline(pipeline, "encoding")
    video = name in VIDEO_FAMILIES
    if pixels.dim() != (5 if video else 4):
        kind, shape = ("videos", "[B,T,3,H,W]") if video else ("images", "[B,3,H,W]")
        raise InvalidInputError(f"samples: {name} takes {kind} {shape}; got a tensor of shape {tuple(pixels.shape)}.")
    vae = pipeline.vae
    if video:
        latents = vae.encode((pixels.transpose(1, 2) * 2 - 1).to(pipeline.device, vae.dtype)).latent_dist.mean
        mean, std = (torch.tensor(getattr(vae.config, key), device=latents.device).view(1, -1, 1, 1, 1)
                     for key in ("latents_mean", "latents_std"))
        return ((latents.float() - mean) / std).float()
    latents = vae.encode((pixels * 2 - 1).to(pipeline.device, vae.dtype)).latent_dist.mean
    latents = ((latents - (getattr(vae.config, "shift_factor", None) or 0.0)) * vae.config.scaling_factor).float()
    if name == "FluxPipeline":
        latents = pipeline._pack_latents(latents, *latents.shape)
    return latents


def shift_sigmas(scheduler, sigmas: Tensor, image_seq_len: int | None = None) -> Tensor:
    """Map σ through the scheduler's shift, as it shifts its own sampling σs: SD3's static
    ``shift·σ / (1 + (shift − 1)·σ)``, or Flux's resolution-dependent ``e^μ / (e^μ + 1/σ − 1)``
    with μ interpolated from the token count (``use_dynamic_shifting``)."""
    config = scheduler.config
    if getattr(config, "use_dynamic_shifting", False):
        mu = dynamic_shift_mu(scheduler, image_seq_len)
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    shift = getattr(config, "shift", None) or getattr(config, "flow_shift", None) or 1.0
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def dynamic_shift_mu(scheduler, image_seq_len: int | None) -> float:
    """Flux's μ: linear in the latent token count between the scheduler's base and max shifts."""
    if image_seq_len is None:
        raise InvalidInputError("image_seq_len: a dynamically shifted scheduler needs the latent token count.")
    config = scheduler.config
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return config.base_shift + slope * (image_seq_len - config.base_image_seq_len)


def logit_normal_sigmas(scheduler, batch_size: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0,
                        image_seq_len: int | None = None) -> Tensor:
    """Training noise levels: ``σ = sigmoid(u)``, ``u ~ N(mean, std²)`` (SD3's logit-normal sampling,
    Esser et al. 2024, Sec. 3.1), then shifted as the scheduler shifts (:func:`shift_sigmas`)."""
    sigmas = torch.sigmoid(mean + std * torch.randn(batch_size, generator=generator))
    return shift_sigmas(scheduler, sigmas, image_seq_len)
