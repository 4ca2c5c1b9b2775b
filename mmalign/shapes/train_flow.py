"""shapes-flow: a rectified-flow text-to-image model, saved as a StableDiffusion3Pipeline.

An SD3Transformer2DModel learns the velocity ``ε − x₀`` along ``x_t = (1 − t)·x₀ + t·ε``
(rectified flow; Esser et al. 2024), with t drawn logit-normal (mean 0, std 1, SD3's default),
on the latents of shapes-sd's VAE. Both CLIP text encoders are shapes-sd's trained encoder with a
projection head, frozen; there is no T5 (the pipeline then feeds zeros, and training does the
same, on one collapsed copy of the padding: see :mod:`.collapsed_padding`). Sampling uses
FlowMatchEulerDiscreteScheduler. Load it as diffusers loads SD3 without T5:
``StableDiffusion3Pipeline.from_pretrained(path, text_encoder_3=None, tokenizer_3=None)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .collapsed_padding import collapse_padding, restore_attention
from .data import ShapesDataset
from .train_sd import encode_all
from .training import Stopwatch, export_atomically, load_checkpoint, run_steps, save_checkpoint

TRANSFORMER_CONFIG = dict(
    sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=4, attention_head_dim=16,
    num_attention_heads=4, joint_attention_dim=128, caption_projection_dim=64, pooled_projection_dim=128,
    pos_embed_max_size=16,
)
DEFAULTS = {"steps": 10_000, "batch_size": 32, "lr": 5e-4, "train_images": 40_000, "caption_dropout": 0.1,
            "max_sequence_length": 256, "seed": 0, "base": None}


def text_encoder_with_projection(text_encoder):
    """shapes-sd's CLIPTextModel as a CLIPTextModelWithProjection (SD3's class), same weights."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(**{**text_encoder.config.to_dict(), "projection_dim": text_encoder.config.hidden_size})
    encoder = CLIPTextModelWithProjection(config)
    # transformers 5 drops CLIPTextModel's "text_model." prefix; the projection class keeps it
    state = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text_encoder.state_dict().items()}
    missing, _ = encoder.load_state_dict(state, strict=False)
    assert set(missing) == {"text_projection.weight"}, missing
    torch.nn.init.eye_(encoder.text_projection.weight)  # pooled = the CLIP pooled output itself
    return encoder.eval().requires_grad_(False)


def build_pipeline(base):
    """An untrained StableDiffusion3Pipeline on shapes-sd's VAE, tokenizer and text encoder."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    encoder = text_encoder_with_projection(base.text_encoder)
    base.vae.register_to_config(shift_factor=0.0)
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**TRANSFORMER_CONFIG), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        vae=base.vae, text_encoder=encoder, tokenizer=base.tokenizer, text_encoder_2=encoder,
        tokenizer_2=base.tokenizer, text_encoder_3=None, tokenizer_3=None, image_encoder=None, feature_extractor=None,
    )


def train(output_dir: Path, steps: int, seed: int, resume: bool, log=print, **overrides) -> dict:
    from diffusers import StableDiffusionPipeline

    from ..models import resolve_model

    config = {**DEFAULTS, **overrides}
    torch.manual_seed(seed)
    watch = Stopwatch()
    base = StableDiffusionPipeline.from_pretrained(config["base"] or resolve_model("shapes-sd"), torch_dtype=torch.float32)
    pipeline = build_pipeline(base)
    transformer, vae = pipeline.transformer, pipeline.vae
    images, captions = ShapesDataset("train", length=config["train_images"], seed=seed).render_all()
    means, stds = encode_all(vae, images)
    scaling = vae.config.scaling_factor
    log(f"rendered and encoded {len(images)} training images in {watch}")

    cache = {}

    @torch.no_grad()
    def embed(texts: list[str]):
        for text in set(texts) - cache.keys():
            prompt_embeds, _, pooled, _ = pipeline.encode_prompt(
                text, text, None, do_classifier_free_guidance=False, max_sequence_length=1)
            cache[text] = (prompt_embeds[0], pooled[0])
        return torch.stack([cache[t][0] for t in texts]), torch.stack([cache[t][1] for t in texts])

    optimizer = torch.optim.AdamW(transformer.parameters(), lr=config["lr"], weight_decay=0.01)
    rng = np.random.default_rng([seed, 4])
    resume_state = dict(total_steps=steps, rng=rng, transformer=transformer, optimizer=optimizer)
    start = load_checkpoint(output_dir, **resume_state) if resume else 0
    def compute_loss(step: int) -> torch.Tensor:
        index = torch.from_numpy(rng.choice(len(images), config["batch_size"], replace=False))
        latents = (means[index] + stds[index] * torch.randn_like(means[index])) * scaling
        texts = ["" if rng.random() < config["caption_dropout"] else captions[i] for i in index]
        prompt_embeds, pooled = embed(texts)
        noise = torch.randn_like(latents)
        t = torch.sigmoid(torch.randn(len(index)))  # logit-normal(0, 1)
        noisy = (1 - t.view(-1, 1, 1, 1)) * latents + t.view(-1, 1, 1, 1) * noise
        velocity = transformer(noisy, encoder_hidden_states=prompt_embeds, pooled_projections=pooled,
                               timestep=t * 1000).sample
        return F.mse_loss(velocity, noise - latents)

    collapse_padding(transformer, repeats=config["max_sequence_length"])
    transformer.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=config["lr"],
                       warmup=min(200, steps // 10 + 1), desc="shapes-flow", max_grad_norm=1.0,
                       checkpoint=lambda step: save_checkpoint(output_dir, step, **resume_state))
    transformer.eval()
    restore_attention(transformer)
    export_atomically(output_dir, lambda folder: pipeline.to(torch.float16).save_pretrained(folder), last="model_index.json")
    log(f"trained shapes-flow in {watch}; saved {output_dir}")
    return {"steps": steps, "minutes": round(watch.minutes, 1), "losses": losses}
