"""Scenes of the shapes world and their rendering, deterministic from a seed.

A :class:`Scene` is a list of :class:`ShapeObject` on a :class:`Background`, in coordinates
normalised to [0, 1] (x to the right, y down), so one scene renders at 32 or 64 pixels alike.
A video clip will be a sequence of scenes whose objects move; :func:`render` draws one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .grammar import COLOURS, HELD_OUT_PAIRS, SHAPES, Prompt

# Saturated colours, far apart in hue, so a detector tells them apart after blur and noise.
RGB = {"red": (225, 35, 35), "green": (40, 195, 60), "blue": (45, 85, 235), "yellow": (235, 215, 40)}
SUPERSAMPLE = 4
MIN_SIZE, MAX_SIZE = 0.12, 0.17  # half-extent of an object, as a fraction of the image side
MARGIN = 0.03


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    x: float
    y: float
    size: float  # half-extent

    def overlaps(self, other: ShapeObject, gap: float = 0.08) -> bool:
        return max(abs(self.x - other.x), abs(self.y - other.y)) < self.size + other.size + gap


@dataclass(frozen=True)
class Background:
    kind: str  # "plain" or "textured"
    rgb: tuple[int, int, int]
    seed: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: Background


def _draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, side: int, rgb) -> None:
    cx, cy, r = obj.x * side, obj.y * side, obj.size * side
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    elif obj.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    else:  # an upright triangle filling the same box
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=rgb)


def _background(background: Background, side: int) -> np.ndarray:
    base = np.broadcast_to(np.array(background.rgb, dtype=np.float32), (side, side, 3)).copy()
    if background.kind == "textured":
        rng = np.random.default_rng(background.seed)
        cells = rng.integers(3, 7)
        blotches = rng.uniform(-1, 1, size=(cells, cells, 1)).astype(np.float32)
        blotches = np.asarray(Image.fromarray(((blotches[..., 0] + 1) * 127.5).astype(np.uint8)).resize((side, side), Image.BILINEAR))
        grain = rng.normal(0, 1, size=(side, side, 1)).astype(np.float32)
        # grey texture: the same offset on every channel keeps the saturation low
        base += (blotches[..., None].astype(np.float32) / 127.5 - 1) * 22 + grain * 4
    return np.clip(base, 0, 255)


def render(scene: Scene, image_size: int = 32, colour_jitter: np.ndarray | None = None) -> np.ndarray:
    """The scene as a ``uint8`` array ``[image_size, image_size, 3]``, antialiased by supersampling."""
    side = image_size * SUPERSAMPLE
    canvas = Image.fromarray(_background(scene.background, side).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for index, obj in enumerate(scene.objects):
        rgb = np.array(RGB[obj.colour]) + (colour_jitter[index] if colour_jitter is not None else 0)
        _draw_object(draw, obj, side, tuple(int(v) for v in np.clip(rgb, 0, 255)))
    return np.asarray(canvas.resize((image_size, image_size), Image.BOX))


def _random_background(rng: np.random.Generator) -> Background:
    grey = rng.uniform(8, 60)
    tint = rng.uniform(-6, 6, size=3)  # a hint of colour, far below the objects' saturation
    rgb = tuple(int(v) for v in np.clip(grey + tint, 0, 255))
    return Background(kind=str(rng.choice(["plain", "textured"])), rgb=rgb, seed=int(rng.integers(2**31)))


def _free_colour(rng: np.random.Generator, shape: str, held_out_allowed: bool) -> str:
    colours = [c for c in COLOURS if held_out_allowed or (c, shape) not in HELD_OUT_PAIRS]
    return str(rng.choice(colours))


def _place(rng, objects, shape, colour, *, scale=1.0, x_range=(0.0, 1.0), y_range=(0.0, 1.0), tries=200):
    """A random non-overlapping object inside the ranges, or None after ``tries`` attempts."""
    for _ in range(tries):
        size = rng.uniform(MIN_SIZE, MAX_SIZE) * scale
        low, high = size + MARGIN, 1 - size - MARGIN
        x = rng.uniform(max(low, x_range[0]), min(high, x_range[1]))
        y = rng.uniform(max(low, y_range[0]), min(high, y_range[1]))
        candidate = ShapeObject(shape, colour, float(x), float(y), float(size))
        if not any(candidate.overlaps(o) for o in objects):
            return candidate
    return None


def _position_ranges(relation: str, index: int, cross_centre: float) -> dict:
    """Where the ``index``-th object of a position prompt goes: the two sides of the relation's
    axis, and a shared band across it, so the relation dominates the offset."""
    sides = [(0.0, 0.45), (0.55, 1.0)]
    if relation in ("right of", "below"):
        sides.reverse()
    cross = (cross_centre - 0.12, cross_centre + 0.12)
    if relation in ("left of", "right of"):
        return {"x_range": sides[index], "y_range": cross}
    return {"x_range": cross, "y_range": sides[index]}


def scene_for(prompt: Prompt, rng: np.random.Generator, *, held_out_allowed: bool = True) -> Scene:
    """A random scene that satisfies ``prompt``; free colours avoid held-out pairs unless allowed."""
    wanted = [(thing, index) for index, thing in enumerate(prompt.things) for _ in range(thing.count)]
    scale = 1 / (1 + 0.1 * (len(wanted) - 1))  # crowded scenes get smaller objects
    for _ in range(50):
        objects: list[ShapeObject] = []
        cross_centre = rng.uniform(0.3, 0.7)
        for thing, index in wanted:
            colour = thing.colour or _free_colour(rng, thing.shape, held_out_allowed)
            ranges = _position_ranges(prompt.relation, index, cross_centre) if prompt.category == "position" else {}
            placed = _place(rng, objects, thing.shape, colour, scale=scale, **ranges)
            if placed is None:
                break
            objects.append(placed)
        else:
            order = rng.permutation(len(objects))  # drawing order carries no meaning
            return Scene(tuple(objects[i] for i in order), _random_background(rng))
    raise RuntimeError(f"could not place the objects of {prompt.text!r}")


__all__ = ["RGB", "Background", "Scene", "ShapeObject", "SHAPES", "render", "scene_for"]
