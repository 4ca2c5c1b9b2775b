"""How often ShapesEval agrees with the generator's ground truth, on clean and degraded renders.

Each render is judged against its own caption (true) and a hard negative of it (false), so an
oracle that passes everything scores 50%, not 100%. Degradations imitate the models' samples:
Gaussian pixel noise and Gaussian blur (sigmas scaled to 32 px).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from PIL import Image, ImageFilter

from .data import sample
from .grammar import CATEGORIES, hard_negatives
from .oracle import ShapesEval, satisfies

PERTURBATIONS = {"clean": (0.0, 0.0), "noise": (0.04, 0.0), "blur": (0.0, 0.6), "noise+blur": (0.04, 0.6)}


def perturb(image: np.ndarray, noise: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    if blur:
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur * image.shape[0] / 32)))
    if noise:
        image = np.clip(image + rng.normal(0, noise * 255, image.shape), 0, 255).astype(np.uint8)
    return image


def oracle_agreement(renders: int = 2000, image_size: int = 32, split: str = "heldout", seed: int = 1) -> dict:
    """Agreement per perturbation and category over ``renders`` renders (spread over the
    perturbations), each judged on its caption and on one hard negative."""
    oracle = ShapesEval()
    rng = np.random.default_rng(seed)
    hits: dict[tuple[str, str], list[bool]] = defaultdict(list)
    names = list(PERTURBATIONS)
    for index in range(renders):
        image, prompt, scene = sample(index, split=split, image_size=image_size, seed=seed)
        name = names[index % len(names)]
        image = perturb(image, *PERTURBATIONS[name], rng)
        negatives = hard_negatives(prompt, rng)
        for caption in [prompt] + ([negatives[rng.integers(len(negatives))]] if negatives else []):
            agreed = oracle.judge(image, caption.text).passed == satisfies(scene.objects, caption)
            hits[(name, prompt.category)].append(agreed)
    table = {name: {c: float(np.mean(hits[(name, c)])) for c in CATEGORIES if hits[(name, c)]} for name in names}
    overall = float(np.mean([v for values in hits.values() for v in values]))
    return {"renders": renders, "judgements": sum(map(len, hits.values())), "overall": overall, "by_perturbation": table}
