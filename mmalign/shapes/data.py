"""Captioned renders of the shapes world as a torch dataset, deterministic per index and seed."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InvalidInputError
from .grammar import CATEGORIES, Prompt, prompts_for
from .scenes import Scene, render, scene_for


def sample(index: int, *, split: str = "train", image_size: int = 32, seed: int = 0,
           categories: tuple[str, ...] = CATEGORIES) -> tuple[np.ndarray, Prompt, Scene]:
    """The ``index``-th (image, prompt, scene) of a split: a category, then a prompt, uniformly.

    Training scenes never show a held-out colour–shape pair, even where the caption leaves the
    colour free; held-out scenes may.
    """
    rng = np.random.default_rng([seed, index, 0 if split == "train" else 1])
    category = categories[rng.integers(len(categories))]
    prompts = prompts_for(split, category)
    prompt = prompts[rng.integers(len(prompts))]
    scene = scene_for(prompt, rng, held_out_allowed=split != "train")
    return render(scene, image_size), prompt, scene


class ShapesDataset(Dataset):
    """``{"pixel_values": float [3,H,W] in [0,1], "caption": str, "category": str}`` items.

    Args:
        split: "train" or "heldout" (see :mod:`mmalign.shapes.grammar`).
        length: the number of items; item ``i`` is the same for the same ``seed`` on any machine.
        image_size: 32 or 64.
        categories: restrict the caption categories.
    """

    def __init__(self, split: str = "train", length: int = 10_000, image_size: int = 32, seed: int = 0,
                 categories: tuple[str, ...] = CATEGORIES):
        if image_size not in (32, 64):
            raise InvalidInputError(f"image_size: the shapes world renders 32 or 64 pixels, got {image_size}.")
        unknown = set(categories) - set(CATEGORIES)
        if unknown:
            raise InvalidInputError(f"categories: unknown {sorted(unknown)}; known are {CATEGORIES}.")
        prompts_for(split)  # validates the split
        self.split, self.length, self.image_size, self.seed, self.categories = split, length, image_size, seed, tuple(categories)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, prompt, _ = sample(index, split=self.split, image_size=self.image_size, seed=self.seed, categories=self.categories)
        pixels = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
        return {"pixel_values": pixels, "caption": prompt.text, "category": prompt.category}

    def render_all(self) -> tuple[torch.Tensor, list[str]]:
        """Every item at once: uint8 ``[N,3,H,W]`` and the captions (for training loops that cache)."""
        images, captions = [], []
        for index in range(self.length):
            image, prompt, _ = sample(index, split=self.split, image_size=self.image_size, seed=self.seed, categories=self.categories)
            images.append(torch.from_numpy(image.copy()).permute(2, 0, 1))
            captions.append(prompt.text)
        return torch.stack(images), captions
