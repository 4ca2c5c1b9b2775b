"""shapes-sd: ε-prediction latent diffusion on the shapes world, saved as a StableDiffusionPipeline.

Two phases, each resumable: the AutoencoderKL (32 px ↔ 16×16×4 latents; MSE + 1e-6·KL), then the
UNet2DConditionModel and the CLIPTextModel together on the frozen VAE's latents, with the
standard noise-prediction loss, 10% empty captions for classifier-free guidance, AdamW and a
cosine schedule, plus a little offset noise. Samples use DDIM with trailing spacing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .components import build_scheduler, build_text_encoder, build_tokenizer, build_unet, build_vae
from .data import ShapesDataset
from .training import Stopwatch, export_atomically, load_checkpoint, run_steps, save_checkpoint

DEFAULTS = {"steps": 3000, "vae_steps": 600, "batch_size": 32, "lr": 6e-4, "vae_lr": 1e-3,
            "train_images": 40_000, "caption_dropout": 0.1, "noise_offset": 0.05, "seed": 0}
VAE_CHECKPOINT, UNET_CHECKPOINT = "checkpoint-vae.pt", "checkpoint.pt"


def train_vae(vae, images: torch.Tensor, output_dir: Path, config: dict, seed: int, resume: bool,
              desc: str = "shapes-sd vae", *, steps: int | None = None, object_weight: float = 0.0,
              checkpoint_name: str = VAE_CHECKPOINT) -> list[float]:
    """MSE + 1e-6·KL on uint8 ``images`` (``[N,3,H,W]``, or ``[N,3,T,H,W]`` clips for a video VAE),
    for ``steps`` (default ``config["vae_steps"]``). ``object_weight`` > 0 weighs the pixels on and
    around the coloured objects ``1 + object_weight`` times the background's (:func:`object_weights`)."""
    steps = config["vae_steps"] if steps is None else steps
    batch_size = config.get("vae_batch_size", config["batch_size"])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config["vae_lr"])
    rng = np.random.default_rng([seed, 1])
    resume_state = dict(total_steps=steps, rng=rng, vae=vae, optimizer=optimizer)
    start = load_checkpoint(output_dir, checkpoint_name, **resume_state) if resume else 0

    def compute_loss(step: int) -> torch.Tensor:
        batch = images[torch.from_numpy(rng.choice(len(images), batch_size, replace=False))].float() / 127.5 - 1
        posterior = vae.encode(batch).latent_dist
        squared_error = (vae.decode(posterior.sample()).sample - batch) ** 2
        if object_weight:
            weights = object_weights(batch, object_weight)
            squared_error = squared_error * weights / weights.mean()
        return squared_error.mean() + 1e-6 * posterior.kl().mean()

    vae.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=config["vae_lr"],
                       warmup=min(100, steps // 10 + 1), desc=desc,
                       checkpoint=lambda step: save_checkpoint(output_dir, step, checkpoint_name, **resume_state))
    vae.eval()
    return losses


def object_weights(batch: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-pixel loss weights for a batch in [-1, 1]: ``1 + object_weight`` where a pixel or one of
    its 8 neighbours is saturated (the objects, which the oracle segments by saturation), else 1.
    The background is most of every frame, so plain MSE spends the VAE on it and rounds the shapes."""
    pixels = (batch + 1) / 2
    saturated = (pixels.amax(1, keepdim=True) - pixels.amin(1, keepdim=True) > 0.2).float()
    frames = saturated if saturated.dim() == 5 else saturated.unsqueeze(2)  # images as one-frame clips
    near_object = F.max_pool3d(frames, (1, 3, 3), stride=1, padding=(0, 1, 1)).view_as(saturated)
    return 1 + object_weight * near_object


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and std for every image, so the UNet phase never runs the encoder."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        posterior = vae.encode(images[start : start + batch_size].float() / 127.5 - 1).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def train(output_dir: Path, steps: int, seed: int, resume: bool, log=print, **overrides) -> dict:
    """Train both phases into ``output_dir``; ``overrides`` change :data:`DEFAULTS` (tests use tiny runs)."""
    from diffusers import StableDiffusionPipeline

    config = {**DEFAULTS, **overrides}
    torch.manual_seed(seed)
    watch = Stopwatch()
    images, captions = ShapesDataset("train", length=config["train_images"], seed=seed).render_all()
    log(f"rendered {len(images)} training images in {watch}")
    vae, text_encoder, unet, scheduler = build_vae(), build_text_encoder(), build_unet(), build_scheduler()
    tokenizer = build_tokenizer(output_dir / "tokenizer")
    vae_losses = train_vae(vae, images, output_dir, config, seed, resume)
    vae.requires_grad_(False)
    means, stds = encode_all(vae, images)
    scaling = 1.0 / means.std().item()  # unit-variance latents, as SD's 0.18215 does for its VAE
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae ready in {watch}; latent scaling factor {scaling:.4f}")

    tokens = {}

    def tokenize(texts: list[str]) -> torch.Tensor:
        for text in set(texts) - tokens.keys():
            tokens[text] = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                                     truncation=True, return_tensors="pt").input_ids[0]
        return torch.stack([tokens[t] for t in texts])

    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config["lr"], weight_decay=0.01)
    rng = np.random.default_rng([seed, 2])
    resume_state = dict(total_steps=steps, rng=rng, unet=unet, text_encoder=text_encoder, optimizer=optimizer)
    start = load_checkpoint(output_dir, UNET_CHECKPOINT, **resume_state) if resume else 0
    alphas = scheduler.alphas_cumprod

    def compute_loss(step: int) -> torch.Tensor:
        index = torch.from_numpy(rng.choice(len(images), config["batch_size"], replace=False))
        latents = (means[index] + stds[index] * torch.randn_like(means[index])) * scaling
        batch_captions = ["" if rng.random() < config["caption_dropout"] else captions[i] for i in index]
        noise = torch.randn_like(latents)
        # offset noise (Guttenberg 2023; diffusers' --noise_offset): lets ε-prediction move the
        # mean colour, which the non-zero terminal SNR of SD's schedule otherwise pins
        noise = noise + config["noise_offset"] * torch.randn(len(index), noise.shape[1], 1, 1)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),))
        alpha = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
        hidden = text_encoder(tokenize(batch_captions))[0]
        return F.mse_loss(unet(noisy, timesteps, hidden).sample, noise)

    unet.train()
    text_encoder.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=config["lr"],
                       warmup=min(200, steps // 10 + 1), desc="shapes-sd unet", max_grad_norm=1.0,
                       checkpoint=lambda step: save_checkpoint(output_dir, step, UNET_CHECKPOINT, **resume_state))
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    export_atomically(output_dir, lambda folder: pipeline.to(torch.float16).save_pretrained(folder), last="model_index.json")
    log(f"trained shapes-sd in {watch}; saved {output_dir}")
    return {"steps": steps, "minutes": round(watch.minutes, 1), "latent_scaling": round(scaling, 4),
            "vae_losses": vae_losses, "losses": losses}
