"""shapes-turbo: a one-step generator distilled from shapes-sd, used like SD-Turbo
(``num_inference_steps=1, guidance_scale=0``).

The student starts as a copy of the teacher's UNet, as SD-Turbo starts from SD. The teacher turns
noise into latents with DDIM (25 steps, classifier-free guidance 3); the student learns to map the
same noise there in one Euler step at t=999 (trailing spacing), by regression on the latents.
VAE, text encoder and tokenizer are the teacher's, frozen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .grammar import prompts_for
from ..storage import atomic_write
from .training import Stopwatch, export_atomically, load_checkpoint, run_steps, save_checkpoint

DEFAULTS = {"steps": 2000, "pairs": 6000, "batch_size": 64, "lr": 2e-4, "teacher_steps": 25,
            "teacher_guidance": 3.0, "seed": 0, "teacher": None}
PAIRS_FILE = "distillation-pairs.pt"


def one_step_scheduler():
    from diffusers import EulerDiscreteScheduler

    from .components import SCHEDULER_CONFIG

    config = {k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("clip_sample", "set_alpha_to_one")}
    return EulerDiscreteScheduler(**config)


@torch.no_grad()
def teacher_pairs(teacher, count: int, config: dict, seed: int) -> dict:
    """(noise, caption, teacher latents) triples; noise is the unit Gaussian the pipelines start from."""
    generator = torch.Generator().manual_seed(seed)
    pool = [p.text for p in prompts_for("train")]
    captions = [pool[i] for i in torch.randint(len(pool), (count,), generator=generator)]
    shape = (count, teacher.unet.config.in_channels, teacher.unet.config.sample_size, teacher.unet.config.sample_size)
    noise = torch.randn(shape, generator=generator)
    latents = []
    for start in tqdm(range(0, count, 250), desc="teacher samples", unit="batch"):
        batch = noise[start : start + 250]
        sigma = teacher.scheduler.init_noise_sigma  # DDIM's is 1: its latents are the noise itself
        output = teacher(captions[start : start + 250], latents=batch * sigma, output_type="latent",
                         num_inference_steps=config["teacher_steps"], guidance_scale=config["teacher_guidance"])
        latents.append(output.images)
    return {"noise": noise, "captions": captions, "latents": torch.cat(latents)}


def _pairs_config(config: dict, seed: int) -> str:
    keys = ("pairs", "teacher_steps", "teacher_guidance", "teacher")
    return json.dumps({**{k: config[k] for k in keys}, "seed": seed}, sort_keys=True)


def train(output_dir: Path, steps: int, seed: int, resume: bool, log=print, **overrides) -> dict:
    from diffusers import StableDiffusionPipeline

    from ..models import resolve_model

    config = {**DEFAULTS, **overrides}
    torch.manual_seed(seed)
    watch = Stopwatch()
    teacher = StableDiffusionPipeline.from_pretrained(config["teacher"] or resolve_model("shapes-sd"), torch_dtype=torch.float32)
    teacher.set_progress_bar_config(disable=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    pairs_path = output_dir / PAIRS_FILE
    pairs = torch.load(pairs_path, weights_only=True) if resume and pairs_path.is_file() else None
    if pairs is None or pairs.get("config") != _pairs_config(config, seed):  # stale: another teacher or count
        pairs = {**teacher_pairs(teacher, config["pairs"], config, seed), "config": _pairs_config(config, seed)}
        atomic_write(pairs_path, lambda tmp: torch.save(pairs, tmp))
    log(f"{len(pairs['captions'])} teacher samples ready in {watch}")

    student = type(teacher.unet).from_config(teacher.unet.config)
    student.load_state_dict(teacher.unet.state_dict())
    scheduler = one_step_scheduler()
    scheduler.set_timesteps(1)
    timestep = scheduler.timesteps[0]
    sigma = float(scheduler.sigmas[0])
    text_encoder, tokenizer = teacher.text_encoder.requires_grad_(False), teacher.tokenizer
    with torch.no_grad():
        unique = sorted(set(pairs["captions"]))
        ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        embeddings = dict(zip(unique, text_encoder(ids)[0]))

    optimizer = torch.optim.AdamW(student.parameters(), lr=config["lr"])
    rng = np.random.default_rng([seed, 3])
    resume_state = dict(total_steps=steps, rng=rng, student=student, optimizer=optimizer)
    start = load_checkpoint(output_dir, **resume_state) if resume else 0
    def compute_loss(step: int) -> torch.Tensor:
        index = rng.choice(len(pairs["captions"]), config["batch_size"], replace=False)
        noise, target = pairs["noise"][index], pairs["latents"][index]
        hidden = torch.stack([embeddings[pairs["captions"][i]] for i in index])
        # one Euler step from σ_max, exactly as the pipeline samples: x0 = x − σ·ε̂
        latents = noise * scheduler.init_noise_sigma
        prediction = latents - sigma * student(scheduler.scale_model_input(latents, timestep), timestep, hidden).sample
        return F.mse_loss(prediction, target)

    student.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=config["lr"],
                       warmup=min(100, steps // 10 + 1), desc="shapes-turbo", max_grad_norm=1.0,
                       checkpoint=lambda step: save_checkpoint(output_dir, step, **resume_state))
    pipeline = StableDiffusionPipeline(
        vae=teacher.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=student.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    export_atomically(output_dir, lambda folder: pipeline.to(torch.float16).save_pretrained(folder), last="model_index.json")
    log(f"trained shapes-turbo in {watch}; saved {output_dir}")
    return {"steps": steps, "minutes": round(watch.minutes, 1), "losses": losses}
