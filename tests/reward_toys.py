"""Tiny reward models of each family, saved as their official releases lay them out: what tests
and benchmarks load through ``load_reward`` with no download."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from mmalign.rewards.imagereward import ImageRewardModel
from mmalign.rewards.videoreward import REWARD_TOKENS
from vlm_toys import save_qwen2_vl, tokenizer

WORDS = ["a", "red", "green", "blue", "circle", "square", "triangle", "two", "left", "of", "above", "and"]
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8, hidden_act="gelu", layer_norm_eps=1e-6)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CARD = {"VQ": (3.6757, 2.2476), "MQ": (1.1646, 1.3811), "TA": (2.8105, 2.5121)}
TINY = dict(max_frame_pixels=56 * 56, min_frame_pixels=56 * 56)


def text_config(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=64, hidden_act="gelu", encoder_hidden_size=32, is_decoder=True)


def official_layout(model: ImageRewardModel) -> dict:
    """The model's weights under ImageReward.pt's names, written from the official module tree
    (BLIP's VisionTransformer, med.py's BertModel, the MLP), plus the keys scoring does not use."""
    official = {}
    for key, value in model.state_dict().items():
        if key.startswith("vision_model."):
            rest = key[len("vision_model."):]
            rest = {"embeddings.class_embedding": "cls_token", "embeddings.position_embedding": "pos_embed"}.get(rest, rest)
            rest = rest.replace("embeddings.patch_embedding.", "patch_embed.proj.").replace("post_layernorm.", "norm.")
            rest = re.sub(r"encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"blocks.\1.norm\2.", rest)
            rest = re.sub(r"encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj.", rest)
            rest = re.sub(r"encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv.", rest)
            rest = re.sub(r"encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp.", rest)
            official[f"blip.visual_encoder.{rest}"] = value.clone()
        elif key.startswith("text_encoder."):
            official[f"blip.{key}"] = value.clone()
        else:
            official[key] = value.clone()
    official["blip.text_encoder.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    official["blip.vision_proj.weight"], official["blip.vision_proj.bias"] = torch.zeros(8, 32), torch.zeros(8)
    official["blip.text_proj.weight"], official["blip.text_proj.bias"] = torch.zeros(8, 32), torch.zeros(8)
    return official


def released_state_dict(model, rm_head, rank=4, alpha=8, seed=0):
    """``model``'s weights as VideoAlign saved them: PEFT-wrapped (``base_model.model.``), transformers
    4.45 names (``visual.``, ``model.layers.``), a LoRA on every LLM linear whose merge gives back the
    model's weight, and the head."""
    generator = torch.Generator().manual_seed(seed)
    released = {"base_model.model.rm_head.weight": rm_head.weight.detach().clone()}
    for key, value in model.state_dict().items():
        if key.startswith("model.visual."):
            released["base_model.model." + key[len("model."):]] = value.clone()
            continue
        old = "base_model.model." + key.replace("model.language_model.", "model.", 1)
        module = re.match(r"(.*\.(?:%s))\.weight$" % "|".join(LINEARS), old)
        if module is None:
            released[old] = value.clone()
            continue
        down = torch.randn(rank, value.shape[1], generator=generator) * 0.1
        up = torch.randn(value.shape[0], rank, generator=generator) * 0.1
        released[f"{module.group(1)}.base_layer.weight"] = value - (alpha / rank) * up @ down
        released[f"{module.group(1)}.lora_A.default.weight"] = down
        released[f"{module.group(1)}.lora_B.default.weight"] = up
    for key in [k for k in released if k.endswith("_proj.bias")]:
        released[key.replace("_proj.bias", "_proj.base_layer.bias")] = released.pop(key)
    return released


def write_hps_checkpoint(clip_dir, path, seed: int = 3):
    """``(path, model)``: a tiny open_clip model's weights laid out as HPS_v2_compressed.pt is:
    ``{"state_dict": {...}}``, saved from DDP (``module.``)."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{clip_dir}", load_weights=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}, path)
    return path, model.eval()


def write_pickscore(root: Path) -> tuple[str, str]:
    """``(model folder, processor folder)``: a tiny CLIPModel and a CLIPProcessor, as the hub repos hold them."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    from mmalign.shapes.tokenizer import write_clip_tokenizer

    layer = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config={**layer, "vocab_size": 49408, "max_position_embeddings": 16},
                        vision_config={**layer, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root / "model")
    clip_tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(root / "tokenizer", 16))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer).save_pretrained(root / "processor")
    return str(root / "model"), str(root / "processor")


def write_imagereward(root: Path) -> tuple[dict, ImageRewardModel]:
    """``(load_reward keyword arguments, model)``: a tiny BLIP saved as ImageReward.pt lays it out."""
    from transformers import BertTokenizer

    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(root / "vocab.txt")).save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    model = ImageRewardModel(VISION, text_config(len(WORDS) + 5)).eval()
    with torch.no_grad():  # BERT's 0.02-std init leaves the image's pull through cross-attention at float noise
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    torch.save(official_layout(model), root / "ImageReward.pt")
    arguments = dict(checkpoint=str(root / "ImageReward.pt"), tokenizer=str(root / "tokenizer"), vision_config=VISION,
                     text_config=text_config(len(WORDS) + 5))
    return arguments, model


def write_videoreward_release(root: Path):
    """``(base folder, release folder, original model, head)``: a tiny Qwen2-VL base and a release
    folder laid out as KwaiVGI/VideoReward's."""
    from transformers import AutoModelForImageTextToText

    base = save_qwen2_vl(root / "base", seed=1)  # Qwen2-VL's tokenizer: no reward tokens
    tokens = tokenizer(extra_specials=REWARD_TOKENS)
    tokens.save_pretrained(root / "release" / "checkpoint-7" / "tokenizer")
    model = AutoModelForImageTextToText.from_pretrained(base).eval()
    model.resize_token_embeddings(len(tokens))
    torch.manual_seed(2)
    head = torch.nn.Linear(32, 1, bias=False)
    torch.save(released_state_dict(model, head), root / "release" / "checkpoint-7" / "model.pth")
    (root / "release" / "checkpoint-3").mkdir()  # an older step, which the loader must pass over
    config = {"peft_lora_config": {"lora_r": 4, "lora_alpha": 8}, "data_config": {"fps": 2.0, "max_frame_pixels": 56 * 56},
              "inference_config": {f"{h}_{k}": v for h, (m, s) in CARD.items() for k, v in (("mean", m), ("std", s))}}
    (root / "release" / "model_config.json").write_text(json.dumps(config))
    return base, str(root / "release"), model, head
