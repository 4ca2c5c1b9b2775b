"""RAFT's data collection and loss for diffusion pipelines (SD and SD3 families).

Samples are kept as latents, with their prompt's text embeddings, so fine-tuning needs no VAE
encode and no second text-encoder pass.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..sampling.pipelines import decode_latents, initial_noise
from ..storage import atomic_write
from .denoising import check_supported, denoiser_conditioning, denoising_loss, uniform_timesteps
from .diffusion_method import DiffusionMethod
from .finetune import Collected
from .raft import RAFTConfig, iteration_prompts, keep_best, load_ranking_reward

OFFLINE_POOL = "offline_pool.pt"


class ImageRAFT(DiffusionMethod):
    name = "raft"

    def __init__(self, config: RAFTConfig):
        super().__init__(config, load_ranking_reward(config.reward, "image"))

    def build(self, device):
        config = self.config
        model = super().build(device)
        check_supported(self.pipeline)
        # the pool is sampled as configured; evaluation samples as users do (the model's own defaults)
        self.sampling = {
            "num_inference_steps": config.num_inference_steps or self.eval_sampling["num_inference_steps"],
            "guidance_scale": self.eval_sampling["guidance_scale"] if config.guidance_scale is None else config.guidance_scale,
        }
        self.scheduler = self.pipeline.scheduler
        self.unconditional = denoiser_conditioning(self.pipeline, [""])
        return model

    @torch.no_grad()
    def sample(self, prompts: list[str], generator: torch.Generator, batch_size: int = 64) -> dict:
        """``num_samples_per_prompt`` samples of each prompt: their latents, and rewards ``[P, K]``."""
        k = self.config.num_samples_per_prompt
        repeated = [prompt for prompt in prompts for _ in range(k)]
        latents, rewards = [], []
        for begin in range(0, len(repeated), batch_size):
            chunk = repeated[begin : begin + batch_size]
            start = initial_noise(self.pipeline, len(chunk), generator=generator)
            result = self.pipeline(chunk, latents=start, output_type="latent", **self.sampling).images
            images = decode_latents(self.pipeline, result)
            rewards.append(self.reward(images, chunk).reward.float().cpu())
            latents.append(result.float().cpu())
        return {"latents": torch.cat(latents), "rewards": torch.cat(rewards).view(len(prompts), k)}

    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected:
        config = self.config
        prompts = iteration_prompts(self.pool, config.prompts_per_iteration, config.seed, iteration,
                                    accelerator.process_index, accelerator.num_processes)
        pool_file = Path(config.output_dir) / f"{OFFLINE_POOL}.{accelerator.process_index}"
        if config.mode == "offline" and iteration > 0 and pool_file.is_file():
            samples = torch.load(pool_file, weights_only=True)
            prompts = samples.pop("prompts")
        else:
            samples = self.sample(prompts, generator)
            if config.mode == "offline":
                atomic_write(pool_file, lambda tmp: torch.save({**samples, "prompts": prompts}, tmp))
        keep, metrics = keep_best(accelerator, samples["rewards"], config)
        conditioning = denoiser_conditioning(self.pipeline, prompts)
        k = config.num_samples_per_prompt
        examples = [
            {"latents": samples["latents"][p * k + j], **{key: value[p] for key, value in conditioning.items()}}
            for p, j in keep.nonzero().tolist()
        ] * config.num_epochs
        return Collected(examples, metrics)

    def loss(self, module, examples: list[dict], generator: torch.Generator) -> torch.Tensor:
        device = self.pipeline.device
        x0 = torch.stack([e["latents"] for e in examples]).to(device)
        conditioning = {key: torch.stack([e[key] for e in examples]).to(device)
                        for key in examples[0] if key != "latents"}
        dropped = torch.rand(len(examples), generator=generator) < self.config.caption_dropout
        for key, value in conditioning.items():
            value[dropped.to(device)] = self.unconditional[key][0].to(value.dtype)
        timesteps = uniform_timesteps(self.scheduler, len(examples), generator)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        return denoising_loss(module, self.scheduler, x0, noise, timesteps.to(device), conditioning)
