"""PickScore (Kirstain et al. 2023, "Pick-a-Pic: An Open Dataset of User Preferences for Text-to-Image
Generation", arXiv:2305.01569; github.com/yuvalkirstain/PickScore).

A transformers ``CLIPModel`` (CLIP ViT-H-14) fine-tuned on Pick-a-Pic: ``yuvalkirstain/PickScore_v1``,
with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``. The score, as in the model card's
example, is ``logit_scale.exp() · cos(E_img(x), E_txt(p))``: about 18–23 for real pairs, a scale
on which ReNO weighs it 0.05.

Preprocessing is the processor's ``CLIPImageProcessor`` (shortest side to 224 bicubic, centre crop
224, OpenAI mean and std), done in torch so gradients reach the pixels; prompts are padded and
truncated to the tokenizer's 77 tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import WeightsNotFoundError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .preprocess import center_crop, normalize, resize_and_crop

PICKSCORE_SPEC = RewardSpec(modality="image", differentiable=True, needs_prompt=True, output_kind="logit")
RESAMPLING = {2: "bilinear", 3: "bicubic"}  # PIL's codes, as image processors store them


def projected(output) -> Tensor:
    """``get_image_features``/``get_text_features`` return the projection itself before transformers
    5, and an output carrying it as ``pooler_output`` from 5 on."""
    return output if isinstance(output, Tensor) else output.pooler_output


class PickScore(Reward):
    """PickScore of images for prompts; differentiable in the pixels.

    Example:
        >>> reward = load_reward("pickscore")                                   # doctest: +SKIP
        >>> reward = PickScore.from_pretrained("yuvalkirstain/PickScore_v1")    # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, processor, spec: RewardSpec = PICKSCORE_SPEC, name: str = "pickscore"):
        image_processor = processor.image_processor
        self.resize_to = image_processor.size["shortest_edge"]
        self.crop_to = image_processor.crop_size["height"]
        super().__init__(spec.replace(input_size=self.crop_to), name)
        self.model = model
        self.tokenizer = processor.tokenizer
        self.mean, self.std = tuple(image_processor.image_mean), tuple(image_processor.image_std)
        self.interpolation = RESAMPLING.get(int(image_processor.resample), "bicubic")
        self.freeze()

    @classmethod
    def from_pretrained(cls, model: str = "yuvalkirstain/PickScore_v1",
                        processor: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", *, device: str | None = None,
                        dtype: torch.dtype | None = None, spec: RewardSpec = PICKSCORE_SPEC,
                        name: str = "pickscore") -> PickScore:
        """The ``CLIPModel`` at ``model`` and the ``CLIPProcessor`` at ``processor`` (hub ids or folders)."""
        from transformers import AutoProcessor, CLIPModel

        try:
            clip = CLIPModel.from_pretrained(model, dtype=dtype or torch.float32)
            loaded = AutoProcessor.from_pretrained(processor)
        except OSError as error:
            raise WeightsNotFoundError(
                f"pickscore: cannot load model {model!r} with processor {processor!r} ({str(error).splitlines()[0]}). "
                "Fix: check the names and your network, or pass local folders as model= and processor=.") from error
        return cls(clip.to(device or "cpu").eval(), loaded, spec, name)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, **kwargs) -> PickScore:
        arguments = {**card.args, **kwargs}
        return cls.from_pretrained(spec=card.spec(), name=card.name, **arguments)

    def preprocess(self, images: Tensor) -> Tensor:
        images = resize_and_crop(images, self.resize_to, "shortest", self.interpolation)
        return normalize(center_crop(images, self.crop_to), self.mean, self.std)

    def forward(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        parameter = next(self.model.parameters())
        pixels = self.preprocess(images.to(parameter.device, torch.float32)).to(parameter.dtype)
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt").to(parameter.device)
        image_embeds = nn.functional.normalize(projected(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)
        text_embeds = nn.functional.normalize(projected(self.model.get_text_features(**tokens)).float(), dim=-1)
        return RewardOutput(reward=self.model.logit_scale.exp().float() * (image_embeds * text_embeds).sum(-1))
