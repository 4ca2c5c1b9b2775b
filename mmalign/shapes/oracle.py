"""ShapesEval: the gold judge of the shapes world, in the manner of GenEval.

A deterministic detector reads coloured objects off the pixels: saturation and hue segment them
from any grey background, connected components separate them, and each component's shape is the
template (circle, square or upright triangle, drawn at the component's place and size, sharp or
blurred) that best matches its soft mask by intersection over union. The same symbolic
rules that define the generator's ground truth then decide whether the detections satisfy the
prompt. It is an evaluation oracle: never use it as a training reward.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InvalidInputError
from .grammar import CATEGORIES, COLOURS, Prompt, UnjudgeablePromptError, parse_prompt

HUE_RANGES = {"red": ((0, 20), (335, 360)), "yellow": ((38, 75),), "green": ((90, 170),), "blue": ((195, 255),)}
MIN_SATURATION, MIN_VALUE = 0.45, 0.35
MIN_AREA_FRACTION = 0.006  # components smaller than this share of the image are noise
TEMPLATE_BLURS = (0.0, 0.8)  # pixels; the models' samples are softer than the renders
TEMPLATE_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Detection:
    shape: str
    colour: str
    x: float  # centroid, normalised to [0, 1], x to the right
    y: float  # y down
    area: float  # fraction of the image


def hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value in [0, 1], of a uint8 ``[H,W,3]`` image."""
    rgb = image.astype(np.float32) / 255
    high, low = rgb.max(-1), rgb.min(-1)
    delta = high - low
    safe = np.where(delta == 0, 1, delta)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.select([high == r, high == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) * 60
    saturation = np.where(high == 0, 0, delta / np.where(high == 0, 1, high))
    return hue, saturation, high


def colour_map(image: np.ndarray) -> np.ndarray:
    """Per pixel, the index into :data:`COLOURS` of its colour, or -1 for background."""
    hue, saturation, value = hsv(image)
    labels = np.full(hue.shape, -1, dtype=np.int64)
    foreground = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    for index, colour in enumerate(COLOURS):
        in_range = np.zeros_like(foreground)
        for low, high in HUE_RANGES[colour]:
            in_range |= (hue >= low) & (hue < high)
        labels[foreground & in_range] = index
    return labels


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a boolean mask, as lists of (row, col) indices."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, pixels = [start], []
        seen[start] = True
        while stack:
            row, col = stack.pop()
            pixels.append((row, col))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < height and 0 <= c < width and mask[r, c] and not seen[r, c]:
                        seen[r, c] = True
                        stack.append((r, c))
        components.append(np.array(pixels))
    return components


def soft_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """How much each pixel looks like ``colour``, in [0, 1]; antialiased edges count in part."""
    hue, saturation, value = hsv(image)
    in_range = np.zeros(hue.shape, dtype=bool)
    for low, high in HUE_RANGES[colour]:
        in_range |= (hue >= low - 10) & (hue < high + 10)
    strength = np.clip((saturation - 0.15) / 0.4, 0, 1) * np.clip((value - 0.1) / 0.4, 0, 1)
    return strength * in_range


def shape_coverage(shape: str, cx: float, cy: float, r: float, height: int, width: int) -> np.ndarray:
    """The fraction of each pixel that a shape of half-extent ``r`` centred at (cx, cy) covers."""
    steps = (np.arange(TEMPLATE_SUPERSAMPLE) + 0.5) / TEMPLATE_SUPERSAMPLE
    ys = (np.arange(height)[:, None] + steps[None, :]).reshape(-1)[:, None] - cy
    xs = (np.arange(width)[:, None] + steps[None, :]).reshape(-1)[None, :] - cx
    if shape == "circle":
        inside = xs**2 + ys**2 <= r**2
    elif shape == "square":
        inside = (np.abs(xs) <= r) & (np.abs(ys) <= r)
    else:  # apex at (0, -r), base from (-r, r) to (r, r)
        inside = (ys <= r) & (np.abs(xs) <= (ys + r) / 2)
    return inside.reshape(height, TEMPLATE_SUPERSAMPLE, width, TEMPLATE_SUPERSAMPLE).mean(axis=(1, 3))


def gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return array
    offsets = np.arange(-3, 4)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(array, 3)
    rows = sum(w * padded[3 + o : padded.shape[0] - 3 + o, :] for o, w in zip(offsets, kernel))
    return sum(w * rows[:, 3 + o : rows.shape[1] - 3 + o] for o, w in zip(offsets, kernel))


# Area of each template per r² (half-extent squared) and its centroid's offset below the box
# centre per r: a shape is fitted to a blob's soft mass and centroid, which blur and noise move
# little, rather than to its thresholded outline, which they move a lot.
AREA_PER_R2 = {"circle": np.pi, "square": 4.0, "triangle": 2.0}
CENTROID_DROP_PER_R = {"circle": 0.0, "square": 0.0, "triangle": 1 / 3}
FIT_SCALES = (0.85, 1.0, 1.15)


def classify_shape(observed: np.ndarray) -> str:
    """The template shape whose best fit to the soft mask ``observed`` has the highest soft IoU.

    Each shape is fitted by matching its area to the mask's mass and its centroid to the mask's
    centroid, then tried a little smaller and larger, sharp and blurred.
    """
    mass = observed.sum()
    rows, cols = np.indices(observed.shape)
    cy, cx = (rows * observed).sum() / mass + 0.5, (cols * observed).sum() / mass + 0.5
    best_shape, best_score = "circle", -1.0
    for shape in ("circle", "square", "triangle"):
        base_r = np.sqrt(mass / AREA_PER_R2[shape])
        for scale in FIT_SCALES:
            r = base_r * scale
            coverage = shape_coverage(shape, cx, cy - CENTROID_DROP_PER_R[shape] * r, r, *observed.shape)
            for sigma in TEMPLATE_BLURS:
                template = gaussian_blur(coverage, sigma)
                score = np.minimum(template, observed).sum() / np.maximum(template, observed).sum()
                if score > best_score:
                    best_shape, best_score = shape, score
    return best_shape


def component_mask(pixels: np.ndarray, soft: np.ndarray, others: np.ndarray, pad: int = 3) -> np.ndarray:
    """The soft mask in a window around a component, with other same-colour components removed."""
    rows, cols = pixels[:, 0], pixels[:, 1]
    window = (slice(max(rows.min() - pad, 0), rows.max() + 1 + pad), slice(max(cols.min() - pad, 0), cols.max() + 1 + pad))
    return soft[window] * ~others[window]


def detect(image: np.ndarray) -> list[Detection]:
    """The coloured objects in a uint8 ``[H,W,3]`` image."""
    labels = colour_map(image)
    height, width = labels.shape
    min_pixels = max(3, int(round(MIN_AREA_FRACTION * height * width)))
    detections = []
    for index, colour in enumerate(COLOURS):
        all_components = connected_components(labels == index)
        components = [c for c in all_components if len(c) >= min_pixels]
        soft = soft_mask(image, colour) if components else None
        for pixels in components:
            others = labels == index
            others[pixels[:, 0], pixels[:, 1]] = False
            detections.append(Detection(
                shape=classify_shape(component_mask(pixels, soft, others)), colour=colour,
                x=(pixels[:, 1].mean() + 0.5) / width, y=(pixels[:, 0].mean() + 0.5) / height,
                area=len(pixels) / (height * width),
            ))
    return detections


def in_relation(first, second, relation: str) -> bool:
    """Whether ``first`` is ``relation`` ``second``: the offset points the right way along the
    relation's axis, and that axis dominates the other."""
    dx, dy = second.x - first.x, second.y - first.y
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along > 0 and along > abs(across)


def satisfies(objects, prompt: Prompt) -> bool:
    """Whether objects (ground-truth scene objects or detections) satisfy the prompt.

    single_object: the shape is present; colour: the shape is present and every one of it has the
    colour; counting: exactly n of that colour and shape; two_object and colour_attribution: both
    present; position: some pair of matching objects stands in the relation.
    """

    def matching(thing):
        return [o for o in objects if o.shape == thing.shape and (thing.colour is None or o.colour == thing.colour)]

    first = prompt.things[0]
    if prompt.category == "single_object":
        return bool(matching(first))
    if prompt.category == "colour":
        same_shape = [o for o in objects if o.shape == first.shape]
        return bool(same_shape) and all(o.colour == first.colour for o in same_shape)
    if prompt.category == "counting":
        return len(matching(first)) == first.count
    second = prompt.things[1]
    if prompt.category == "position":
        return any(in_relation(a, b, prompt.relation) for a in matching(first) for b in matching(second) if a is not b)
    return any(a is not b for a in matching(first) for b in matching(second))


@dataclass
class Verdict:
    prompt: str
    category: str | None
    passed: bool | None  # None: the prompt is outside the grammar
    detections: list[Detection] = field(default_factory=list)
    reason: str = ""


@dataclass
class EvalReport:
    """Accuracy per category and overall (the mean over categories, as GenEval reports it)."""

    accuracy: dict[str, float]
    counts: dict[str, int]
    overall: float
    unjudged: list[str]

    def table(self) -> str:
        lines = [f"{'category':<20} {'n':>5} {'accuracy':>9}"]
        lines += [f"{c:<20} {self.counts[c]:>5} {self.accuracy[c]:>9.3f}" for c in self.accuracy]
        lines.append(f"{'overall':<20} {sum(self.counts.values()):>5} {self.overall:>9.3f}")
        if self.unjudged:
            lines.append(f"({len(self.unjudged)} prompt(s) outside the grammar were not judged)")
        return "\n".join(lines)


class ShapesEval:
    """Judge images against shapes-world prompts; ``evaluate`` reports GenEval-style accuracy."""

    def judge(self, image: np.ndarray, prompt: str) -> Verdict:
        try:
            parsed = parse_prompt(prompt)
        except UnjudgeablePromptError as error:
            return Verdict(prompt, None, None, reason=str(error))
        detections = detect(_as_uint8(image))
        return Verdict(prompt, parsed.category, satisfies(detections, parsed), detections)

    def evaluate(self, images, prompts: list[str]) -> EvalReport:
        if len(images) != len(prompts):
            raise UnjudgeablePromptError(f"prompts: got {len(prompts)} prompts for {len(images)} images.")
        results: dict[str, list[bool]] = defaultdict(list)
        unjudged = []
        for image, prompt in zip(images, prompts):
            verdict = self.judge(image, prompt)
            if verdict.passed is None:
                unjudged.append(verdict.reason)
            else:
                results[verdict.category].append(verdict.passed)
        accuracy = {c: float(np.mean(results[c])) for c in CATEGORIES if results[c]}
        overall = float(np.mean(list(accuracy.values()))) if accuracy else float("nan")
        return EvalReport(accuracy, {c: len(results[c]) for c in accuracy}, overall, unjudged)


def _as_uint8(image) -> np.ndarray:
    """A uint8 ``[H,W,3]`` array from a PIL image, a uint8 ``[H,W,3]`` array, or a ``[3,H,W]``
    tensor (uint8, or float in [0,1]) as the pipelines return them."""
    if hasattr(image, "detach"):  # a torch tensor: channels first
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidInputError(f"images: expected tensors [3,H,W], got shape {tuple(image.shape)}.")
        image = image.detach().cpu()
        if image.is_floating_point():
            image = (image.float().clamp(0, 1) * 255).round()
        image = image.to(torch.uint8).permute(1, 2, 0).numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InvalidInputError(f"images: expected arrays [H,W,3], got shape {image.shape}.")
    if image.dtype != np.uint8:
        if image.max() > 1.0 + 1e-3:
            raise InvalidInputError("images: float arrays must lie in [0,1]; pass uint8 for 0-255 values.")
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image[..., :3]
