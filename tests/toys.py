"""Toy rewards and tiny models for tests: outputs simple enough to work out by hand."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from mmalign.rewards import Reward, RewardOutput, RewardSpec

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip(directory, seed: int = 0, image_size: int = 32):
    """An open_clip ``local-dir:`` folder with a randomly initialised tiny CLIP."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(TINY_CLIP_CFG))
    cfg["vision_cfg"]["image_size"] = image_size
    config = {"model_cfg": cfg, "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
    save_file(model.state_dict(), str(directory / "open_clip_model.safetensors"))
    return directory


class MeanPixelReward(Reward):
    """``r = scale · mean(x) + shift`` per image: differentiable, with values easy to work out by hand.

    Images whose mean is below ``nan_below`` get NaN, as a reward that cannot score them would.
    """

    def __init__(self, scale=1.0, shift=0.0, mean=None, std=None, nan_below=None, name=None, output_range=None, **spec):
        values = dict(modality="image", differentiable=True, needs_prompt=False, output_range=output_range, mean=mean, std=std)
        super().__init__(RewardSpec(**{**values, **spec}), name or f"mean*{scale:g}+{shift:g}")
        self.scale, self.shift, self.nan_below = scale, shift, nan_below
        self.freeze()

    def forward(self, images, prompts=None):
        value = self.scale * images.mean(dim=(1, 2, 3)) + self.shift
        if self.nan_below is not None:
            return RewardOutput(reward=value, mask=images.mean(dim=(1, 2, 3)) >= self.nan_below)
        return RewardOutput(reward=value)


def constant_images(*values: float, size: int = 8) -> torch.Tensor:
    """A batch of uniform images, one per value."""
    return torch.stack([torch.full((3, size, size), float(v)) for v in values])
