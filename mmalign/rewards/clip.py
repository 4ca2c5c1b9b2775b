"""CLIP score for any open_clip architecture and pretrained tag.

``reward = cos(E_img(x), E_txt(p))``, the cosine between L2-normalised image and text embeddings
(CLIPScore, Hessel et al. 2021, without its 2.5·max(·,0) rescaling, so the gradient never vanishes).

Preprocessing is torch (:mod:`mmalign.rewards.preprocess`): antialiased bicubic resize of the
shortest side, centre crop, normalisation, so gradients reach the pixels. Measured against
open_clip's own PIL transform (``benchmarks/bench_rewards.py``, ViT-B-32 at 224 px, 16 smooth
random 256×320 images): preprocessed pixels differ by 0.0045 on average and 0.016 at most in
normalised units, about one uint8 step (0.015), since PIL rounds to uint8; scores differ by at most
2e-4. ``tests/rewards/test_clip.py`` checks the same bound on other sizes.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import WeightsNotFoundError, require
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .preprocess import normalize, resize_and_crop

CLIP_SPEC = RewardSpec(
    modality="image", differentiable=True, needs_prompt=True, output_kind="cosine", output_range=(-1.0, 1.0)
)


def parse_variant(variant: str) -> tuple[str, str | None]:
    """``"ViT-H-14/laion2b_s32b_b79k"`` to (architecture, tag); schema names pass through whole."""
    if variant.startswith(("hf-hub:", "local-dir:")) or "/" not in variant:
        return variant, None
    architecture, tag = variant.split("/", 1)
    return architecture, tag


class OpenCLIPEncoder(nn.Module):
    """An open_clip model with its tokenizer and a torch copy of its eval preprocessing.

    Rewards on the same backbone share it: while one encoder of an (architecture, weights, device,
    precision) is alive, :meth:`from_pretrained` returns it instead of loading a second copy (CLIP
    ViT-L/14 under both ``clip`` and ``laion-aesthetic``, say). Rewards are frozen, so sharing is safe.
    """

    _loaded: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def __init__(self, model: nn.Module, tokenizer, preprocess_cfg: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        size = preprocess_cfg["size"]
        self.image_size = size if isinstance(size, int) else int(size[0])
        self.mean = tuple(preprocess_cfg["mean"])
        self.std = tuple(preprocess_cfg["std"])
        self.resize_mode = preprocess_cfg.get("resize_mode", "shortest")
        self.interpolation = preprocess_cfg.get("interpolation", "bicubic")

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        pretrained: str | None = None,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        cache_dir: str | None = None,
    ) -> OpenCLIPEncoder:
        key = (model_name, pretrained, str(torch.device(device or "cpu")), precision, cache_dir)
        if (shared := cls._loaded.get(key)) is not None:
            return shared
        open_clip = require("open_clip", package="open_clip_torch")
        try:
            model = open_clip.create_model(
                model_name, pretrained=pretrained, precision=precision, device=device or "cpu", cache_dir=cache_dir
            )
            tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        except Exception as error:  # unknown name, offline, corrupt file: say which model, and the fix
            raise WeightsNotFoundError(
                f"could not load open_clip model {model_name!r} with pretrained={pretrained!r} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Fix: check the name against open_clip.list_pretrained(), and your network, "
                "or point at a folder with local-dir:PATH."
            ) from error
        encoder = cls(model, tokenizer, open_clip.get_model_preprocess_cfg(model))
        cls._loaded[key] = encoder
        return encoder

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B,3,H,W]`` in [0,1] to the model's normalised input, differentiably."""
        images = resize_and_crop(images, self.image_size, self.resize_mode, self.interpolation)
        return normalize(images, self.mean, self.std)

    def encode_images(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        pixels = self.preprocess(images.to(device=device, dtype=torch.float32)).to(self.dtype)
        return nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)

    def encode_texts(self, prompts: Sequence[str]) -> Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(prompts)).to(device)
        return nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)


class CLIPScore(Reward):
    """Cosine similarity of open_clip image and text embeddings; differentiable in the pixels.

    Example:
        >>> reward = CLIPScore.from_pretrained("ViT-L-14", "openai")        # doctest: +SKIP
        >>> reward(images, prompts=["a red circle"] * len(images)).reward  # doctest: +SKIP
    """

    def __init__(self, encoder: OpenCLIPEncoder, spec: RewardSpec = CLIP_SPEC, name: str = "clip"):
        super().__init__(spec.replace(input_size=encoder.image_size, resize_mode=_describe(encoder)), name)
        self.encoder = encoder
        self.freeze()

    @classmethod
    def from_pretrained(cls, model_name: str = "ViT-L-14", pretrained: str | None = "openai", **kwargs) -> CLIPScore:
        name = f"clip:{model_name}" + (f"/{pretrained}" if pretrained else "")
        return cls(OpenCLIPEncoder.from_pretrained(model_name, pretrained, **kwargs), name=name)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, **kwargs) -> CLIPScore:
        model_name, pretrained = parse_variant(variant or card.args.get("model_name") or card.default_variant)
        model_name = card.resolve_path(model_name) if "{package}" in model_name else model_name
        if model_name.startswith("local-dir:") and not _has_weights(Path(model_name[len("local-dir:"):])):
            retrain = card.source.get("retrain")
            raise WeightsNotFoundError(
                f"reward {card.name!r}: no weights in {model_name[len('local-dir:'):]} (open_clip would start from "
                f"random ones). Fix: {f'retrain them with `{retrain}`' if retrain else 'add open_clip_model.safetensors'}."
            )
        pretrained = card.args.get("pretrained", pretrained)
        if pretrained and Path(card.resolve_path(pretrained)).is_file():
            pretrained = card.resolve_path(pretrained)
        encoder = OpenCLIPEncoder.from_pretrained(model_name, pretrained, **kwargs)
        display = card.name if variant is None else f"{card.name}:{variant}"
        return cls(encoder, card.spec(), name=display)

    def forward(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        image_embeds = self.encoder.encode_images(images)
        text_embeds = self.encoder.encode_texts(prompts)
        return RewardOutput(reward=(image_embeds * text_embeds).sum(dim=-1))


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.pt*"))


def _describe(encoder: OpenCLIPEncoder) -> str:
    if encoder.resize_mode == "letterbox":
        return f"longest-side {encoder.interpolation} (antialiased) + zero padding (letterbox) to {encoder.image_size}"
    return f"{encoder.resize_mode}-side {encoder.interpolation} (antialiased) + centre crop to {encoder.image_size}"
