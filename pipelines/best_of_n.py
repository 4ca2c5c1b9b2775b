"""Best-of-N as a diffusers community pipeline: N candidates per prompt, the best by any reward.

The reward needs no gradient, and the base may take any number of steps. Works on the components of
a StableDiffusion, StableDiffusionXL, PixArtAlpha, StableDiffusion3 or Flux checkpoint.

        pipe = DiffusionPipeline.from_pretrained("stabilityai/sd-turbo", custom_pipeline="path/to/best_of_n.py",
                                             trust_remote_code=True)
    image = pipe("a red dog and a green cat", rewards="laion-aesthetic", num_candidates=8,
                 num_inference_steps=1, guidance_scale=0.0).images[0]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

from mmalign.algorithms import best_of_n, pipeline_base, postprocess


@dataclass
class BestOfNPipelineOutput(BaseOutput):
    """``images``: the best candidate per prompt; ``scores``: ``[B,N]`` rewards of all candidates;
    ``best_index``: ``[B]``."""

    images: object
    scores: torch.Tensor
    best_index: torch.Tensor


class BestOfNPipeline(pipeline_base.AnyTextToImagePipeline):
    @torch.no_grad()
    def __call__(self, prompt, rewards, reward_weights=None, num_candidates: int = 4, batch_size: int = 16,
                 generator: torch.Generator | None = None, output_type: str = "pil", return_dict: bool = True, **kwargs):
        """``rewards``: Reward objects or registry names, weighted by ``reward_weights``. Candidates
        are sampled ``batch_size`` at a time; other keyword arguments (``num_inference_steps``,
        ``guidance_scale``, ``height``, ...) go to the base pipeline's ``__call__``."""
        result = best_of_n(self, prompt, rewards, num_candidates, reward_weights, generator=generator,
                           batch_size=batch_size, progress=self.shows_progress,
                           **kwargs)
        images = postprocess(result.images, output_type)
        if not return_dict:
            return (images,)
        return BestOfNPipelineOutput(images, result.scores, result.best_index)
