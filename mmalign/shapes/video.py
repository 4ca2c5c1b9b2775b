"""The shapes video world: short captioned clips of one shape moving in a named direction.

Captions read "a red circle moving left" (the colour may be left out: "a circle moving up"), with
directions left, right, up and down. A clip is a sequence of scenes on one background: the named
object travels in a straight line at a steady speed, and in some clips a static object of another
shape and colour stands by as a distractor. :func:`render_clip` draws it frame by frame with the
image world's renderer.

Held-out split: every caption whose colour and shape form a held-out pair of the image world (blue
triangle, yellow circle), and a fixed fifth of the other (colour, shape, direction) triples, chosen
by hash, so no training clip shows them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .grammar import COLOURS, HELD_OUT_FRACTION, HELD_OUT_PAIRS, SHAPES, UnjudgeablePromptError
from .scenes import MARGIN, MAX_SIZE, MIN_SIZE, Scene, ShapeObject, _random_background, render

DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # y points down
NUM_FRAMES = 9  # 4k+1, as Wan-style video VAEs expect (their first frame is encoded alone)
SPEED = (0.05, 0.07)  # of the image side per frame: 0.40–0.56 over 9 frames
DISTRACTOR_PROBABILITY = 0.3
_PATTERN = re.compile(rf"^a (?:(?P<colour>{'|'.join(COLOURS)}) )?(?P<shape>{'|'.join(SHAPES)}) moving "
                      rf"(?P<direction>{'|'.join(DIRECTIONS)})$")


@dataclass(frozen=True)
class MotionPrompt:
    """A parsed video caption: ``shape`` (of ``colour``, or any colour when None) moving ``direction``."""

    shape: str
    direction: str
    colour: str | None = None

    @property
    def text(self) -> str:
        return f"a {self.colour + ' ' if self.colour else ''}{self.shape} moving {self.direction}"

    @property
    def split(self) -> str:
        if (self.colour, self.shape) in HELD_OUT_PAIRS:
            return "heldout"
        if self.colour is None:
            return "train"  # too few colourless captions to hold any out
        digest = int(hashlib.sha256(self.text.encode()).hexdigest(), 16)
        return "heldout" if digest % HELD_OUT_FRACTION == 0 else "train"


def parse_motion_prompt(text: str) -> MotionPrompt:
    match = _PATTERN.match(" ".join(str(text).lower().split()).rstrip("."))
    if match is None:
        raise UnjudgeablePromptError(f"prompt {text!r} is outside the shapes video grammar: "
                                     "'a [red|green|blue|yellow] circle|square|triangle moving left|right|up|down'.")
    return MotionPrompt(match["shape"], match["direction"], match["colour"])


@lru_cache(maxsize=1)
def all_motion_prompts() -> tuple[MotionPrompt, ...]:
    return tuple(MotionPrompt(shape, direction, colour) for colour in (None, *COLOURS) for shape in SHAPES
                 for direction in DIRECTIONS)


def motion_prompts_for(split: str) -> tuple[MotionPrompt, ...]:
    if split not in ("train", "heldout"):
        raise UnjudgeablePromptError(f"split: {split!r} is neither 'train' nor 'heldout'.")
    return tuple(p for p in all_motion_prompts() if p.split == split)


@dataclass(frozen=True)
class Clip:
    """The scenes of a clip, frame by frame; ``mover`` indexes the moving object in each scene."""

    prompt: MotionPrompt
    scenes: tuple[Scene, ...]
    mover: int = 0


def clip_for(prompt: MotionPrompt, rng: np.random.Generator, num_frames: int = NUM_FRAMES) -> Clip:
    """A random clip that satisfies ``prompt``: the object crosses ``speed·(num_frames−1)`` of the
    image along the direction, inside the margins, at a random place across it."""
    dx, dy = DIRECTIONS[prompt.direction]
    colour = prompt.colour or str(rng.choice([c for c in COLOURS if (c, prompt.shape) not in HELD_OUT_PAIRS]))
    size = float(rng.uniform(MIN_SIZE, MAX_SIZE))
    travel = float(rng.uniform(*SPEED)) * (num_frames - 1)
    low, high = size + MARGIN, 1 - size - MARGIN
    start_along = rng.uniform(low, high - travel)
    across = float(rng.uniform(low, high))
    along = [start_along + travel * t / (num_frames - 1) for t in range(num_frames)]
    if dx < 0 or dy < 0:  # moving towards 0: run the same path backwards
        along = [low + high - a for a in along]
    path = [(a, across) if dx else (across, a) for a in along]
    movers = [ShapeObject(prompt.shape, colour, float(x), float(y), size) for x, y in path]
    background = _random_background(rng)
    others = _distractor(rng, prompt.shape, colour, movers) if rng.random() < DISTRACTOR_PROBABILITY else None
    scenes = tuple(Scene((mover,) if others is None else (mover, others), background) for mover in movers)
    return Clip(prompt, scenes)


def _distractor(rng, shape: str, colour: str, movers: list[ShapeObject]) -> ShapeObject | None:
    """A static object of another shape and colour clear of the mover's whole path, if one fits."""
    for _ in range(100):
        other_shape = str(rng.choice([s for s in SHAPES if s != shape]))
        other_colour = str(rng.choice([c for c in COLOURS if c != colour and (c, other_shape) not in HELD_OUT_PAIRS]))
        size = float(rng.uniform(MIN_SIZE, MAX_SIZE))
        x, y = rng.uniform(size + MARGIN, 1 - size - MARGIN, size=2)
        candidate = ShapeObject(other_shape, other_colour, float(x), float(y), size)
        if not any(candidate.overlaps(mover) for mover in movers):
            return candidate
    return None


def render_clip(clip: Clip, image_size: int = 32) -> np.ndarray:
    """The clip as ``uint8 [T, image_size, image_size, 3]``."""
    return np.stack([render(scene, image_size) for scene in clip.scenes])


def sample_clip(index: int, split: str = "train", image_size: int = 32, seed: int = 0,
                num_frames: int = NUM_FRAMES) -> tuple[np.ndarray, str]:
    """The ``index``-th clip of ``split`` and its caption, the same for the same arguments."""
    prompts = motion_prompts_for(split)
    rng = np.random.default_rng([seed, index, 0 if split == "train" else 1])
    prompt = prompts[int(rng.integers(len(prompts)))]
    return render_clip(clip_for(prompt, rng, num_frames), image_size), prompt.text
