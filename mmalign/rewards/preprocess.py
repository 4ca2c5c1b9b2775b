"""Image preprocessing in torch, so that gradients reach the pixels.

It reproduces open_clip's eval transform (torchvision ``Resize(size, BICUBIC)`` of the shortest
side, ``CenterCrop``, ``Normalize``) on float tensors, with the same size and crop arithmetic, and
HPSv2's letterbox (open_clip's ``ResizeMaxSize``: the longest side to ``size``, then zero padding,
centred, to a square), which keeps the whole of a non-square image where a crop drops its edges.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError

RESIZE_MODES = ("shortest", "squash", "letterbox")
# OpenAI CLIP's pixel statistics, which open_clip, HPSv2, PickScore and BLIP (ImageReward) all normalise with
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
    """Float ``[B,3,H,W]`` in [0,1] to ``[B,3,size,size]``: antialiased resize, then centre crop
    (``letterbox``: zero padding instead). A non-square image meeting the crop warns: the reward
    does not see its edges.

    The result is clamped to [0,1], as PIL's uint8 output is after bicubic overshoot.
    """
    if resize_mode not in RESIZE_MODES:
        raise InvalidInputError(f"resize_mode: {resize_mode!r} is not supported; use one of {RESIZE_MODES}.")
    height, width = images.shape[-2:]
    if resize_mode == "letterbox":
        return letterbox(images, size, interpolation)
    if resize_mode == "shortest" and height != width:
        warnings.warn(f"a {height}×{width} image meets a centre-crop reward, which scores only its central "
                      f"square; rewards trained on letterboxed images (HPSv2) see all of it.", UserWarning, stacklevel=3)
    target = (size, size) if resize_mode == "squash" else resized_shape(height, width, size)
    if target != (height, width):
        antialias = interpolation in ("bilinear", "bicubic")
        images = F.interpolate(images, size=target, mode=interpolation, antialias=antialias, align_corners=False)
        images = images.clamp(0.0, 1.0)
    return center_crop(images, size)


def letterbox(images: Tensor, size: int, interpolation: str = "bicubic") -> Tensor:
    """The longest side to ``size`` (the other rounded in proportion), then zero padding to
    ``size``×``size``: ``pad // 2`` before, the rest after, as HPSv2's ``ResizeMaxSize`` pads."""
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    target = (round(height * scale), round(width * scale))
    if target != (height, width):
        antialias = interpolation in ("bilinear", "bicubic")
        images = F.interpolate(images, size=target, mode=interpolation, antialias=antialias, align_corners=False)
        images = images.clamp(0.0, 1.0)
    pad_height, pad_width = size - target[0], size - target[1]
    return F.pad(images, (pad_width // 2, pad_width - pad_width // 2, pad_height // 2, pad_height - pad_height // 2))


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images - mean_t) / std_t
