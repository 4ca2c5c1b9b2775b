"""RAFT's data collection and loss for diffusion pipelines (SD and SD3 families).

Samples are kept as latents, with their prompt's text embeddings, so fine-tuning needs no VAE
encode and no second text-encoder pass.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from ..models import load_pipeline, sampling_defaults
from ..sampling.pipelines import decode_latents, denoiser, initial_noise, stock_pipeline
from ..storage import atomic_write
from .denoising import check_supported, denoiser_conditioning, denoising_loss, uniform_timesteps
from .finetune import Collected
from .lora import add_lora, has_lora, save_diffusers_lora
from .raft import RAFTConfig, iteration_prompts, keep_best, load_ranking_reward, read_prompt_file

OFFLINE_POOL = "offline_pool.pt"


class ImageRAFT:
    name = "raft"

    def __init__(self, config: RAFTConfig):
        self.config = config
        self.reward = load_ranking_reward(config.reward, "image")
        self.pool = self._prompt_pool()

    def _prompt_pool(self) -> list[str]:
        if self.config.prompt_file:
            return read_prompt_file(self.config.prompt_file)
        from ..shapes.grammar import prompts_for

        return [prompt.text for prompt in prompts_for("train")]

    def build(self, device):
        config = self.config
        self.pipeline = stock_pipeline(load_pipeline(config.model, device=str(device)))
        check_supported(self.pipeline)
        self.reward.to(device)
        # the pool is sampled as configured; evaluation samples as users do (the model's own defaults)
        call = inspect.signature(type(self.pipeline).__call__).parameters
        own = {**{key: call[key].default for key in ("num_inference_steps", "guidance_scale")}, **sampling_defaults(config.model)}
        self.eval_sampling = own
        self.sampling = {
            "num_inference_steps": config.num_inference_steps or own["num_inference_steps"],
            "guidance_scale": own["guidance_scale"] if config.guidance_scale is None else config.guidance_scale,
        }
        self.scheduler = self.pipeline.scheduler
        self.unconditional = denoiser_conditioning(self.pipeline, [""])
        model = denoiser(self.pipeline)
        model.requires_grad_(not config.use_lora)
        if config.use_lora:
            add_lora(model, config.rank, config.lora_alpha, config.lora_target_modules)
        for module in self.pipeline.components.values():  # the VAE and every text encoder stay frozen
            if isinstance(module, torch.nn.Module) and module is not model:
                module.requires_grad_(False)
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

    @torch.no_grad()
    def evaluate(self) -> dict:
        """On the shapes world (no ``prompt_file``), ShapesEval of held-out prompts with the proxy's
        mean beside it; on the user's own prompts, the proxy's mean on the first of them only, since
        the oracle judges shapes-world captions alone."""
        from ..shapes.evaluation import evaluate_images, evaluation_prompts, generate_images
        from ..shapes.grammar import CATEGORIES

        own_prompts = bool(self.config.prompt_file)
        prompts = (self.pool[: self.config.num_eval_prompts] if own_prompts else
                   evaluation_prompts("heldout", per_category=max(1, self.config.num_eval_prompts // len(CATEGORIES))))
        images = generate_images(self.pipeline, prompts, seed=self.config.seed, **self.eval_sampling)
        if own_prompts:
            return {"eval_proxy": float(self.reward(images, prompts).reward.nanmean())}
        evaluation = evaluate_images(images, prompts, proxy=self.reward)
        return {"shapes_eval": evaluation.report.overall, "eval_proxy": evaluation.proxy_mean,
                **{f"shapes_eval/{k}": v for k, v in evaluation.report.accuracy.items()}}

    def save_pretrained(self, directory: Path) -> None:
        model = denoiser(self.pipeline)
        if has_lora(model):
            save_diffusers_lora(self.pipeline, model, directory)
        else:
            self.pipeline.save_pretrained(directory / "pipeline", safe_serialization=True)
