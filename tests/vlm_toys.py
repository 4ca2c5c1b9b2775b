"""A tiny, randomly initialised Qwen2-VL of transformers' own classes, with an offline processor:
a byte-level BPE tokenizer whose specials are Qwen2-VL's, its chat template, and its image and
video processors. What ``from_pretrained("Qwen/Qwen2-VL-2B-Instruct")`` gives, at a size that runs
in a second."""

from __future__ import annotations

import torch

# The official Qwen2-VL chat template (chat_template.json of the Qwen2-VL Instruct repos).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]


def tokenizer(extra_specials=(), whole_words=("Yes", "No")):
    """Byte-level BPE over single bytes, with merges that make each of ``whole_words`` one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [*SPECIALS, *extra_specials]
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = []
    for word in whole_words:  # merge left to right: "Y"+"e" -> "Ye", "Ye"+"s" -> "Yes"
        for end in range(2, len(word) + 1):
            merges.append((word[: end - 1], word[end - 1]))
            vocab.setdefault(word[:end], len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=specials)


def save_qwen2_vl(directory, seed: int = 0, extra_specials=(), whole_words=("Yes", "No")) -> str:
    """A tiny Qwen2-VL and its processor saved in ``directory``, as a hub repo holds them."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    text = tokenizer(extra_specials, whole_words)
    pixels = dict(patch_size=14, temporal_patch_size=2, merge_size=2, min_pixels=56 * 56, max_pixels=56 * 56)
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(**pixels),
                                 video_processor=Qwen2VLVideoProcessor(**pixels), tokenizer=text,
                                 chat_template=CHAT_TEMPLATE)
    ids = text.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(text), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
                         pad_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), bos_token_id=None),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, mlp_ratio=2, num_heads=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


# A LLaVA-1.5-style chat template: the image placeholder, then the text, per user turn.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: {% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% else %}{{ content['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def save_llava(directory, seed: int = 0) -> str:
    """A tiny LLaVA (CLIP vision tower, Llama text model) and its processor, saved as a hub repo holds them."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    text = tokenizer(extra_specials=("<image>",))
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=text, patch_size=14, vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE,
        image_token="<image>", num_additional_image_tokens=1)  # CLIP's CLS token
    layer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", num_attention_heads=2, image_size=28, patch_size=14, **layer),
        text_config=dict(model_type="llama", vocab_size=len(text), num_attention_heads=4, num_key_value_heads=2,
                         pad_token_id=text.pad_token_id, eos_token_id=text.eos_token_id, **layer),
        image_token_id=text.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)
