"""ReNO as a diffusers community pipeline: reward-based noise optimisation for one-step models.

Eyring et al., "ReNO: Enhancing One-step Text-to-Image Models through Reward-based Noise
Optimization", NeurIPS 2024. Works on the components of a StableDiffusion (SD-Turbo),
StableDiffusionXL (SDXL-Turbo), PixArtAlpha (PixArt-α DMD), StableDiffusion3 or Flux (FLUX-schnell)
checkpoint. Rewards are call arguments, so the saved pipeline holds only the base's components.

        pipe = DiffusionPipeline.from_pretrained("stabilityai/sd-turbo", custom_pipeline="path/to/reno.py",
                                             trust_remote_code=True)
    image = pipe("a red dog and a green cat", rewards=["clip:ViT-H-14/laion2b_s32b_b79k", "laion-aesthetic"],
                 reward_weights=[1.0, 0.05], generator=torch.Generator().manual_seed(0)).images[0]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers.utils import BaseOutput

from mmalign.algorithms import ReNOConfig, pipeline_base, postprocess, reno


@dataclass
class ReNOPipelineOutput(BaseOutput):
    """``images``: the best iterates; ``base_images``: the same noise before optimisation;
    ``rewards`` and ``base_rewards``: each reward head, per image; ``history``: every iteration."""

    images: object
    base_images: object
    rewards: dict
    base_rewards: dict
    history: list


class ReNOPipeline(pipeline_base.AnyTextToImagePipeline):
    def __call__(self, prompt, rewards, reward_weights=None, num_inference_steps: int = 1, guidance_scale: float = 0.0,
                 negative_prompt=None, height: int | None = None, width: int | None = None,
                 generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True, iterations: int | None = None,
                 reno_config: ReNOConfig | None = None, **kwargs):
        """``rewards``: Reward objects or registry names (differentiable), weighted by
        ``reward_weights``. ``iterations`` replaces ``reno_config.iterations`` (default 50).
        ``latents``: the initial noise, one per prompt, unit Gaussian. Other keyword arguments go to
        the base pipeline's ``__call__``."""
        config = reno_config or ReNOConfig()
        if iterations is not None:
            config = replace(config, iterations=iterations)
        result = reno(self, prompt, rewards, reward_weights, config, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, negative_prompt=negative_prompt, generator=generator,
                      latents=latents, height=height, width=width, progress=self.shows_progress,
                      **kwargs)
        images, base_images = postprocess(result.images, output_type), postprocess(result.base_images, output_type)
        if not return_dict:
            return (images,)
        return ReNOPipelineOutput(images, base_images, result.rewards_at(result.best_iteration),
                                  result.rewards_at(0), result.history)
