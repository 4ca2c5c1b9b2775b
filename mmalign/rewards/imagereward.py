"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation", NeurIPS 2023, arXiv:2304.05977; official code github.com/THUDM/ImageReward).

BLIP scores the prompt with the image: a ViT-L/16 at 224 px encodes the image, a BERT-base text
encoder with cross-attention in every layer reads the prompt (35 tokens, bert-base-uncased) against
the image tokens, and an MLP head maps the [CLS] feature to a reward, z-scored with the official
constants: ``(mlp(h_cls) − 0.16717362830052426) / 1.0333394966054072`` (``ImageReward.py``).
The head is the same Linear chain as the LAION aesthetic head (768→1024→128→64→16→1, dropout, no
activations). Preprocessing: shortest side to 224 bicubic, centre crop, CLIP's mean and std, in
torch so that gradients reach the pixels (the official ``score_gard`` path, which ReFL uses).

The official ``ImageReward.pt`` is a flat state dict; it is read with ``weights_only=True`` and its
keys are mapped onto transformers' ``BlipVisionModel`` and ``BlipTextModel`` (the renames of
transformers' own BLIP conversion script), never unpickled as a model.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from .aesthetic import AestheticMLP
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .checkpoints import card_weights, load_exact, read_state_dict
from .preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, resize_and_crop

HEAD_MEAN, HEAD_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py: self.mean, self.std
MAX_PROMPT_TOKENS = 35
IMAGEREWARD_SPEC = RewardSpec(modality="image", differentiable=True, needs_prompt=True, output_kind="score",
                              mean=0.0, std=1.0)

# ViT-L/16 and BERT-base as BLIP_Pretrain(vit="large") and med_config.json build them.
VISION_CONFIG = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=224, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6)
TEXT_CONFIG = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=512, hidden_act="gelu", layer_norm_eps=1e-12,
                   encoder_hidden_size=1024, is_decoder=True)  # is_decoder builds the cross-attention layers

# official key -> ours: the vision renames of transformers' convert_blip_original_pytorch_to_hf.py
VISION_RENAMES = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]
UNUSED_KEYS = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")


def official_to_ours(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """``ImageReward.pt``'s keys as :class:`ImageRewardModel` names them; the ITC projections and the
    position-id buffer, which scoring never uses, are dropped. Unknown keys pass through unchanged,
    so that loading names them."""
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith(UNUSED_KEYS):
            continue
        if key.startswith("blip.visual_encoder."):
            rest = key[len("blip.visual_encoder."):]
            for pattern, replacement in VISION_RENAMES:
                if re.match(pattern, rest):
                    rest = re.sub(pattern, replacement, rest)
                    break
            key = "vision_model." + rest
        elif key.startswith("blip.text_encoder."):
            key = "text_encoder." + key[len("blip.text_encoder."):]
        mapped[key] = value
    return mapped


class ImageRewardModel(nn.Module):
    """BLIP's image and image-grounded text encoders with ImageReward's head."""

    def __init__(self, vision_config: dict | None = None, text_config: dict | None = None):
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        self.vision_model = BlipVisionModel(BlipVisionConfig(**(vision_config or VISION_CONFIG)))
        self.text_encoder = BlipTextModel(BlipTextConfig(**(text_config or TEXT_CONFIG)), add_pooling_layer=False)
        self.mlp = AestheticMLP(self.text_encoder.config.hidden_size)

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The head's raw output ``[B]`` (before z-scoring)."""
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                                 encoder_attention_mask=image_mask, is_decoder=False)  # bidirectional, as med.py's
        return self.mlp(text.last_hidden_state[:, 0].float()).squeeze(-1)


class ImageReward(Reward):
    """ImageReward's z-scored reward of images for prompts; differentiable in the pixels.

    Example:
        >>> reward = load_reward("imagereward")                                          # doctest: +SKIP
        >>> reward = ImageReward.from_checkpoint("ImageReward.pt", "bert-base-uncased")  # doctest: +SKIP
    """

    def __init__(self, model: ImageRewardModel, tokenizer, head_mean: float = HEAD_MEAN, head_std: float = HEAD_STD,
                 spec: RewardSpec = IMAGEREWARD_SPEC, name: str = "imagereward"):
        self.image_size = model.vision_model.config.image_size
        super().__init__(spec.replace(input_size=self.image_size), name)
        self.model, self.tokenizer = model, tokenizer
        self.head_mean, self.head_std = float(head_mean), float(head_std)
        self.freeze()

    @classmethod
    def from_checkpoint(cls, checkpoint: str, tokenizer: str = "bert-base-uncased", *, vision_config: dict | None = None,
                        text_config: dict | None = None, device: str | None = None, **kwargs) -> ImageReward:
        """The official ``ImageReward.pt`` (or a file with its keys) on BLIP built from the configs
        (the official sizes unless given), with the bert-base-uncased tokenizer at ``tokenizer``."""
        from transformers import AutoTokenizer

        model = ImageRewardModel(vision_config, text_config)
        state = read_state_dict(checkpoint, fix="download ImageReward.pt from hf-hub:THUDM/ImageReward")
        load_exact(model, official_to_ours(state.get("state_dict", state)), source=str(checkpoint))
        return cls(model.to(device or "cpu").eval(), AutoTokenizer.from_pretrained(tokenizer), **kwargs)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, *, checkpoint: str | None = None,
                  **kwargs) -> ImageReward:
        arguments = {**card.args, **kwargs}
        return cls.from_checkpoint(card_weights(checkpoint, card.source), spec=card.spec(), name=card.name, **arguments)

    def forward(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        parameter = next(self.model.parameters())
        pixels = resize_and_crop(images.to(parameter.device, torch.float32), self.image_size)
        pixels = normalize(pixels, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD).to(parameter.dtype)
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_PROMPT_TOKENS,
                                return_tensors="pt").to(parameter.device)
        raw = self.model(pixels, tokens.input_ids, tokens.attention_mask)
        return RewardOutput(reward=(raw - self.head_mean) / self.head_std, heads={"raw": raw})
