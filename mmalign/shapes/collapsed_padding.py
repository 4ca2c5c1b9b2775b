"""Train a transformer on one copy of its zero text padding instead of hundreds.

Without T5, ``StableDiffusion3Pipeline`` appends ``max_sequence_length`` (256) zero tokens to the
CLIP tokens; ``WanPipeline`` zero-fills its text embeddings up to 512 tokens. Identical context
tokens stay identical through every block: they get the same per-token maps and, in SD3's joint
blocks, the same attention queries. Attention over n identical keys and values equals
attention over one of them with its logit raised by log n. So training on one copy with that bias
computes exactly the function the stock processor computes on all n copies, about 4× faster here,
and the saved model runs unchanged in the stock pipeline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class CollapsedPaddingAttnProcessor:
    """SD3 joint attention whose last context token stands for ``repeats`` identical copies."""

    def __init__(self, repeats: int):
        self.log_repeats = math.log(repeats)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        def split_heads(x):
            return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

        image_tokens = hidden_states.shape[1]
        image = [split_heads(project(hidden_states)) for project in (attn.to_q, attn.to_k, attn.to_v)]
        context = [split_heads(project(encoder_hidden_states))
                   for project in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)]
        query, key, value = (torch.cat(pair, dim=2) for pair in zip(image, context))
        bias = torch.zeros(1, key.shape[2], dtype=query.dtype, device=query.device)
        bias[:, -1] = self.log_repeats
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=bias).transpose(1, 2).flatten(2)
        image_out, context_out = attended[:, :image_tokens], attended[:, image_tokens:]
        if not attn.context_pre_only:
            context_out = attn.to_add_out(context_out)
        return attn.to_out[1](attn.to_out[0](image_out)), context_out


def collapse_padding(transformer, repeats: int) -> None:
    """Switch ``transformer`` to :class:`CollapsedPaddingAttnProcessor`; undo with
    :func:`restore_attention`. Feed it the CLIP tokens plus a single zero token."""
    config = transformer.config
    if config.qk_norm or config.dual_attention_layers:
        raise ValueError("collapsed padding supports SD3 blocks without qk_norm or dual attention")
    transformer.set_attn_processor(CollapsedPaddingAttnProcessor(repeats))


def collapse_wan_padding(transformer, max_sequence_length: int) -> None:
    """Switch a ``WanTransformer3DModel``'s cross-attention to one collapsed padding token: feed it
    the text tokens then a single zero token, which stands for the ``max_sequence_length`` minus
    the text tokens zeros the pipeline would append. Undo with :func:`restore_attention`."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    class CollapsedPaddingWanAttnProcessor(WanAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            if encoder_hidden_states is None:  # self-attention over the video tokens
                return super().__call__(attn, hidden_states, None, attention_mask, rotary_emb)
            context_tokens = encoder_hidden_states.shape[1]
            bias = torch.zeros(1, 1, 1, context_tokens, dtype=hidden_states.dtype, device=hidden_states.device)
            bias[..., -1] = math.log(max_sequence_length - context_tokens + 1)
            return super().__call__(attn, hidden_states, encoder_hidden_states, bias, rotary_emb)

    if transformer.config.added_kv_proj_dim is not None:
        raise ValueError("collapsed padding supports text-to-video Wan blocks, without image context")
    transformer.set_attn_processor(CollapsedPaddingWanAttnProcessor())


def restore_attention(transformer) -> None:
    """The stock attention processors of an SD3 or Wan transformer."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanTransformer3DModel

    wan = isinstance(transformer, WanTransformer3DModel)
    transformer.set_attn_processor(WanAttnProcessor() if wan else JointAttnProcessor2_0())
