"""The one reward interface: ``reward(samples, prompts) -> RewardOutput``.

A :class:`Reward` is a frozen ``nn.Module`` that stays in eval mode. Subclasses implement
``forward(samples, prompts)`` on checked inputs; :meth:`Reward.__call__` does the checking, the
conversion of PIL images and paths, and the gradient guard, once for every reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError, NotDifferentiableError
from .inputs import as_image_batch, as_prompts, as_text_batch, as_video_batch

Modality = Literal["image", "video", "text"]
OutputKind = Literal["cosine", "logit", "probability", "likert", "score"]
MODALITIES = ("image", "video", "text")
OUTPUT_KINDS = ("cosine", "logit", "probability", "likert", "score")


@dataclass(frozen=True)
class RewardSpec:
    """What a reward takes and gives; read from its card.

    Args:
        modality: "image", "video" or "text".
        differentiable: whether gradients flow from the score to the pixels.
        needs_prompt: whether the score depends on the prompt.
        output_kind: "cosine", "logit", "probability", "likert" or "score".
        input_size: side length the model sees after resizing, if it resizes.
        resize_mode: how pixels reach ``input_size`` (for example "shortest-side bicubic + centre crop").
        input_range: range of the pixels the reward accepts.
        output_range: the score's range where it is bounded.
        mean, std: normalisation statistics of the score, used by z-scoring wrappers.
    """

    modality: Modality
    differentiable: bool
    needs_prompt: bool
    output_kind: OutputKind = "score"
    input_size: int | None = None
    resize_mode: str | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    output_range: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise InvalidInputError(f"modality: {self.modality!r} is not one of {MODALITIES}.")
        if self.output_kind not in OUTPUT_KINDS:
            raise InvalidInputError(f"output_kind: {self.output_kind!r} is not one of {OUTPUT_KINDS}.")
        if self.std is not None and not self.std > 0:
            raise InvalidInputError(f"std: normalisation std must be positive, got {self.std}.")

    def replace(self, **changes) -> RewardSpec:
        return replace(self, **changes)


@dataclass
class RewardOutput:
    """Scores of one batch.

    Args:
        reward: ``Tensor[B]``, higher is better; NaN where the reward could not score an item.
        heads: named ``Tensor[B]`` sub-scores (VideoReward's VQ/MQ/TA, a sum's members).
        uncertainty: ``Tensor[B]`` where the reward estimates its own uncertainty.
        mask: ``bool Tensor[B]``, True where the item was scored. Derived from NaNs when not given;
            when given, unscored items are set to NaN so a masked score can never pass for a real one.
    """

    reward: Tensor
    heads: dict[str, Tensor] = field(default_factory=dict)
    uncertainty: Tensor | None = None
    mask: Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.reward, Tensor) or self.reward.ndim != 1:
            raise InvalidInputError("RewardOutput.reward must be a 1-D tensor [B].")
        if self.mask is None:
            self.mask = ~torch.isnan(self.reward.detach())
        else:
            self.mask = self.mask.to(torch.bool) & ~torch.isnan(self.reward.detach())
            self.reward = self.reward.masked_fill(~self.mask, float("nan"))

    def __len__(self) -> int:
        return self.reward.shape[0]


class Reward(nn.Module):
    """Base class of every reward: a frozen module scoring ``(samples, prompts)``.

    Subclasses set ``self.spec`` and a ``name``, implement ``forward`` on checked inputs and call
    :meth:`freeze` at the end of ``__init__``.
    """

    spec: RewardSpec

    def __init__(self, spec: RewardSpec, name: str | None = None):
        super().__init__()
        self.spec = spec
        self.name = name or type(self).__name__

    def freeze(self) -> Reward:
        """No parameter trains and the module stays in eval mode (dropout off, BN frozen)."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> Reward:
        # A parent module's .train() must not switch a reward's dropout back on.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")  # weight-free rewards (JPEG) run on the CPU

    def convert(self, samples):
        """Checked samples of this reward's modality, and their batch size."""
        if self.spec.modality == "image":
            samples = as_image_batch(samples)  # a list only when image sizes differ
            return samples, (len(samples) if isinstance(samples, list) else samples.shape[0])
        samples = as_video_batch(samples) if self.spec.modality == "video" else as_text_batch(samples)
        return samples, len(samples)

    def prepare(self, samples, prompts=None):
        """Check and convert inputs as :meth:`__call__` does; returns ``(samples, prompts)``."""
        samples, batch_size = self.convert(samples)
        return samples, as_prompts(prompts, batch_size, required=self.spec.needs_prompt)

    def check_gradient_request(self, samples) -> None:
        wants_grad = torch.is_grad_enabled() and any(
            isinstance(s, Tensor) and s.requires_grad for s in (samples if isinstance(samples, list) else [samples])
        )
        if wants_grad and not self.spec.differentiable:
            raise NotDifferentiableError(
                f"reward {self.name!r} is not differentiable, but `samples` requires grad. "
                "Fix: score `samples.detach()` (best-of-N, RAFT and D3PO need no gradient), "
                "or choose a differentiable reward for ReNO."
            )

    def __call__(self, samples, prompts=None) -> RewardOutput:
        samples, prompts = self.prepare(samples, prompts)
        self.check_gradient_request(samples)
        if isinstance(samples, list) and self.spec.modality != "text":
            return self._score_mixed_sizes(samples, prompts)
        if not isinstance(samples, Tensor):
            return super().__call__(samples, prompts)
        # An item with NaN pixels cannot be scored: it is masked, and its NaNs are zeroed before the
        # forward so that no NaN reaches the other items' gradients through batch-wide operations.
        unscorable = torch.isnan(samples.detach()).flatten(1).any(1)
        if not unscorable.any():
            return super().__call__(samples, prompts)
        output = super().__call__(samples.nan_to_num(0.0), prompts)
        return replace(output, mask=output.mask & ~unscorable.to(output.mask.device))

    def _score_mixed_sizes(self, images: list[Tensor], prompts: list[str] | None) -> RewardOutput:
        """Images of different sizes are scored one size-group at a time, then put back in order."""
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(tuple(image.shape[1:]), []).append(index)
        outputs, order = [], []
        for indices in groups.values():
            batch = torch.cat([images[i] for i in indices])
            group_prompts = [prompts[i] for i in indices] if prompts is not None else None
            outputs.append(super().__call__(batch, group_prompts))
            order.extend(indices)
        inverse = torch.argsort(torch.tensor(order))
        return concat_outputs(outputs, inverse)


def concat_outputs(outputs: list[RewardOutput], index: Tensor | None = None) -> RewardOutput:
    """Concatenate batch outputs, optionally reordering rows with ``index``."""

    def cat(tensors: list[Tensor]) -> Tensor:
        joined = torch.cat(tensors)
        return joined[index.to(joined.device)] if index is not None else joined

    heads = {key: cat([o.heads[key] for o in outputs]) for key in outputs[0].heads}
    uncertainty = cat([o.uncertainty for o in outputs]) if outputs[0].uncertainty is not None else None
    return RewardOutput(
        reward=cat([o.reward for o in outputs]),
        heads=heads,
        uncertainty=uncertainty,
        mask=cat([o.mask for o in outputs]),
    )
