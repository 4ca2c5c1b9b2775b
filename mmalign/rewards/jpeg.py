"""JPEG (in)compressibility, the weight-free rewards of DDPO (Black et al. 2023).

Following ddpo-pytorch ``rewards.py``: pixels are rounded to uint8, saved as JPEG at quality 95,
and the size is measured in kilobytes (bytes / 1000). Compressibility is ``-size``,
incompressibility ``+size``. Not differentiable: use it with best-of-N, RAFT, D3PO or PRDP.
"""

from __future__ import annotations

import io

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard

JPEG_SPEC = RewardSpec(modality="image", differentiable=False, needs_prompt=False, output_kind="score")


def jpeg_size_kb(images: Tensor, quality: int = 95) -> Tensor:
    """Size in kB of each ``[3,H,W]`` image of a [0,1] batch saved as JPEG at ``quality``."""
    from PIL import Image

    pixels = (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


class JPEGSize(Reward):
    """``sign · size_kB(JPEG_q(x))``: sign −1 rewards compressible images, +1 incompressible ones."""

    def __init__(self, sign: int = -1, quality: int = 95, spec: RewardSpec = JPEG_SPEC, name: str | None = None):
        if sign not in (-1, 1):
            raise InvalidInputError(f"sign: must be -1 (compressibility) or +1 (incompressibility), got {sign}.")
        if not 1 <= quality <= 100:
            raise InvalidInputError(f"quality: JPEG quality must lie in 1..100, got {quality}.")
        default = "jpeg-compressibility" if sign < 0 else "jpeg-incompressibility"
        super().__init__(spec, name or default)
        self.sign = sign
        self.quality = quality
        self.freeze()

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, device=None, **kwargs) -> JPEGSize:
        # ``device`` is accepted like every loader's; JPEG encoding runs on the CPU whatever it says.
        return cls(**{**card.args, **kwargs}, spec=card.spec(), name=card.name)

    def forward(self, images: Tensor, prompts=None) -> RewardOutput:
        return RewardOutput(reward=self.sign * jpeg_size_kb(images, self.quality).to(images.device))
