"""Flow-NRG as a diffusers community pipeline: reward guidance on the noisy latents of a
rectified-flow model, with a weight per reward head (Liu et al., "Improving Video Generation with
Human Feedback", 2025). Works on the components of a StableDiffusion3, Flux or Wan checkpoint.

    pipe = DiffusionPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", custom_pipeline="path/to/flow_nrg.py",
                                             trust_remote_code=True)
    frames = pipe("a red circle moving left", reward="videoreward", head_weights={"VQ": 0.1, "MQ": 0.1, "TA": 0.8},
                  generator=torch.Generator().manual_seed(0)).frames[0]

``reward`` is a differentiable reward (a name or object, applied to the decoded one-step estimate)
or a ``LatentRewardModel`` (mmalign.algorithms.flow_nrg), which reads the noisy latents directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput

from mmalign.algorithms import flow_nrg, pipeline_base, postprocess
from mmalign.rewards import load_reward


@dataclass
class FlowNRGPipelineOutput(BaseOutput):
    """``images`` (image models) or ``frames`` (video models, ``[B,T,3,H,W]`` tensors or arrays);
    ``head_weights``: the weights used."""

    images: object = None
    frames: object = None
    head_weights: dict | None = None


class FlowNRGPipeline(pipeline_base.AnyTextToImagePipeline):
    def __call__(self, prompt, reward, head_weights: dict, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, height: int | None = None, width: int | None = None,
                 num_frames: int | None = None, generator: torch.Generator | None = None,
                 max_sequence_length: int | None = None, output_type: str | None = None, return_dict: bool = True):
        """``head_weights``: ``{head: w}`` over the reward's heads (VQ/MQ/TA for video rewards; a
        reward without heads has one, ``"reward"``). Steps, guidance and size default to the base
        pipeline's own. ``output_type``: images ``"pil"`` (default), ``"np"`` or ``"pt"``; frames
        ``"np"`` (default, ``[B,T,H,W,3]`` as WanPipeline returns them) or ``"pt"`` (``[B,T,3,H,W]``)."""
        from mmalign.sampling.pipelines import stock_pipeline

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if isinstance(reward, str):
            reward = load_reward(reward, device=self.device)
        result = flow_nrg.nrg_sample(stock_pipeline(self), prompts, reward, head_weights, num_inference_steps,
                                     guidance_scale, generator, height, width, num_frames, max_sequence_length,
                                     progress=self.shows_progress)
        if result.samples.dim() == 5:
            if output_type not in (None, "np", "pt"):
                raise ValueError(f"output_type: frames come back as 'np' or 'pt', got {output_type!r}.")
            frames = result.samples if output_type == "pt" else result.samples.permute(0, 1, 3, 4, 2).numpy()
            output = FlowNRGPipelineOutput(frames=frames, head_weights=result.head_weights)
        else:
            images = postprocess(result.samples, output_type or "pil")
            output = FlowNRGPipelineOutput(images=images, head_weights=result.head_weights)
        return output if return_dict else ((output.frames if output.images is None else output.images),)
