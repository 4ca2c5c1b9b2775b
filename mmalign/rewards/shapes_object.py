"""shapes-object: is the named object in the frame, cleanly drawn? The VQ head of shapes-video-reward.

shapes-clip compares a whole frame with a caption. On shapes-video's own samples that cosine
ranks the clips of one caption no better than chance against Video ShapesEval: a distractor lowers
it, and one frame whose object has melted into another shape hardly moves it (README, "Why VQ
reads shapes-object, not shapes-clip"). This reward looks at one colour at a time instead. The
frame's soft membership of the named colour, ``exp(−‖pixel − colour‖² / 2τ²)`` as in
shapes-video-reward's centroids, goes through a small CNN that says what that colour draws: a
circle, a square, a triangle, or none of them (nothing, or a shape part-way into another). The
score is the probability of the named shape; a caption without a colour takes its best colour. The
CNN never sees hue, so held-out colour–shape pairs (a blue triangle) read like any other.

It learnt from renders only, never from the oracle's verdicts (:mod:`mmalign.shapes.train_object`):
hard negatives are shapes morphed part of the way into another, objects gone, and the other
colours of scenes with distractors. A proxy like shapes-clip: hackable, and never the judge.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .checkpoints import load_exact, read_state_dict
from .preprocess import resize_and_crop
from .shapes_video import colour_membership

CLASSES = ("circle", "square", "triangle", "none")
INPUT_SIZE = 32
CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "model.safetensors"


def palette() -> Tensor:
    """``[4,3]``: the shapes world's colours (``grammar.COLOURS`` order) in [0,1]."""
    from ..shapes.grammar import COLOURS
    from ..shapes.scenes import RGB

    return torch.tensor([RGB[c] for c in COLOURS], dtype=torch.float32) / 255


class ShapeOfColourNet(nn.Module):
    """Logits over :data:`CLASSES` of a one-channel colour-membership map ``[B,1,32,32]``: three
    3×3 convolution pairs, two of them striding, then the mean and max over positions."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = {"width": width}
        layers, channels = [], 1
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(channels, out, 3, stride=1 if stage == 0 else 2, padding=1), nn.GELU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.GELU()]
            channels = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, len(CLASSES))

    def forward(self, membership: Tensor) -> Tensor:
        features = self.body(membership)
        return self.head(torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ShapeOfColourNet:
        directory = Path(directory)
        if not (directory / CONFIG_FILENAME).is_file():
            raise InvalidInputError(f"weights: {str(directory)!r} holds no {CONFIG_FILENAME}. Fix: pass the folder "
                                    "`python -m mmalign.shapes.train shapes-object` wrote.")
        net = cls(**json.loads((directory / CONFIG_FILENAME).read_text()))
        weights = read_state_dict(directory / WEIGHTS_FILENAME)
        load_exact(net, {k: v.float() for k, v in weights.items()}, str(directory))
        return net.eval()


class ShapesObjectScore(Reward):
    """The probability that an image draws the object its caption names ("a red circle", "a
    square", or a motion caption such as "a red circle moving left"). Images are resized to 32×32
    and centre-cropped, as shapes-clip's are."""

    def __init__(self, net: ShapeOfColourNet, spec: RewardSpec, name: str = "shapes-object"):
        super().__init__(spec, name)
        from ..shapes.grammar import COLOURS, SHAPES

        self.net, self.colours = net, COLOURS
        self.register_buffer("palette", palette())
        self.pattern = re.compile(rf"^a (?:(?P<colour>{'|'.join(COLOURS)}) )?(?P<shape>{'|'.join(SHAPES)})(?: moving \w+)?$")
        self.freeze()

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, *, weights: str | None = None,
                  device: str | None = None) -> ShapesObjectScore:
        net = ShapeOfColourNet.from_pretrained(card.resolve_path(weights or card.args["weights"]))
        return cls(net, card.spec(), card.name).to(device or "cpu")

    def parse(self, prompt: str) -> tuple[int, list[int]] | None:
        """The named shape's class and the colours it may have, or None outside the grammar."""
        match = self.pattern.match(" ".join(str(prompt).lower().split()).rstrip("."))
        if match is None:
            return None
        colours = [self.colours.index(match["colour"])] if match["colour"] else list(range(len(self.colours)))
        return CLASSES.index(match["shape"]), colours

    def forward(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        images = resize_and_crop(images, INPUT_SIZE, interpolation="bilinear")  # the renders' box filter, near enough
        batch, colours = images.shape[0], self.palette.to(images.dtype)
        every_colour = images.repeat(len(colours), 1, 1, 1)  # [C·B,3,H,W], colour-major
        membership = colour_membership(every_colour, colours.repeat_interleave(batch, 0))
        probabilities = self.net(membership.float()).softmax(-1).view(len(colours), batch, len(CLASSES))
        parsed = [self.parse(p) for p in prompts]
        scores = torch.stack([probabilities[item[1], index, item[0]].amax() if item else probabilities.new_zeros(())
                              for index, item in enumerate(parsed)])
        return RewardOutput(reward=scores, mask=torch.tensor([p is not None for p in parsed], device=scores.device))
