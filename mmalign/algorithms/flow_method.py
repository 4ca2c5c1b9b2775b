"""What Flow-DPO and Flow-RWR share: a rectified-flow pipeline (image or video) with a LoRA whose
disabled state is the reference, groups of samples scored by a reward, the flow-matching error of
the policy and the reference at a noise level, and evaluation on held-out prompts.

The flow-matching error of a sample is ``‖v − vθ(x_σ)‖²`` averaged over its dimensions, with
``x_σ = (1 − σ)·x₀ + σ·ε`` and ``v = ε − x₀``; σ is drawn logit-normal and shifted as the
scheduler shifts (:func:`~mmalign.sampling.flow.logit_normal_sigmas`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..sampling import flow
from ..sampling.trajectories import adapters_disabled
from .diffusion_method import DiffusionMethod
from .finetune import FinetuneConfig
from .raft import load_ranking_reward, read_prompt_file


@dataclass
class FlowConfig(FinetuneConfig):
    """Fields Flow-DPO and Flow-RWR share; each method's config documents its defaults for them."""

    model: str = "shapes-video"
    reward: str | None = "shapes-video-reward"
    prompt_file: str | None = None
    prompts_per_iteration: int = 16
    group_size: int = 4
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    sample_batch_size: int = 32
    num_eval_prompts: int = 64
    rank: int = 64
    lora_alpha: float | None = 128

    def __post_init__(self):
        super().__post_init__()
        for name in ("prompts_per_iteration", "sample_batch_size", "num_eval_prompts"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: must be at least 1, got {getattr(self, name)}.")
        if self.group_size < 2:
            raise InvalidInputError(f"group_size: samples per prompt must be at least 2 to rank them, got {self.group_size}.")
        if not self.logit_std > 0:
            raise InvalidInputError(f"logit_std: must be > 0, got {self.logit_std}.")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise InvalidInputError(f"num_inference_steps: must be at least 1 (or null for the model's own), "
                                    f"got {self.num_inference_steps}.")


class FlowMethod(DiffusionMethod):
    """Base of the flow methods; subclasses add ``collect`` and ``loss``."""

    def __init__(self, config: FlowConfig, reward=None):
        self.config = config
        self.reward = reward
        self.pool = []  # set in build: the shapes world's image or video prompts, by the model's kind

    def build(self, device):
        config = self.config
        model = super().build(device)
        self.video = flow.is_video(self.pipeline)  # refuses non-flow families and schedulers
        if config.reward is not None and self.reward is None:
            self.reward = load_ranking_reward(config.reward, "video" if self.video else "image").to(device)
        self.pool = self.prompt_pool()
        size = {key: getattr(config, key) for key in ("height", "width", "num_frames") if getattr(config, key) is not None}
        self.eval_sampling.update(size)  # evaluation at the trained size, with the model's steps and guidance
        flow.check_num_frames(self.pipeline, self.eval_sampling.get("num_frames"))  # refused for images
        self.sampling = {**self.eval_sampling, "num_inference_steps": config.num_inference_steps or self.eval_sampling["num_inference_steps"]}
        if config.guidance_scale is not None:
            self.sampling["guidance_scale"] = config.guidance_scale
        self.text_cache = {}
        return model

    def prompt_pool(self) -> list[str]:
        if self.config.prompt_file:
            return read_prompt_file(self.config.prompt_file)
        if not self.video:
            return super().prompt_pool()
        from ..shapes.video import motion_prompts_for

        return [prompt.text for prompt in motion_prompts_for("train")]

    def conditioning(self, prompts: list[str]) -> dict[str, Tensor]:
        """The transformer's text inputs for ``prompts``, each prompt encoded once per run."""
        missing = sorted(set(prompts) - self.text_cache.keys())
        if missing:
            with torch.no_grad():
                encoded = flow.flow_conditioning(self.pipeline, missing)
            for i, prompt in enumerate(missing):
                self.text_cache[prompt] = {key: value[i].cpu() for key, value in encoded.items()}
        return {key: torch.stack([self.text_cache[p][key] for p in prompts]) for key in self.text_cache[prompts[0]]}

    @torch.no_grad()
    def sample_groups(self, prompts: list[str], generator: torch.Generator) -> dict:
        """``group_size`` samples of each prompt, as the stock pipeline draws them: their latents
        (the pipeline's layout, on the CPU) and their rewards ``[P, K]``."""
        k = self.config.group_size
        repeated = [prompt for prompt in prompts for _ in range(k)]
        latents, rewards = [], []
        for begin in range(0, len(repeated), self.config.sample_batch_size):
            chunk = repeated[begin : begin + self.config.sample_batch_size]
            output = self.pipeline(chunk, output_type="latent", generator=generator, **self.sampling)
            result = output.frames if self.video else output.images
            rewards.append(self.reward(flow.decode(self.pipeline, result), chunk).reward.float().cpu())
            latents.append(result.float().cpu())
        return {"latents": torch.cat(latents), "rewards": torch.cat(rewards).view(len(prompts), k)}

    def draw_noise(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(ε, σ)`` for a batch of clean latents: Gaussian noise of their shape and logit-normal σ ``[B]``."""
        sigmas = flow.logit_normal_sigmas(self.pipeline.scheduler, x0.shape[0], generator, self.config.logit_mean,
                                          self.config.logit_std, image_seq_len=flow.latent_tokens(self.pipeline, x0))
        return torch.randn(x0.shape, generator=generator), sigmas

    def flow_errors(self, module, x0: Tensor, noise: Tensor, sigmas: Tensor, conditioning: dict[str, Tensor],
                    reference: bool = False) -> Tensor:
        """``[B]`` flow-matching errors ``mean(‖(ε − x₀) − vθ(x_σ)‖²)`` of ``module``, or of the
        reference (the adapters disabled, no gradient) when ``reference``."""
        device = self.pipeline.device
        x0, noise = x0.to(device), noise.to(device)
        conditioning = {key: value.to(device) for key, value in conditioning.items()}
        noisy = flow.noised(x0, noise, sigmas)
        reference_only = adapters_disabled(module) if reference else contextlib.nullcontext()
        with reference_only, torch.set_grad_enabled(torch.is_grad_enabled() and not reference):
            predicted = flow.velocity(self.pipeline, module, noisy, sigmas, conditioning, self.sampling["guidance_scale"])
        return (predicted - (noise - x0).float()).pow(2).flatten(1).mean(1)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Images: the image world's held-out ShapesEval (:meth:`DiffusionMethod.evaluate`). Video on
        the shapes world: video ShapesEval per head of held-out motion prompts, with the proxy."""
        if not self.video:
            return super().evaluate()
        from ..shapes.evaluation import generate_videos
        from ..shapes.video import motion_prompts_for
        from ..shapes.video_oracle import ShapesVideoEval

        count = self.config.num_eval_prompts
        if self.config.prompt_file:
            prompts = self.pool[:count]
        else:
            heldout = [prompt.text for prompt in motion_prompts_for("heldout")]
            prompts = (heldout * math.ceil(count / len(heldout)))[:count]
        videos = generate_videos(self.pipeline, prompts, seed=self.config.seed, **self.eval_sampling)
        metrics = {} if self.reward is None else {"eval_proxy": float(self.reward(videos, prompts).reward.nanmean())}
        if not self.config.prompt_file:  # the oracle judges shapes-world captions alone
            accuracy = ShapesVideoEval().evaluate(list(videos), prompts).accuracy
            metrics.update({"shapes_eval": accuracy["overall"],
                            **{f"shapes_eval/{head}": value for head, value in accuracy.items() if head != "overall"}})
        return metrics
