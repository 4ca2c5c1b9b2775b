"""Image preprocessing in torch, so that gradients reach the pixels.

It reproduces open_clip's eval transform (torchvision ``Resize(size, BICUBIC)`` of the shortest
side, ``CenterCrop``, ``Normalize``) on float tensors, with the same size and crop arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError

RESIZE_MODES = ("shortest", "squash")


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shortest side to ``size``, the other in proportion, truncated as torchvision's Resize does."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_crop(images: Tensor, size: int) -> Tensor:
    """Crop the centre ``size``×``size``; offsets rounded as torchvision's ``center_crop``."""
    height, width = images.shape[-2:]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def resize_and_crop(
    images: Tensor, size: int, resize_mode: str = "shortest", interpolation: str = "bicubic"
) -> Tensor:
    """Float ``[B,3,H,W]`` in [0,1] to ``[B,3,size,size]``: antialiased resize, then centre crop.

    The result is clamped to [0,1], as PIL's uint8 output is after bicubic overshoot.
    """
    if resize_mode not in RESIZE_MODES:
        raise InvalidInputError(f"resize_mode: {resize_mode!r} is not supported; use one of {RESIZE_MODES}.")
    height, width = images.shape[-2:]
    target = (size, size) if resize_mode == "squash" else resized_shape(height, width, size)
    if target != (height, width):
        antialias = interpolation in ("bilinear", "bicubic")
        images = F.interpolate(images, size=target, mode=interpolation, antialias=antialias, align_corners=False)
        images = images.clamp(0.0, 1.0)
    return center_crop(images, size)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images - mean_t) / std_t
