"""Videos to and from files: animated GIF through Pillow (no extra), MP4 through imageio-ffmpeg
(``pip install mmalign[video]``), and a frame strip PNG that shows a clip on one page.

Videos are ``[T,3,H,W]`` floats in [0,1], as rewards take them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import InvalidInputError
from .storage import atomic_write

VIDEO_SUFFIXES = (".gif", ".mp4")


def to_uint8_frames(video: Tensor) -> np.ndarray:
    """``[T,H,W,3]`` uint8 of a ``[T,3,H,W]`` video in [0,1], rounded as the preference store rounds."""
    if video.dim() != 4 or video.shape[1] != 3:
        raise InvalidInputError(f"video: expected [T,3,H,W] frames, got shape {tuple(video.shape)}.")
    return (video.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def write_video(video: Tensor, path, fps: int = 8) -> Path:
    """Write ``video`` as a looping GIF or an MP4, chosen by the suffix, atomically."""
    path = Path(path)
    frames = to_uint8_frames(video)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                        duration=round(1000 / fps), loop=0, disposal=1))
    elif path.suffix == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError as error:
            raise InvalidInputError("--format mp4 needs imageio-ffmpeg. Fix: pip install 'mmalign[video]', "
                                    "or write GIF.") from error
        # tiny clips are enlarged by whole pixels to at least 64 a side; H.264 in yuv420p wants even sides
        scale = max(1, -(-64 // min(frames.shape[1:3])))
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")

        def encode(tmp):
            writer = imageio_ffmpeg.write_frames(tmp, (frames.shape[2], frames.shape[1]), fps=fps, codec="libx264",
                                                 pix_fmt_out="yuv420p", macro_block_size=1, output_params=["-f", "mp4"])
            writer.send(None)  # start the encoder
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
            writer.close()

        atomic_write(path, encode)
    else:
        raise InvalidInputError(f"path: {str(path)!r} is not a video file; write {' or '.join(VIDEO_SUFFIXES)}.")
    return path


def read_video(path) -> Tensor:
    """The frames of an animated GIF as ``[T,3,H,W]`` in [0,1]."""
    from PIL import Image, ImageSequence

    path = Path(path)
    if path.suffix != ".gif":
        raise InvalidInputError(f"samples: {str(path)!r}: videos are read from animated GIFs.")
    try:
        with Image.open(path) as opened:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(opened)]
    except OSError as error:
        raise InvalidInputError(f"samples: cannot read {str(path)!r} as a GIF ({error}).") from error
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def frame_strip(video: Tensor, path, scale: int = 4) -> Path:
    """The frames side by side in one PNG, each enlarged ``scale``× with nearest-neighbour pixels."""
    from PIL import Image

    frames = to_uint8_frames(video)
    strip = np.concatenate(list(frames), axis=1).repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    atomic_write(path, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))
    return path
