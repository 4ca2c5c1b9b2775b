"""What D3PO and PRDP share: trajectories sampled with per-step log-probabilities, a reference that
is the same denoiser with its LoRA disabled, and the guided step scored again under the policy.

The reference never changes, so each stored step's reference log-probability is computed once, at
sampling time, with the adapters off (and the exact Gaussian KL of each step to the reference with
it); training then needs one forward of the policy per step, not two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..sampling.ddim import check_eta, check_reduction
from ..sampling.pipelines import denoiser
from ..sampling.trajectories import (Trajectories, adapters_disabled, check_trajectory_pipeline, ddim_scheduler,
                                     previous_timesteps, sample_trajectories, step_log_probs, text_conditioning)
from .diffusion_method import DiffusionMethod
from .finetune import FinetuneConfig


@dataclass
class TrajectoryConfig(FinetuneConfig):
    """Fields D3PO and PRDP share; each method's config documents its own defaults for them."""

    model: str = "shapes-sd"
    reward: str | None = "shapes-clip"
    prompt_file: str | None = None
    prompts_per_iteration: int = 64
    num_eval_prompts: int = 96
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    eta: float = 1.0
    log_prob_reduction: str = "mean"
    beta: float = 0.1
    clip_range: float = 0.1
    sample_batch_size: int = 32
    gradient_checkpointing: bool = True

    def __post_init__(self):
        super().__post_init__()
        for name in ("prompts_per_iteration", "num_inference_steps", "sample_batch_size", "num_eval_prompts"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: must be at least 1, got {getattr(self, name)}.")
        check_eta(self.eta)
        check_reduction(self.log_prob_reduction)
        if not self.beta > 0:
            raise InvalidInputError(f"beta: must be > 0, got {self.beta}. It scales the log-ratios (D3PO) or divides "
                                    "the reward differences (PRDP); use the default unless you know better.")
        if not self.clip_range > 0:
            raise InvalidInputError(f"clip_range: must be > 0, got {self.clip_range}.")
        if not self.use_lora:
            raise InvalidInputError(
                "use_lora: D3PO and PRDP need LoRA, because their reference policy is the same model with its "
                "adapters disabled, never a second copy. Fix: keep use_lora=true (raise rank for more capacity).")


class TrajectoryMethod(DiffusionMethod):
    """Builds the pipeline, the DDIM scheduler the trajectories use and the unconditional input;
    samples trajectories with their reference log-probs; scores stored steps under the policy."""

    def build(self, device):
        model = super().build(device)
        check_trajectory_pipeline(self.pipeline)
        if self.config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        self.scheduler = ddim_scheduler(self.pipeline, self.config.num_inference_steps)
        _, self.unconditional = text_conditioning(self.pipeline, [""])
        return model

    def sample(self, prompts: list[str], generator: torch.Generator, starts: Tensor | None = None) -> Trajectories:
        """Trajectories of ``prompts`` in chunks of ``sample_batch_size``, with reference log-probs."""
        config, chunks = self.config, []
        for begin in range(0, len(prompts), config.sample_batch_size):
            chunk = prompts[begin : begin + config.sample_batch_size]
            latents = None if starts is None else starts[begin : begin + len(chunk)]
            chunks.append(sample_trajectories(
                self.pipeline, chunk, config.num_inference_steps, config.guidance_scale, config.eta, generator,
                latents=latents, log_prob_reduction=config.log_prob_reduction, with_reference=True))
        return concatenate(chunks)

    def policy_log_probs(self, module, latents: Tensor, next_latents: Tensor, steps: Tensor,
                         conditioning: dict[str, Tensor]) -> Tensor:
        """``[N]`` log-probabilities of stored steps (``steps`` index the schedule) under the policy."""
        device = self.pipeline.device
        timesteps = self.scheduler.timesteps[steps].to(device)
        previous = previous_timesteps(self.scheduler)[steps]
        return step_log_probs(module, self.scheduler, latents.to(device), next_latents.to(device), timesteps,
                              previous.to(device), {k: v.to(device) for k, v in conditioning.items()},
                              self.unconditional, self.config.guidance_scale, self.config.eta,
                              self.config.log_prob_reduction)

    def reference_log_probs(self, latents: Tensor, next_latents: Tensor, steps: Tensor,
                            conditioning: dict[str, Tensor]) -> Tensor:
        model = denoiser(self.pipeline)
        with torch.no_grad(), adapters_disabled(model):
            return self.policy_log_probs(model, latents, next_latents, steps, conditioning).cpu()


def concatenate(chunks: list[Trajectories]) -> Trajectories:
    first = chunks[0]
    cat = lambda name: None if getattr(first, name) is None else torch.cat([getattr(c, name) for c in chunks])  # noqa: E731
    return Trajectories(
        latents=cat("latents"), timesteps=first.timesteps, prev_timesteps=first.prev_timesteps,
        log_probs=cat("log_probs"), images=cat("images"), ref_log_probs=cat("ref_log_probs"), kl=cat("kl"),
        conditioning={key: torch.cat([c.conditioning[key] for c in chunks]) for key in first.conditioning})
