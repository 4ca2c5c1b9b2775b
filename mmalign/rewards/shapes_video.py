"""The shapes video world's proxy reward, with VideoReward's three heads, so that per-head weights
(Flow-NRG's) mean the same on both:

- ``VQ`` (visual quality): a frame reward's score of each frame for the caption's object ("a red
  circle" of "a red circle moving left"), averaged over frames. The frame reward is the variant:
  ``shapes-object`` by default (the probability that the named colour draws the named shape), or
  any image reward by name, such as ``shapes-video-reward:shapes-clip`` for shapes-clip's cosine,
  which ranks the clips of one shapes-video caption no better than chance (README);
- ``MQ`` (motion quality): how far the object moves, up to the world's typical travel, less how
  unevenly: ``min(‖c_T − c_1‖ / 0.40, 1) − mean_t ‖c_{t+1} − 2c_t + c_{t−1}‖ / 0.2``;
- ``TA`` (text alignment): the object's travel along the named direction, less its travel across
  it, over the world's typical travel: ``(d·u − |d×u|) / 0.40``, clipped to [−1, 1].

``c_t`` is the soft centroid of frame t's pixels near the named colour (any saturated colour when
the caption names none), weighted by ``exp(−‖pixel − colour‖² / 2τ²)``, so every head is
differentiable in the pixels. The reward is their sum, as VideoReward's is. A caption outside the
video grammar gives NaN and a False mask.

A proxy, like shapes-clip: hand-made, hackable, and never the judge; Video ShapesEval
(:mod:`mmalign.shapes.video_oracle`) is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard

TRAVEL = 0.40  # the lower end of a clip's travel (shapes.video.SPEED × 8 steps between 9 frames)
JERK = 0.2  # a shuffled clip scores about −2, a smooth one about 0.9
TAU = 0.15  # colour distance (RGB in [0,1]) at which membership falls to e^-1/2; grey backgrounds weigh ~1e-7
SHAPES_VIDEO_SPEC = RewardSpec(modality="video", differentiable=True, needs_prompt=True, output_kind="score")


def colour_membership(images: Tensor, colours: Tensor, tau: float = TAU) -> Tensor:
    """``[...,1,H,W]``: how near each pixel of ``images [...,3,H,W]`` is to its colour ``[...,3]``,
    ``exp(−‖pixel − colour‖² / 2τ²)``."""
    distance = ((images - colours[..., None, None]) ** 2).sum(-3, keepdim=True)
    return torch.exp(-distance / (2 * tau**2))


def soft_centroids(videos: Tensor, colour: Tensor | None) -> Tensor:
    """``[B,T,2]`` (x, y) in [0,1], x right and y down, of each frame's colour mass."""
    if colour is None:  # any colour: saturation, the max minus the min channel
        weight = (videos.amax(2) - videos.amin(2)).clamp(min=0) ** 2
    else:
        weight = colour_membership(videos, colour.reshape(-1, 1, 3)).squeeze(2)
    height, width = videos.shape[-2:]
    ys = (torch.arange(height, device=videos.device, dtype=videos.dtype) + 0.5) / height
    xs = (torch.arange(width, device=videos.device, dtype=videos.dtype) + 0.5) / width
    mass = weight.sum((-2, -1)) + 1e-6
    x = (weight * xs).sum((-2, -1)) / mass
    y = (weight * ys.view(-1, 1)).sum((-2, -1)) / mass
    return torch.stack([x, y], -1)


class ShapesVideoReward(Reward):
    """VQ, MQ and TA of shapes-world clips ``[B,T,3,H,W]`` for their motion captions."""

    def __init__(self, frame_reward: Reward, spec: RewardSpec = SHAPES_VIDEO_SPEC, name: str = "shapes-video-reward"):
        super().__init__(spec, name)
        self.frame_reward = frame_reward
        self.freeze()

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, *, device: str | None = None) -> ShapesVideoReward:
        from .registry import load_reward

        frame_reward = variant or card.default_variant
        name = card.name if frame_reward == card.default_variant else f"{card.name}:{frame_reward}"
        return cls(load_reward(frame_reward, device=device or "cpu"), card.spec(), name)

    def forward(self, videos: Tensor, prompts: list[str]) -> RewardOutput:
        from ..shapes.grammar import UnjudgeablePromptError
        from ..shapes.scenes import RGB
        from ..shapes.video import DIRECTIONS, parse_motion_prompt

        batch, frames = videos.shape[:2]
        if frames < 3:
            raise InvalidInputError(f"samples: clips of {frames} frame(s); motion quality needs at least 3.")
        parsed = []
        for prompt in prompts:
            try:
                parsed.append(parse_motion_prompt(prompt))
            except UnjudgeablePromptError:
                parsed.append(None)
        judged = torch.tensor([p is not None for p in parsed], device=videos.device)
        objects = [f"a {p.colour + ' ' if p.colour else ''}{p.shape}" if p else "a shape" for p in parsed]
        flat = videos.flatten(0, 1)
        vq = self.frame_reward(flat, [o for o in objects for _ in range(frames)]).reward.view(batch, frames).mean(1)
        centroids = torch.stack([
            soft_centroids(video[None], None if p is None or p.colour is None else
                           torch.tensor(RGB[p.colour], dtype=video.dtype, device=video.device) / 255)[0]
            for video, p in zip(videos, parsed)])  # [B,T,2]
        travel = centroids[:, -1] - centroids[:, 0]
        jerk = (centroids[:, 2:] - 2 * centroids[:, 1:-1] + centroids[:, :-2]).norm(dim=-1).mean(1)
        mq = (travel.norm(dim=-1) / TRAVEL).clamp(max=1) - jerk / JERK
        units = torch.tensor([DIRECTIONS[p.direction] if p else (1.0, 0.0) for p in parsed], dtype=videos.dtype,
                             device=videos.device)
        along = (travel * units).sum(-1)
        across = (travel[:, 0] * units[:, 1] - travel[:, 1] * units[:, 0]).abs()
        ta = ((along - across) / TRAVEL).clamp(-1, 1)
        heads = {"VQ": vq.float(), "MQ": mq.float(), "TA": ta.float()}
        return RewardOutput(reward=sum(heads.values()), heads=heads, mask=judged)
