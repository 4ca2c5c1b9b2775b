"""Tiny, randomly initialised pipelines of the stock diffusers classes, built from configs as
diffusers' own tests build theirs: what ``from_pretrained`` of SD-Turbo, SDXL-Turbo, PixArt-α and
FLUX-schnell gives, at a size that runs in a second. Images are 16×16.

Every text encoder shares the offline CLIP tokenizer (T5's needs a SentencePiece file we cannot
download); the T5 encoders take its 49,408-token vocabulary.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

VOCAB = 49408
TOKENS = 16  # the tokenizer's model_max_length, and so every CLIP encoder's context


@functools.lru_cache(maxsize=1)
def tokenizer():
    from transformers import CLIPTokenizer

    from mmalign.shapes.tokenizer import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer", TOKENS))


def clip_text_encoder(hidden: int = 16, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=TOKENS, bos_token_id=49406,
                            eos_token_id=49407, pad_token_id=49407, projection_dim=projection or hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def t5_text_encoder(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=VOCAB, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2))


def vae(**overrides):
    from diffusers import AutoencoderKL

    config = dict(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                  norm_num_groups=8, sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2)
    return AutoencoderKL(**{**config, **overrides})


def unet(**overrides):
    from diffusers import UNet2DConditionModel

    config = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                  norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return UNet2DConditionModel(**{**config, **overrides})


def one_step_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  timestep_spacing="trailing", steps_offset=1)


def sd_turbo():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae(), text_encoder=clip_text_encoder(), tokenizer=tokenizer(), unet=unet(),
                                   scheduler=one_step_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def sd():
    """A multi-step SD-class pipeline (DDIM, v-prediction with zero terminal SNR, as shapes-sd)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                              clip_sample=False)
    return StableDiffusionPipeline(vae=vae(), text_encoder=clip_text_encoder(), tokenizer=tokenizer(), unet=unet(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def sd3():
    """An SD3-class rectified-flow pipeline without T5, as shapes-flow."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    autoencoder = vae()
    autoencoder.register_to_config(shift_factor=0.0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=8)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=autoencoder,
        text_encoder=clip_text_encoder(projection=16), tokenizer=tokenizer(),
        text_encoder_2=clip_text_encoder(projection=16), tokenizer_2=tokenizer(),
        text_encoder_3=None, tokenizer_3=None)


def sdxl_turbo():
    from diffusers import StableDiffusionXLPipeline

    time_embedding = 8  # SDXL adds 6 size/crop numbers, each embedded, to the pooled text embedding
    return StableDiffusionXLPipeline(
        vae=vae(), text_encoder=clip_text_encoder(), text_encoder_2=clip_text_encoder(projection=16),
        tokenizer=tokenizer(), tokenizer_2=tokenizer(), scheduler=one_step_scheduler(),
        unet=unet(cross_attention_dim=32, addition_embed_type="text_time", addition_time_embed_dim=time_embedding,
                  projection_class_embeddings_input_dim=6 * time_embedding + 16))


def pixart():
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=32,
        in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    return PixArtAlphaPipeline(tokenizer=tokenizer(), text_encoder=t5_text_encoder(), vae=vae(), transformer=transformer,
                               scheduler=DDIMScheduler(timestep_spacing="trailing", steps_offset=1, clip_sample=False))


def flux_schnell():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=16, axes_dims_rope=[4, 2, 2])
    autoencoder = vae()
    autoencoder.register_to_config(shift_factor=0.0)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=autoencoder, text_encoder=clip_text_encoder(),
                        tokenizer=tokenizer(), text_encoder_2=t5_text_encoder(), tokenizer_2=tokenizer(),
                        transformer=transformer)


# what each family needs at call time, beyond the prompt, to run at 16×16 in one step
CALL_KWARGS = {
    "sd_turbo": {},
    "sdxl_turbo": {},
    "pixart": {"use_resolution_binning": False, "max_sequence_length": TOKENS},
    "flux_schnell": {"height": 16, "width": 16, "max_sequence_length": TOKENS},
    "sd": {"num_inference_steps": 2, "guidance_scale": 2.0},
    "sd3": {"num_inference_steps": 2, "guidance_scale": 2.0, "max_sequence_length": TOKENS},
    "wan": {"num_inference_steps": 2, "guidance_scale": 2.0, "max_sequence_length": TOKENS, "height": 16, "width": 16,
            "num_frames": 5},
}


def save(name: str, directory, seed: int = 0) -> str:
    """Build ``name`` and save it as a pipeline folder, for code that loads models by path."""
    build(name, seed).save_pretrained(directory, safe_serialization=True)
    return str(directory)


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    pipeline = globals()[name]()
    for module in pipeline.components.values():  # as from_pretrained leaves them: no dropout
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def wan(temporal_patch: int = 1):
    """Wan 2.1's classes: 5 frames of 16×16 ↔ 3 latent frames of 8×8 (2× in time and space)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    autoencoder = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                                   latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.5, 1.0, 2.0],
                                   scale_factor_temporal=2, scale_factor_spatial=2)
    transformer = WanTransformer3DModel(patch_size=(temporal_patch, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=4, out_channels=4, text_dim=32, freq_dim=16, ffn_dim=32,
                                        num_layers=1, rope_max_seq_len=16)
    return WanPipeline(tokenizer=tokenizer(), text_encoder=umt5_text_encoder(), transformer=transformer, vae=autoencoder,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def wan_temporal_patches():
    """Temporal patches: one token holds all 3 latent frames of its place, so 5 frames (or 11,
    17...) fit and 7 do not."""
    return wan(temporal_patch=3)


def umt5_text_encoder(d_model: int = 32):
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(vocab_size=VOCAB, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                       pad_token_id=49407, decoder_start_token_id=0))
