"""Turn what users pass to a reward into checked tensors, once, with errors that say the fix.

Images are float ``[B,3,H,W]`` in [0,1]; video is ``[B,T,3,H,W]`` in [0,1]; text is a list of
strings. PIL images and paths are converted here; tensors are checked, never silently rescaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError

# Decoders such as a VAE overshoot [0,1] by a hair; more than this is a different convention.
RANGE_TOLERANCE = 1e-3


def load_image(item) -> Tensor:
    """A PIL image or an image path as a float ``[3,H,W]`` tensor in [0,1]."""
    from PIL import Image

    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            reason = "is a folder, not an image file" if path.is_dir() else "does not exist"
            raise InvalidInputError(f"samples: {str(path)!r} {reason}.")
        try:
            with Image.open(path) as opened:
                item = opened.convert("RGB")
        except OSError as error:
            raise InvalidInputError(f"samples: cannot read {str(path)!r} as an image ({error}).") from error
    if not isinstance(item, Image.Image):
        raise InvalidInputError(
            f"samples: expected a tensor, PIL image or path, got {type(item).__name__}."
        )
    array = np.asarray(item.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def check_pixel_tensor(samples: Tensor, *, video: bool = False) -> Tensor:
    """Check dtype, rank, channels and range of an image or video batch."""
    layout = "[B,T,3,H,W]" if video else "[B,3,H,W]"
    rank = 5 if video else 4
    if samples.dtype == torch.uint8:
        raise InvalidInputError(
            f"samples: got a uint8 tensor; rewards take float {layout} in [0,1]. "
            "Fix: pass `samples.float() / 255`."
        )
    if not samples.is_floating_point():
        raise InvalidInputError(f"samples: got dtype {samples.dtype}; pass a float tensor {layout} in [0,1].")
    if samples.ndim != rank:
        hint = " Fix: add the batch dimension with `samples.unsqueeze(0)`." if samples.ndim == rank - 1 else ""
        raise InvalidInputError(f"samples: expected {layout}, got shape {tuple(samples.shape)}.{hint}")
    if samples.shape[-3] != 3:
        raise InvalidInputError(
            f"samples: expected 3 colour channels at dim {samples.ndim - 3} of {layout}, "
            f"got shape {tuple(samples.shape)}. Fix: channels-last input needs `.permute(0, 3, 1, 2)`."
        )
    if samples.numel():
        # NaN pixels pass (the reward turns them into a masked NaN score); inf is out of range.
        low, high = (v.item() for v in torch.aminmax(samples.detach().nan_to_num(0.5, math.inf, -math.inf)))
        if math.isinf(low) or math.isinf(high):
            raise InvalidInputError(
                "samples: contains infinite values; rewards take [0,1]. "
                "Fix: check the decoder's output (fp16 overflow is the usual cause)."
            )
        if high > 1 + RANGE_TOLERANCE:
            raise InvalidInputError(
                f"samples: values reach {high:.3g}, but rewards take [0,1]. "
                "Fix: 0-255 images need `samples / 255`."
            )
        if low < -RANGE_TOLERANCE:
            raise InvalidInputError(
                f"samples: values reach {low:.3g}, but rewards take [0,1]. "
                "Fix: [-1,1] images (a VAE's output) need `(samples + 1) / 2`, then `.clamp(0, 1)`."
            )
    return samples


def as_image_batch(samples) -> Tensor | list[Tensor]:
    """A checked ``[B,3,H,W]`` tensor, or a list of ``[1,3,H,W]`` tensors when sizes differ."""
    if isinstance(samples, Tensor):
        return check_pixel_tensor(samples)
    if not isinstance(samples, Sequence) or isinstance(samples, str):
        samples = [samples]
    if len(samples) == 0:
        raise InvalidInputError("samples: got an empty batch.")
    images = []
    for item in samples:  # a list item may be one image [3,H,W] or a batch [N,3,H,W]
        if isinstance(item, Tensor):
            images.extend(check_pixel_tensor(item if item.ndim == 4 else item.unsqueeze(0)).split(1))
        else:
            images.append(load_image(item).unsqueeze(0))
    if len({tuple(image.shape[1:]) for image in images}) == 1:
        return torch.cat(images)
    return images


def as_video_batch(samples) -> Tensor:
    if not isinstance(samples, Tensor):
        raise InvalidInputError("samples: video rewards take a float tensor [B,T,3,H,W] in [0,1].")
    return check_pixel_tensor(samples, video=True)


def as_text_batch(samples) -> list:
    if isinstance(samples, str):
        return [samples]
    if not isinstance(samples, Sequence) or not all(isinstance(s, (str, list)) for s in samples):
        raise InvalidInputError(
            "samples: text rewards take a list of strings or of chat-message lists, "
            f"got {type(samples).__name__}."
        )
    return list(samples)


def as_prompts(prompts, batch_size: int, *, required: bool) -> list[str] | None:
    """One prompt per sample; a single string is repeated for the whole batch."""
    if prompts is not None and not isinstance(prompts, (str, Sequence)):
        raise InvalidInputError(f"prompts: expected a string or a list of strings, got {type(prompts).__name__}.")
    if prompts is None:
        if required:
            raise InvalidInputError(
                "prompts: this reward scores samples against their prompt; pass `prompts=` "
                "(one string for the batch, or one per sample)."
            )
        return None
    if isinstance(prompts, str):
        return [prompts] * batch_size
    prompts = list(prompts)
    if len(prompts) != batch_size:
        raise InvalidInputError(
            f"prompts: got {len(prompts)} prompts for {batch_size} samples. "
            "Fix: pass one prompt per sample, or a single string for all of them."
        )
    if not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError("prompts: every prompt must be a string.")
    return prompts
