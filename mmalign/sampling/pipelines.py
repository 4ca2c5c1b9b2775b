"""What mmalign needs to know of each diffusers text-to-image family, and nothing more.

Methods that optimise or rank samples call the stock pipeline itself, so every family keeps its own
conditioning (SDXL's time ids, Flux's packing, PixArt's resolution bins). Three things differ by
family: the shape of the initial noise, how ``encode_prompt`` is called and what it returns, and
which stock class a set of components belongs to.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

# denoiser class → stock pipeline class; a UNet with a second text encoder is SDXL
STOCK_PIPELINES = {
    "UNet2DConditionModel": "StableDiffusionPipeline",
    "PixArtTransformer2DModel": "PixArtAlphaPipeline",
    "SD3Transformer2DModel": "StableDiffusion3Pipeline",
    "FluxTransformer2DModel": "FluxPipeline",
    "WanTransformer3DModel": "WanPipeline",
}


def denoiser(pipeline):
    model = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    if model is None:
        raise InvalidInputError(f"pipeline: {type(pipeline).__name__} has neither a unet nor a transformer.")
    return model


def family(pipeline) -> str:
    """The stock pipeline class name a pipeline's components belong to."""
    name = type(denoiser(pipeline)).__name__
    if name not in STOCK_PIPELINES:
        raise InvalidInputError(
            f"pipeline: its denoiser is a {name}; mmalign knows {', '.join(STOCK_PIPELINES)}. "
            "Fix: pass a StableDiffusion, StableDiffusionXL, PixArtAlpha, StableDiffusion3, Flux or Wan pipeline."
        )
    if name == "UNet2DConditionModel" and getattr(pipeline, "text_encoder_2", None) is not None:
        return "StableDiffusionXLPipeline"
    return STOCK_PIPELINES[name]


def require_family(pipeline, families: tuple[str, ...], what: str, fix: str) -> str:
    """``pipeline``'s family, refused with ``fix`` unless it is one of ``families``."""
    name = family(pipeline)
    if name not in families:
        raise InvalidInputError(f"model: {what} supports {', '.join(families)} components, got {name}. Fix: {fix}")
    return name


def stock_pipeline(pipeline):
    """``pipeline`` itself when it is a stock diffusers class, else the stock pipeline of its family
    on the same components, shared, not copied. (``from_pipe`` would also cast them to fp32.)"""
    import inspect

    import diffusers

    if type(pipeline).__module__.startswith("diffusers."):
        return pipeline
    stock_class = getattr(diffusers, family(pipeline))
    accepted = inspect.signature(stock_class.__init__).parameters
    components = {name: module for name, module in pipeline.components.items() if name in accepted}
    if "requires_safety_checker" in accepted:  # a base without a checker chose so; no warning again
        components["requires_safety_checker"] = components.get("safety_checker") is not None
    stock = stock_class(**components)
    stock.set_progress_bar_config(disable=True)
    return stock


def initial_noise(pipeline, batch_size: int, generator: torch.Generator | None = None,
                  height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Unit Gaussian latents in the shape the pipeline's ``latents=`` argument takes (packed for
    Flux); the pipeline scales them by its scheduler's ``init_noise_sigma`` itself."""
    model = denoiser(pipeline)
    scale = pipeline.vae_scale_factor
    default = getattr(pipeline, "default_sample_size", None) or model.config.sample_size
    rows, columns = (height or default * scale) // scale, (width or default * scale) // scale
    if family(pipeline) == "FluxPipeline":  # 2×2 patches packed into the channel axis
        shape = (batch_size, (rows // 2) * (columns // 2), model.config.in_channels)
    else:
        shape = (batch_size, model.config.in_channels, rows, columns)
    # drawn on the generator's own device (a CPU generator cannot draw on CUDA), then moved
    source = generator.device if generator is not None else pipeline.device
    return torch.randn(shape, generator=generator, device=source, dtype=model.dtype).to(pipeline.device)


@torch.no_grad()
def prompt_embedding_kwargs(pipeline, prompts: list[str], guidance_scale: float,
                            negative_prompt: str | list[str] | None = None, max_sequence_length: int | None = None) -> dict:
    """The pipeline's text embeddings for ``prompts``, as the keyword arguments its ``__call__``
    takes in place of ``prompt``, so loops that call the pipeline many times encode text once.
    ``max_sequence_length`` is the T5 length of PixArt, SD3 and Flux (their own default if None)."""
    guided = guidance_scale > 1.0
    device = pipeline._execution_device
    name = family(pipeline)
    t5_length = {} if max_sequence_length is None else {"max_sequence_length": max_sequence_length}
    if name == "StableDiffusionPipeline":
        embeds = pipeline.encode_prompt(prompts, device, 1, guided, negative_prompt)
        keys = ("prompt_embeds", "negative_prompt_embeds")
    elif name == "StableDiffusionXLPipeline":
        embeds = pipeline.encode_prompt(prompts, device=device, do_classifier_free_guidance=guided,
                                        negative_prompt=negative_prompt)
        keys = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    elif name == "StableDiffusion3Pipeline":
        embeds = pipeline.encode_prompt(prompts, None, None, device=device, do_classifier_free_guidance=guided,
                                        negative_prompt=negative_prompt, **t5_length)
        keys = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    elif name == "PixArtAlphaPipeline":
        embeds = pipeline.encode_prompt(prompts, guided, negative_prompt=negative_prompt or "", device=device, **t5_length)
        keys = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")
    else:  # Flux: guidance is an embedded input, not a second pass
        embeds = pipeline.encode_prompt(prompts, None, device=device, **t5_length)[:2]
        keys = ("prompt_embeds", "pooled_prompt_embeds")
    return {key: value for key, value in zip(keys, embeds) if value is not None}


def differentiable_call(pipeline, **call_kwargs):
    """Call a pipeline with autograd on. Stock ``__call__`` methods are wrapped in
    ``torch.no_grad()``; ``functools.wraps`` keeps the undecorated function as ``__wrapped__``."""
    call = type(pipeline).__call__
    return getattr(call, "__wrapped__", call)(pipeline, **call_kwargs)


def postprocess(images: torch.Tensor, output_type: str = "pil"):
    """``[B,3,H,W]`` images in [0,1] as diffusers returns them: ``"pil"``, ``"np"`` or ``"pt"``."""
    from diffusers.image_processor import VaeImageProcessor

    if output_type not in ("pil", "np", "pt"):
        raise InvalidInputError(f"output_type: must be 'pil', 'np' or 'pt', got {output_type!r}.")
    if output_type == "pt":
        return images
    array = VaeImageProcessor.pt_to_numpy(images.detach().float().cpu())
    return array if output_type == "np" else VaeImageProcessor.numpy_to_pil(array)


def decode_latents(pipeline, latents: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` pixels in [0,1] from the latents a pipeline returns with ``output_type="latent"``
    (SD and SD3 families), with gradients when ``latents`` carry them."""
    vae = pipeline.vae
    latents = latents / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
    images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return (images.float() / 2 + 0.5).clamp(0, 1)
