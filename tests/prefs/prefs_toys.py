"""Helpers of the preference tests: images on the 8-bit grid (a PNG round trip must give them back
exactly) and one writer of the many-process test, in a module light enough for a spawned process
to import quickly."""

import torch

from mmalign.prefs import PreferenceStore


def grid_image(seed: int, height: int = 6, width: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=generator) / 255


def add_from_a_process(path: str, worker: int, count: int) -> list[int]:
    store = PreferenceStore(path)
    return [store.add(f"worker {worker}", grid_image(worker * count + i), grid_image(i), "left", annotator=f"w{worker}")
            for i in range(count)]
