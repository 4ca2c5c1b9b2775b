import pytest
import torch

from mmalign.shapes.collapsed_padding import collapse_padding, collapse_wan_padding, restore_attention


def tiny_transformer(**overrides):
    from diffusers import SD3Transformer2DModel

    config = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32,
                  pos_embed_max_size=8)
    return SD3Transformer2DModel(**{**config, **overrides}).eval()


def test_one_collapsed_padding_token_computes_what_the_stock_model_computes_on_all_copies():
    torch.manual_seed(0)
    transformer = tiny_transformer()
    latents, clip_tokens, pooled = torch.randn(2, 4, 8, 8), torch.randn(2, 7, 32), torch.randn(2, 32)
    timestep = torch.tensor([100.0, 900.0])

    def velocity(padding_tokens):
        context = torch.cat([clip_tokens, torch.zeros(2, padding_tokens, 32)], dim=1)
        with torch.no_grad():
            return transformer(latents, encoder_hidden_states=context, pooled_projections=pooled, timestep=timestep).sample

    stock = velocity(256)
    collapse_padding(transformer, repeats=256)
    collapsed = velocity(1)
    restore_attention(transformer)
    torch.testing.assert_close(collapsed, stock, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(velocity(256), stock, atol=0, rtol=0)
    # the bias matters: one token without it is a different function
    assert (velocity(1) - stock).abs().max() > 1e-3


def test_blocks_with_qk_norm_are_refused():
    with pytest.raises(ValueError, match="qk_norm"):
        collapse_padding(tiny_transformer(qk_norm="rms_norm"), repeats=256)


def test_wan_cross_attention_on_one_collapsed_token_matches_the_stock_model_on_the_full_padding():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=4, out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32,
                                        num_layers=2, rope_max_seq_len=16).eval()
    latents, text_tokens, timestep = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 5, 16), torch.tensor([100.0, 900.0])

    def velocity(padding_tokens):
        context = torch.cat([text_tokens, torch.zeros(2, padding_tokens, 16)], dim=1)
        with torch.no_grad():
            return transformer(latents, timestep=timestep, encoder_hidden_states=context).sample

    stock = velocity(64 - 5)
    collapse_wan_padding(transformer, max_sequence_length=64)
    collapsed = velocity(1)
    restore_attention(transformer)
    torch.testing.assert_close(collapsed, stock, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(velocity(64 - 5), stock, atol=0, rtol=0)
    assert (velocity(1) - stock).abs().max() > 1e-3
