import io

import numpy as np
import torch
from PIL import Image

from mmalign.rewards import load_reward


def independent_jpeg_kb(array: np.ndarray) -> float:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


def test_sizes_match_pillow_and_signs_are_opposite():
    rng = np.random.default_rng(0)
    arrays = [np.full((32, 32, 3), 128, np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    images = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    expected = torch.tensor([independent_jpeg_kb(a) for a in arrays])
    compressibility = load_reward("jpeg-compressibility")(images).reward
    incompressibility = load_reward("jpeg-incompressibility")(images).reward
    torch.testing.assert_close(incompressibility, expected)
    torch.testing.assert_close(compressibility, -expected)
    assert compressibility[0] > compressibility[1]  # the flat image is the more compressible
    assert not load_reward("jpeg-compressibility").spec.differentiable
