"""The LAION aesthetic predictor: an MLP on L2-normalised CLIP ViT-L/14 image embeddings.

Architecture and state-dict keys follow christophschuhmann/improved-aesthetic-predictor
(``simple_inference.py``): Linear(768,1024), Dropout(0.2), Linear(1024,128), Dropout(0.2),
Linear(128,64), Dropout(0.1), Linear(64,16), Linear(16,1), with no activations, keys
``layers.{0,2,4,6,7}``. TRL's DDPO example and ddpo-pytorch use the same head and weights
(``trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth``). Scores are roughly 1–10.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ..errors import WeightsNotFoundError
from .hub import download_file
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .checkpoints import read_state_dict
from .clip import OpenCLIPEncoder, parse_variant

AESTHETIC_SPEC = RewardSpec(
    modality="image", differentiable=True, needs_prompt=False, output_kind="score", output_range=(1.0, 10.0)
)
DEFAULT_HEAD = ("trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth")


class AestheticMLP(nn.Module):
    def __init__(self, embed_dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: Tensor) -> Tensor:
        return self.layers(embeds)


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    return read_state_dict(path, fix=f"download {DEFAULT_HEAD[1]} from the Hugging Face repo {DEFAULT_HEAD[0]} "
                                    "and pass its path as `weights=`")


class AestheticScore(Reward):
    """LAION aesthetic score of images; needs no prompt, differentiable in the pixels."""

    def __init__(
        self, encoder: OpenCLIPEncoder, head: AestheticMLP, spec: RewardSpec = AESTHETIC_SPEC, name: str = "laion-aesthetic"
    ):
        super().__init__(spec.replace(input_size=encoder.image_size), name)
        self.encoder = encoder
        self.head = head
        self.freeze()

    @classmethod
    def from_pretrained(
        cls, weights: str | Path | None = None, clip: str = "ViT-L-14/openai", *, card: RewardCard | None = None, **kwargs
    ) -> AestheticScore:
        """The head from ``weights`` on CLIP ``"architecture/tag"``; ``weights=None`` downloads the
        head from the Hugging Face Hub (``trl-lib/ddpo-aesthetic-predictor``)."""
        if weights is None:
            weights = download_file(*DEFAULT_HEAD)
        encoder = OpenCLIPEncoder.from_pretrained(*parse_variant(clip), **kwargs)
        head = AestheticMLP(encoder.model.visual.output_dim)
        try:
            head.load_state_dict(load_state_dict(weights))
        except RuntimeError as error:
            raise WeightsNotFoundError(
                f"weights: {str(weights)!r} is not an aesthetic head for {clip!r} "
                f"(embedding size {encoder.model.visual.output_dim}): {str(error).splitlines()[0]}"
            ) from error
        head.to(next(encoder.model.parameters()).device)
        if card is None:
            return cls(encoder, head)
        return cls(encoder, head, card.spec(), name=card.name)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, *, weights=None, **kwargs) -> AestheticScore:
        weights = weights or card.args.get("weights")
        weights = card.resolve_path(str(weights)) if weights else None
        return cls.from_pretrained(weights, card.args.get("clip", "ViT-L-14/openai"), card=card, **kwargs)

    def forward(self, images: Tensor, prompts=None) -> RewardOutput:
        embeds = self.encoder.encode_images(images)
        head_dtype = next(self.head.parameters()).dtype
        return RewardOutput(reward=self.head(embeds.to(head_dtype)).squeeze(-1).float())
