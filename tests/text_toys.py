"""Tiny, randomly initialised text models saved like real checkpoints, for the text-reward tests.

They use the real classes of the reward models the library must load: a Llama sequence classifier
with a chat-template tokenizer (like Skywork-Reward) and a DeBERTa-v2 one with a pair-encoding
tokenizer without chat template or pad token (like OpenAssistant's reward-model-deberta-v3-large-v2).
"""

from __future__ import annotations

import torch

CHARACTERS = ["\n"] + [chr(code) for code in range(32, 127)]
# Llama-3 style: the template itself holds BOS and role headers, so tokenizing it must add nothing
LLAMA3_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|end|>{% endfor %}"
)


def char_tokenizer(specials: list[str], *, pair_template: tuple[str, str] | None = None, **special_roles):
    """A character-level PreTrainedTokenizerFast with ``specials`` first in the vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*specials, *CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[-1]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    if pair_template is not None:
        single, pair = pair_template
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in specials if t in single + pair])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=specials[-1], **special_roles)


def write_llama_rm(directory, *, with_pad: bool = True, seed: int = 0):
    """A Skywork-like reward model folder: LlamaForSequenceClassification, chat template, BOS in it."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    specials = ["<pad>", "<|begin|>", "<|end|>", "<|start|>", "<unk>"] if with_pad else ["<|begin|>", "<|end|>", "<|start|>", "<unk>"]
    roles = dict(bos_token="<|begin|>", eos_token="<|end|>", **({"pad_token": "<pad>"} if with_pad else {}))
    tokenizer = char_tokenizer(specials, **roles)
    tokenizer.chat_template = LLAMA3_STYLE_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                         initializer_range=0.2,  # outputs that differ between inputs, so the checks bite
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_deberta_rm(directory, seed: int = 0, num_labels: int = 1):
    """An OpenAssistant-like reward model folder: DebertaV2ForSequenceClassification, question/answer
    pair encoding ``[CLS] q [SEP] a [SEP]``, no chat template and no pad token."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    specials = ["[CLS]", "[SEP]", "[UNK]"]
    tokenizer = char_tokenizer(specials, pair_template=("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"),
                               cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=256, num_labels=num_labels,
                             relative_attention=True, position_buckets=32, max_relative_positions=64,
                             position_biased_input=False, pos_att_type=["p2c", "c2p"], pad_token_id=None,
                             type_vocab_size=0, initializer_range=0.2)
    DebertaV2ForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_llama_lm(directory, seed: int = 0):
    """A tiny LlamaForCausalLM with the shapes-lm character tokenizer (a causal LM, not a reward model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmalign.shapes.train_lm import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
