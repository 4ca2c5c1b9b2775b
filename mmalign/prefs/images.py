"""Images of preference pairs as PNG files named by their content.

A pair's images are saved once, as lossless PNG, under the sha256 of the PNG bytes: the same image
labelled in many pairs is one file, and a file, once written, never changes.
"""

from __future__ import annotations

import hashlib
import io
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from ..errors import InvalidInputError
from ..rewards.inputs import check_pixel_tensor, load_image
from ..storage import atomic_write


@contextmanager
def naming(argument: str):
    """The shared input checks speak of ``samples``; name the caller's argument instead."""
    try:
        yield
    except InvalidInputError as error:
        raise InvalidInputError(str(error).replace("samples:", f"{argument}:", 1)) from error


def as_pil_image(image, argument: str) -> Image.Image:
    """A ``[3,H,W]`` float tensor in [0,1], a PIL image or an image path as an RGB PIL image.

    Tensors are quantised to uint8 (``round(x * 255)``), so a tensor already on the /255 grid
    comes back from the PNG unchanged."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            hint = " Fix: pass one image, e.g. `images[0]`." if image.ndim == 4 else ""
            raise InvalidInputError(f"{argument}: expected one image [3,H,W], got shape {tuple(image.shape)}.{hint}")
        with naming(argument):
            check_pixel_tensor(image.unsqueeze(0))
        if torch.isnan(image).any():
            raise InvalidInputError(f"{argument}: contains NaN pixels; only finite images can be stored.")
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), mode="RGB")
    if isinstance(image, (str, os.PathLike)):
        with naming(argument):
            image = load_image(image)
        return as_pil_image(image, argument)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise InvalidInputError(
        f"{argument}: expected a float tensor [3,H,W] in [0,1], a PIL image or an image path, "
        f"got {type(image).__name__}."
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_content_addressed(data: bytes, folder: Path) -> Path:
    """Write PNG ``data`` as ``folder/<sha256>.png`` unless it is already there; return the path.

    Two processes saving the same image both rename identical bytes into place, so no lock is needed."""
    path = folder / f"{hashlib.sha256(data).hexdigest()}.png"
    if not path.is_file():
        atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))
    return path


def image_tensor_from_bytes(data: bytes) -> torch.Tensor:
    """PNG (or any PIL-readable) bytes as a float ``[3,H,W]`` tensor in [0,1]."""
    with Image.open(io.BytesIO(data)) as opened:
        return load_image(opened)
