"""shapes-object: a small CNN that says which shape a colour draws in a frame, trained on renders.

Each example is one frame of a training clip and one colour; the target is the shape drawn in that
colour, or ``none``. Hard negatives teach it what is not a clean shape:

- **morphs**: an object drawn along the blend ``(1 − m)·d_A + m·d_B`` of the signed distance
  fields of its shape A and another shape B (Quilez's 2-D distance functions). Part-way
  (``m`` in :data:`MORPH_NEGATIVE`) it is neither shape and the target is ``none``; a slight blend
  (``m`` below :data:`MORPH_TOLERATED`) is still A, as a small generator's wobble is;
- **gone**: the moving object left out of the frame;
- **other colours**: a colour absent from the frame, or the distractor's, so the mover's shape is
  never read off a colour it is not drawn in.

Frames are blurred and noised like a generator's samples (:func:`~mmalign.shapes.training.degrade`)
before the colour membership is taken. The labels come from the renderer, never from Video
ShapesEval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..rewards.shapes_object import CLASSES, CONFIG_FILENAME, WEIGHTS_FILENAME, ShapeOfColourNet, palette
from ..rewards.shapes_video import colour_membership
from ..storage import atomic_write
from .grammar import COLOURS, SHAPES
from .scenes import RGB, SUPERSAMPLE, _background
from .training import Stopwatch, degrade, load_checkpoint, run_steps, save_checkpoint
from .video import clip_for, motion_prompts_for

DEFAULTS = {"steps": 3000, "batch_size": 128, "lr": 2e-3, "train_frames": 40_000, "seed": 0, "width": 32}
MORPH_PROBABILITY, MORPH_NEGATIVE = 0.35, (0.3, 0.7)
WOBBLE_PROBABILITY, MORPH_TOLERATED = 0.3, 0.12
GONE_PROBABILITY = 0.1
OWN_COLOUR, DISTRACTOR_COLOUR = 0.7, 0.15  # the rest: any colour, usually one that is absent


def signed_distance(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Signed distance (negative inside) to the renderer's ``shape`` of half-extent ``r`` at (cx, cy)."""
    x, y = x - cx, y - cy
    if shape == "circle":
        return np.hypot(x, y) - r
    if shape == "square":
        qx, qy = np.abs(x) - r, np.abs(y) - r
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    corners = [(0.0, -r), (r, r), (-r, r)]  # upright, clockwise with y down
    distance, inside = np.full(x.shape, np.inf), np.ones(x.shape, bool)
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1]):
        ex, ey, wx, wy = bx - ax, by - ay, x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
        distance = np.minimum(distance, np.hypot(wx - ex * t, wy - ey * t))
        inside &= ex * wy - ey * wx >= 0
    return np.where(inside, -distance, distance)


def render_morphs(objects: list[tuple], background, image_size: int = 32) -> np.ndarray:
    """``float [H,W,3]`` in [0,1] of ``(shape, other_shape, mix, colour, x, y, size)`` objects,
    supersampled like :func:`mmalign.shapes.scenes.render`."""
    side = image_size * SUPERSAMPLE
    y, x = (np.mgrid[0:side, 0:side] + 0.5) / side
    canvas = _background(background, side)
    for shape, other, mix, colour, cx, cy, size in objects:
        field = (1 - mix) * signed_distance(shape, x, y, cx, cy, size) + mix * signed_distance(other, x, y, cx, cy, size)
        canvas[field < 0] = RGB[colour]
    return canvas.reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE, 3).mean((1, 3)) / 255


def make_examples(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` frames ``[N,3,32,32]``, the colour each is asked about and the class it draws in it."""
    rng = np.random.default_rng([seed, 1])
    prompts = motion_prompts_for("train")
    frames, colours, labels = [], [], []
    for _ in range(count):
        clip = clip_for(prompts[rng.integers(len(prompts))], rng)
        scene = clip.scenes[rng.integers(len(clip.scenes))]
        objects = []
        for index, obj in enumerate(scene.objects):
            other, mix, draw = str(rng.choice([s for s in SHAPES if s != obj.shape])), 0.0, rng.random()
            if index == clip.mover and draw < MORPH_PROBABILITY:
                mix = float(rng.uniform(*MORPH_NEGATIVE))
            elif draw > 1 - WOBBLE_PROBABILITY:
                mix = float(rng.uniform(0, MORPH_TOLERATED))
            objects.append((obj.shape, other, mix, obj.colour, obj.x, obj.y, obj.size))
        mover = objects[clip.mover]
        if rng.random() < GONE_PROBABILITY:
            objects.remove(mover)
        frames.append(render_morphs(objects, scene.background))
        drawn = {colour: shape if mix <= MORPH_TOLERATED else "none" for shape, _, mix, colour, *_ in objects}
        others = [obj[3] for obj in objects if obj is not mover]
        ask = rng.random()
        if ask < OWN_COLOUR:
            colour = mover[3]
        elif ask < OWN_COLOUR + DISTRACTOR_COLOUR and others:
            colour = str(rng.choice(others))
        else:
            colour = str(rng.choice(COLOURS))
        colours.append(COLOURS.index(colour))
        labels.append(CLASSES.index(drawn.get(colour, "none")))
    frames = torch.tensor(np.stack(frames), dtype=torch.float32).permute(0, 3, 1, 2)
    return frames, torch.tensor(colours), torch.tensor(labels)


def train(output_dir: Path, steps: int, seed: int, resume: bool, batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], train_frames: int = DEFAULTS["train_frames"], width: int = DEFAULTS["width"],
          log=print) -> dict:
    torch.manual_seed(seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    net = ShapeOfColourNet(width)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng([seed, 0])
    generator = torch.Generator().manual_seed(seed)
    resume_state = dict(total_steps=steps, rng=rng, generator=generator, model=net, optimizer=optimizer)
    start = load_checkpoint(output_dir, **resume_state) if resume else 0
    watch = Stopwatch()
    frames, colours, labels = make_examples(train_frames, seed)
    log(f"rendered {len(frames)} training frames in {watch}")
    colours_rgb = palette()

    def compute_loss(step: int) -> torch.Tensor:
        index = torch.from_numpy(rng.choice(len(frames), batch_size, replace=False))
        batch = degrade(frames[index], generator, max_noise=0.08, max_blur=1.0)
        return F.cross_entropy(net(colour_membership(batch, colours_rgb[colours[index]])), labels[index])

    net.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=lr, warmup=min(100, steps // 10 + 1),
                       desc="shapes-object", checkpoint=lambda step: save_checkpoint(output_dir, step, **resume_state))
    net.eval()
    weights = {k: v.half().contiguous() for k, v in net.state_dict().items()}
    atomic_write(output_dir / WEIGHTS_FILENAME, lambda tmp: save_file(weights, tmp))
    atomic_write(output_dir / CONFIG_FILENAME, lambda tmp: Path(tmp).write_text(json.dumps(net.config)))
    log(f"trained {steps - start} steps in {watch}; saved {output_dir}")
    return {"steps": steps, "minutes": round(watch.minutes, 1), "losses": losses}
