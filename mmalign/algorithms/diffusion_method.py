"""What every fine-tune method on a diffusers pipeline shares: the pipeline with its trainable
denoiser, the prompt pool, the held-out evaluation and the saved weights. RAFT, D3PO and PRDP add
their own data collection and loss on top."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from ..models import load_pipeline, sampling_defaults
from ..sampling.pipelines import denoiser, stock_pipeline
from .lora import add_lora, has_lora, save_diffusers_lora
from .raft import read_prompt_file


class DiffusionMethod:
    """Base of the image methods. ``config`` carries :class:`~mmalign.algorithms.finetune.FinetuneConfig`'s
    fields plus ``prompt_file`` and ``num_eval_prompts``; ``reward`` is the loaded proxy (or None)."""

    def __init__(self, config, reward=None):
        self.config = config
        self.reward = reward
        self.pool = self.prompt_pool()

    def prompt_pool(self) -> list[str]:
        if self.config.prompt_file:
            return read_prompt_file(self.config.prompt_file)
        from ..shapes.grammar import prompts_for

        return [prompt.text for prompt in prompts_for("train")]

    def build(self, device):
        """Load the pipeline, attach the adapters (or unfreeze the denoiser) and freeze the rest;
        returns the trainable denoiser."""
        config = self.config
        self.pipeline = stock_pipeline(load_pipeline(config.model, device=str(device)))
        if self.reward is not None:
            self.reward.to(device)
        call = inspect.signature(type(self.pipeline).__call__).parameters
        # evaluation samples as users do: the model's own steps and guidance
        self.eval_sampling = {**{key: call[key].default for key in ("num_inference_steps", "guidance_scale")},
                              **sampling_defaults(config.model)}
        model = denoiser(self.pipeline)
        model.requires_grad_(not config.use_lora)
        if config.use_lora:
            add_lora(model, config.rank, config.lora_alpha, config.lora_target_modules)
        for module in self.pipeline.components.values():  # the VAE and every text encoder stay frozen
            if isinstance(module, torch.nn.Module) and module is not model:
                module.requires_grad_(False)
        return model

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
            return {} if self.reward is None else {"eval_proxy": float(self.reward(images, prompts).reward.nanmean())}
        evaluation = evaluate_images(images, prompts, proxy=self.reward)
        proxy = {} if self.reward is None else {"eval_proxy": evaluation.proxy_mean}
        return {"shapes_eval": evaluation.report.overall, **proxy,
                **{f"shapes_eval/{k}": v for k, v in evaluation.report.accuracy.items()}}

    def save_pretrained(self, directory: Path) -> None:
        model = denoiser(self.pipeline)
        if has_lora(model):
            save_diffusers_lora(self.pipeline, model, directory)
        else:
            self.pipeline.save_pretrained(directory / "pipeline", safe_serialization=True)
