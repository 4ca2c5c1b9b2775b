"""What every shapes-world training script shares: atomic, resumable checkpoints, the cosine
schedule, degradation augmentation, and fp16 safetensors export."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..storage import atomic_write

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_EVERY = 250  # steps


def checkpoint_due(step: int, total_steps: int) -> bool:
    return step % CHECKPOINT_EVERY == 0 or step == total_steps


def export_atomically(output_dir: Path, write, last: str) -> None:
    """Export through ``write(staging_folder)``, then move the entries into ``output_dir`` with
    ``last`` (the file loaders look for, such as model_index.json) removed first and moved in last,
    so an interrupted export never looks complete."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / last).unlink(missing_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".export-"))
    try:
        write(staging)
        for entry in sorted(staging.iterdir(), key=lambda p: p.name == last):
            target = output_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_checkpoint(directory: Path, step: int, name: str = CHECKPOINT, *, total_steps: int,
                    rng: np.random.Generator, generator: torch.Generator | None = None, **state) -> None:
    """Everything a resumed run needs to continue exactly: the step, the schedule's length, the
    global torch RNG, the sampling RNGs and each module's and optimiser's state."""
    payload = {"step": step, "total_steps": total_steps, "torch_rng": torch.get_rng_state(),
               "numpy_rng": json.dumps(rng.bit_generator.state),
               "generator": generator.get_state() if generator is not None else None,
               **{k: v.state_dict() for k, v in state.items()}}
    atomic_write(directory / name, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(directory: Path, name: str = CHECKPOINT, *, total_steps: int, rng: np.random.Generator,
                    generator: torch.Generator | None = None, **state) -> int:
    """Restore what :func:`save_checkpoint` saved; returns the step to continue from (0 if none)."""
    path = directory / name
    if not path.is_file():
        return 0
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["total_steps"] != total_steps:
        raise InvalidInputError(
            f"--steps: {path} belongs to a run of {payload['total_steps']} steps, and its learning-rate schedule "
            f"with it. Fix: pass --steps {payload['total_steps']}, or --fresh to start over."
        )
    for key, value in state.items():
        value.load_state_dict(payload[key])
    torch.set_rng_state(payload["torch_rng"])
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    if generator is not None:
        generator.set_state(payload["generator"])
    return int(payload["step"])


def run_steps(compute_loss, optimizer, *, start: int, steps: int, lr: float, warmup: int, desc: str,
              checkpoint, max_grad_norm: float | None = None, after_step=None) -> list[float]:
    """The loop every recipe shares: the cosine schedule, one optimiser step on
    ``compute_loss(step)``, optional gradient clipping, ``after_step(step)`` after each update (an
    average of the weights, say), a progress bar, and ``checkpoint(step)`` when one is due. Returns
    the losses of the steps it ran."""
    from tqdm.auto import tqdm

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    losses = []
    progress = tqdm(range(start, steps), initial=start, total=steps, desc=desc, unit="step")
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=warmup)
        loss = compute_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if checkpoint_due(step + 1, steps):
            checkpoint(step + 1)
    return losses


def cosine_lr(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def degrade(images: torch.Tensor, generator: torch.Generator, max_noise: float = 0.05, max_blur: float = 0.8) -> torch.Tensor:
    """Random Gaussian blur and noise per image, like a small generator's samples."""
    batch = images.shape[0]
    sigma = torch.rand(batch, generator=generator) * max_blur
    offsets = torch.arange(-2, 3, dtype=torch.float32)
    kernels = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # [B,5]; tiny sigma gives the identity
    channels = images.shape[1]
    x = images.reshape(1, batch * channels, *images.shape[2:])
    k = kernels.repeat_interleave(channels, 0)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k[:, None, None, :], groups=batch * channels)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k[:, None, :, None], groups=batch * channels)
    noise = torch.randn(images.shape, generator=generator) * (torch.rand(batch, 1, 1, 1, generator=generator) * max_noise)
    return (x.reshape(images.shape) + noise).clamp(0, 1)


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.start) / 60

    def __str__(self) -> str:
        seconds = time.perf_counter() - self.start
        return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
