"""Human Preference Score v2 and v2.1 (Wu et al. 2023, "Human Preference Score v2", arXiv:2306.09341;
official code github.com/tgxs002/HPSv2).

An open_clip ViT-H-14 (from ``laion2B-s32B-b79K``) fine-tuned on HPD v2. The official ``score.py``
takes the diagonal of ``image_features @ text_features.T`` with L2-normalised features, so the score
is a cosine, without the logit scale; real pairs land around 0.2–0.35.

Preprocessing (``image_transform(..., resize_longest_max=True)`` in the official ``transform.py``):
the longest side to 224 (bicubic), zero padding to a centred 224×224 square, then CLIP's OpenAI
mean and std. ReNO and AlignProp centre-crop instead; here the letterbox is the spec.

Weights: ``xswu/HPSv2`` on the Hub, ``HPS_v2_compressed.pt`` (v2) and ``HPS_v2.1_compressed.pt``
(v2.1): a torch file with the open_clip state dict under ``"state_dict"``, read with
``weights_only=True`` and put into open_clip's own ViT-H-14 only when every key fits. HPS ships no
tokenizer file; open_clip's BPE vocabulary (``get_tokenizer("ViT-H-14")``) is the one it was trained with.
"""

from __future__ import annotations

import torch

from ..errors import require
from .base import RewardSpec
from .card import RewardCard
from .checkpoints import card_weights, load_exact, read_state_dict
from .clip import CLIPScore, OpenCLIPEncoder
from .preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

HPS_SPEC = RewardSpec(modality="image", differentiable=True, needs_prompt=True, output_kind="cosine",
                      output_range=(-1.0, 1.0))


class HPSv2Score(CLIPScore):
    """HPSv2/v2.1: the cosine of an HPS-tuned open_clip model's image and prompt embeddings, on
    letterboxed pixels; differentiable in the pixels.

    Example:
        >>> hps = load_reward("hpsv2.1")                                         # doctest: +SKIP
        >>> hps = HPSv2Score.from_checkpoint("HPS_v2.1_compressed.pt")          # doctest: +SKIP
    """

    @classmethod
    def from_checkpoint(cls, checkpoint: str, model_name: str = "ViT-H-14", *,
                        device: str | torch.device | None = None, precision: str = "fp32",
                        spec: RewardSpec = HPS_SPEC, name: str = "hpsv2") -> HPSv2Score:
        """The HPS weights in ``checkpoint`` on open_clip's ``model_name`` architecture (any name
        ``open_clip.create_model`` takes, ``local-dir:`` included), built without pretrained weights."""
        open_clip = require("open_clip", package="open_clip_torch")
        model = open_clip.create_model(model_name, pretrained=None, precision=precision, device=device or "cpu",
                                       **({"load_weights": False} if model_name.startswith("local-dir:") else {}))
        state = read_state_dict(checkpoint, fix="download it from hf-hub:xswu/HPSv2")
        state = state.get("state_dict", state)
        state = {key.removeprefix("module."): value for key, value in state.items()}  # saved from DDP
        load_exact(model, state, source=str(checkpoint))
        size = open_clip.get_model_preprocess_cfg(model)["size"]  # 224 for ViT-H-14
        preprocess = {"size": size, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resize_mode": "letterbox"}
        encoder = OpenCLIPEncoder(model.eval(), open_clip.get_tokenizer(model_name), preprocess)
        return cls(encoder, spec, name=name)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, *, checkpoint: str | None = None,
                  model_name: str | None = None, **kwargs) -> HPSv2Score:
        """``checkpoint`` (a local file) and ``model_name`` (the architecture) override the card's."""
        weights = card_weights(checkpoint, card.source)
        return cls.from_checkpoint(weights, model_name or card.args.get("model_name", "ViT-H-14"),
                                   spec=card.spec(), name=card.name, **kwargs)
