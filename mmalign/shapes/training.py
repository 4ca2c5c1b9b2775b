"""What every shapes-world training script shares: atomic, resumable checkpoints, the cosine
schedule, degradation augmentation, and fp16 safetensors export."""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

CHECKPOINT = "checkpoint.pt"


def atomic_write(path: Path, write) -> None:
    """Write through ``write(temporary_path)`` and rename, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_checkpoint(directory: Path, step: int, name: str = CHECKPOINT, **state) -> None:
    payload = {"step": step, "rng": torch.get_rng_state(), **{k: v.state_dict() for k, v in state.items()}}
    atomic_write(directory / name, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(directory: Path, name: str = CHECKPOINT, **state) -> int:
    """Restore ``state`` (modules, optimisers) from ``directory/name``; returns the step (0 if none)."""
    path = directory / name
    if not path.is_file():
        return 0
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in state.items():
        value.load_state_dict(payload[key])
    torch.set_rng_state(payload["rng"])
    return int(payload["step"])


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
