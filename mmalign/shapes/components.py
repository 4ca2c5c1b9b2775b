"""The tiny diffusers components of the shapes-world generators, built from configs.

They are the stock classes (AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer,
DDIMScheduler), at a size a CPU trains in minutes, so every code path exercised on the shapes
world is the one that runs on Stable Diffusion checkpoints.
"""

from __future__ import annotations

from pathlib import Path

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
    block_out_channels=(16, 32), norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64, 64), norm_num_groups=16, cross_attention_dim=64, attention_head_dim=8,
    # attention at 8×8 and 4×4 only: on a CPU, attention over the 16×16 level costs more than
    # all the convolutions together, and an 8×8 cell is 4×4 pixels, fine enough for these shapes
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
# Stable Diffusion's noise schedule, with trailing timestep spacing so that few-step sampling
# starts from pure noise.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    from .tokenizer import write_clip_tokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(directory, TEXT_CONFIG["max_position_embeddings"]))


def build_unet(**overrides):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_CONFIG, **overrides})


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)
