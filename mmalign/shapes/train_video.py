"""shapes-video: a rectified-flow text-to-video model of the shapes video world, saved as a WanPipeline.

The classes are Wan 2.1's (Wan Team 2025), at tiny sizes:

- ``AutoencoderKLWan``, a causal 3-D VAE: 9 frames of 32 px ↔ 5 latent frames of 16×16×8
  (2× in time and in space), trained on 6000 clips with MSE + 1e-6·KL, then with the objects'
  pixels weighted 11× (:func:`.train_sd.object_weights`); its ``latents_mean``/``latents_std`` are
  the per-channel statistics of the training latents, which WanPipeline undoes before decoding;
- ``UMT5EncoderModel`` over CLIP's tokenizer, and ``WanTransformer3DModel`` on 5×2×2 patches of
  latents (64 tokens a clip, each holding all 5 latent frames of one place, so the lengths it takes
  are 9, 19, 29… frames), 384 wide, trained together on 20,000 clips' latents from the frozen VAE
  with the velocity ``ε − x₀`` along ``x_t = (1 − t)·x₀ + t·ε``, t uniform in (0, 1), over one
  cosine cycle of the learning rate, and 10% empty captions for classifier-free guidance. Each
  phase keeps an exponential moving average of the weights it trains (decay ``ema_decay``) and
  ends on it, so the average is what ships.

t is uniform rather than SD3's logit-normal, which puts 1.4% of its draws above t = 0.9, where
sampling decides a clip's layout and motion. The optional later phases, all off by default, were
tried on the earlier, narrower transformers (README, "Where it stands"): more cosine cycles
(``restart_steps``), ``deeper_layers`` more blocks grown by :func:`deepen`, and a high-noise phase
(half the draws of t from U(0.9, 1), against :mod:`.stable_targets`, the posterior mean over 128
clips of the same caption).

Apart from the random draws, the shipped weights differ from what :func:`train` makes in one
respect: their text encoder started from the previous, 192-wide model's trained one, not from
random weights.

The text is embedded as WanPipeline embeds it: the encoder reads the real tokens under an
attention mask, and the transformer sees them followed by zeros up to ``max_sequence_length``
(512, the pipeline's default). Training feeds one collapsed copy of those zeros
(:mod:`.collapsed_padding`), which computes the same function 2.7× faster here. Sampling uses
FlowMatchEulerDiscreteScheduler. Load it with ``WanPipeline.from_pretrained(path)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .collapsed_padding import collapse_wan_padding, restore_attention
from .components import build_tokenizer
from .train_sd import encode_all, train_vae
from .stable_targets import stable_targets
from .training import CHECKPOINT_EVERY, Stopwatch, export_atomically, load_checkpoint, run_steps, save_checkpoint
from .video import NUM_FRAMES, sample_clip

# 4× in space with 4 channels blurred the shapes past the oracle's recognition; 2× with 8 keeps them
LATENT_CHANNELS = 8
VAE_CONFIG = dict(base_dim=16, z_dim=LATENT_CHANNELS, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                  latents_mean=[0.0] * LATENT_CHANNELS, latents_std=[1.0] * LATENT_CHANNELS,
                  scale_factor_temporal=2, scale_factor_spatial=2)
TEXT_CONFIG = dict(vocab_size=49408, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=49407,
                   eos_token_id=49407, decoder_start_token_id=0)
# A token holds a place's whole clip (5×2×2×8 = 160 values), so an object's identity over time is
# one token's business: on 1×4×4 patches (128 wide) the shape changed from frame to frame, and
# held-out clips passed 0%; at 192 wide, squares and triangles came out as blobs (README, "Where it stands")
TRANSFORMER_CONFIG = dict(patch_size=(5, 2, 2), num_attention_heads=12, attention_head_dim=32,
                          in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, text_dim=TEXT_CONFIG["d_model"],
                          freq_dim=32, ffn_dim=1536, num_layers=6, rope_max_seq_len=32)
MAX_SEQUENCE_LENGTH = 512  # WanPipeline's default
# the previous, 192-wide model: restart_steps (2000, 4000, 3000, 3000) after 8000 logit-normal steps,
# then deeper_layers 4 for 3000 steps; high_noise_steps 2000 on the 1×4×4 transformer
DEFAULTS = {"steps": 12_000, "lr": 3e-4, "ema_decay": 0.999, "restart_steps": (), "restart_lr": 2e-4,
            "deeper_layers": 0, "deeper_steps": 3000, "deeper_lr": 2e-4, "high_noise_steps": 0,
            "high_noise_lr": 2e-4, "high_noise_fraction": 0.5, "high_noise_from": 0.9, "stable_target_references": 128,
            "vae_steps": 1200, "vae_object_steps": 600, "vae_object_weight": 10.0, "batch_size": 32,
            "vae_batch_size": 8, "vae_lr": 1e-3, "vae_clips": 6000, "train_clips": 20_000,
            "eval_clips": 64, "caption_dropout": 0.1, "seed": 0}
VAE_OBJECTS_CHECKPOINT, TRANSFORMER_CHECKPOINT = "checkpoint-vae-objects.pt", "checkpoint.pt"
TRANSFORMER_HIGH_NOISE_CHECKPOINT = "checkpoint-high-noise.pt"
TRANSFORMER_DEEPER_CHECKPOINT = "checkpoint-deeper.pt"


def build_pipeline(tokenizer_dir: Path):
    """An untrained WanPipeline of the shapes-video architecture."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    return WanPipeline(
        tokenizer=build_tokenizer(tokenizer_dir), text_encoder=UMT5EncoderModel(UMT5Config(**TEXT_CONFIG)),
        transformer=WanTransformer3DModel(**TRANSFORMER_CONFIG), vae=AutoencoderKLWan(**VAE_CONFIG),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
    )


def deepen(transformer, extra_layers: int):
    """``transformer`` with ``extra_layers`` more blocks after its own, computing the same function:
    each new block's attention and feed-forward output projections start at zero, so its residual
    branches add nothing until trained (function-preserving growth, Chen et al. 2016, Net2Net)."""
    from diffusers import WanTransformer3DModel

    deeper = WanTransformer3DModel(**{**transformer.config, "num_layers": transformer.config.num_layers + extra_layers})
    deeper.load_state_dict(transformer.state_dict(), strict=False)
    for block in deeper.blocks[transformer.config.num_layers :]:
        for projection in (block.attn1.to_out[0], block.attn2.to_out[0], block.ffn.net[-1]):
            torch.nn.init.zeros_(projection.weight)
            torch.nn.init.zeros_(projection.bias)
    return deeper.to(transformer.dtype)


def render_clips(count: int, seed: int, split: str = "train") -> tuple[torch.Tensor, list[str]]:
    """``count`` clips of ``split`` as uint8 ``[N,3,T,H,W]`` and their captions."""
    clips, captions = zip(*(sample_clip(index, split, seed=seed) for index in range(count)))
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous(), list(captions)


def text_embeddings(pipeline, texts: list[str]) -> torch.Tensor:
    """WanPipeline's prompt embeddings, with gradients, on one collapsed copy of the padding: the
    encoder reads each caption's tokens under its mask (so padding never changes them), and one zero
    token follows, which :func:`.collapse_wan_padding` counts as the zeros up to MAX_SEQUENCE_LENGTH."""
    tokens = pipeline.tokenizer(texts, padding="longest", truncation=True, max_length=MAX_SEQUENCE_LENGTH - 1,
                                return_tensors="pt")
    hidden = pipeline.text_encoder(tokens.input_ids, tokens.attention_mask).last_hidden_state
    return F.pad(hidden * tokens.attention_mask[..., None], (0, 0, 0, 1))


def train_video_vae(vae, clips: torch.Tensor, output_dir: Path, config: dict, seed: int, resume: bool) -> list[float]:
    """Plain MSE first, then a phase that weighs the objects' pixels ``vae_object_weight`` times more:
    after MSE alone 56% of reconstructed clips lost the shape in some frame, mostly the in-between
    frames that a latent frame shares with its neighbour."""
    losses = train_vae(vae, clips, output_dir, config, seed, resume, desc="shapes-video vae")
    losses += train_vae(vae, clips, output_dir, config, seed, resume, desc="shapes-video vae (objects)",
                        steps=config["vae_object_steps"], object_weight=config["vae_object_weight"],
                        checkpoint_name=VAE_OBJECTS_CHECKPOINT)
    return losses


@torch.no_grad()
def reconstruction_eval(vae, count: int = 64):
    """Video ShapesEval of the VAE's reconstructions of ``count`` held-out clips: the ceiling of any
    model on these latents."""
    from .video_oracle import ShapesVideoEval

    clips, captions = render_clips(count, seed=0, split="heldout")
    pixels = clips.float() / 127.5 - 1
    reconstruction = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)
    return ShapesVideoEval().evaluate(list((reconstruction.transpose(1, 2) + 1) / 2), captions)


def draw_references(rng: np.random.Generator, index: np.ndarray, dropped: np.ndarray, groups: dict, captions: list[str],
                    size: int) -> torch.Tensor:
    """``[B, size]`` clip indices per sample, the sample itself first and then ``size − 1`` others of
    its caption (of any caption where the caption was dropped)."""
    everything = np.arange(len(captions))
    rows = []
    for i, is_dropped in zip(index.tolist(), dropped):
        pool = everything if is_dropped else groups[captions[i]]
        others = pool[pool != i]
        others = others if len(others) else np.array([i])  # a caption seen once: its own latent is the target
        rows.append([i, *rng.choice(others, size - 1, replace=len(others) < size - 1)])
    return torch.tensor(rows)


def train(output_dir: Path, steps: int, seed: int, resume: bool, log=print, **overrides) -> dict:
    """Train every phase into ``output_dir``; ``overrides`` change :data:`DEFAULTS` (tests use tiny runs)."""
    config = {**DEFAULTS, **overrides}
    torch.manual_seed(seed)
    watch = Stopwatch()
    clips, captions = render_clips(config["train_clips"], seed)
    log(f"rendered {len(clips)} training clips of {NUM_FRAMES} frames in {watch}")
    pipeline = build_pipeline(output_dir / "tokenizer")
    vae, transformer, text_encoder = pipeline.vae, pipeline.transformer, pipeline.text_encoder
    vae_losses = train_video_vae(vae, clips[: config["vae_clips"]], output_dir, config, seed, resume)
    vae.requires_grad_(False)
    log(f"vae reconstructions of held-out clips: {reconstruction_eval(vae, config['eval_clips']).accuracy}")
    means, stds = encode_all(vae, clips, batch_size=100)
    sampled = (means + stds * torch.randn_like(means)).transpose(0, 1).flatten(1)
    channel_mean, channel_std = sampled.mean(dim=1), sampled.std(dim=1)
    vae.register_to_config(latents_mean=channel_mean.tolist(), latents_std=channel_std.tolist())
    shape = (1, -1, 1, 1, 1)
    log(f"vae ready in {watch}; latent mean {channel_mean.numpy().round(3)}, std {channel_std.numpy().round(3)}")

    caption_array = np.array(captions)
    groups = {caption: np.flatnonzero(caption_array == caption) for caption in set(captions)}

    def posterior_draw(rows) -> torch.Tensor:
        """Normalised latents of the clips in ``rows``, each drawn from its VAE posterior."""
        sampled = means[rows] + stds[rows] * torch.randn_like(means[rows])
        return (sampled - channel_mean.view(shape)) / channel_std.view(shape)

    def flow_phase(steps: int, lr: float, sample_t, name: str, stream: int, desc: str,
                   stable: bool = False) -> list[float]:
        optimizer = torch.optim.AdamW([*transformer.parameters(), *text_encoder.parameters()], lr=lr, weight_decay=0.01)
        rng = np.random.default_rng([seed, stream])
        trained = torch.nn.ModuleDict({"transformer": transformer, "text_encoder": text_encoder})
        average = AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(config["ema_decay"]))
        resume_state = dict(total_steps=steps, rng=rng, transformer=transformer, text_encoder=text_encoder,
                            optimizer=optimizer, ema=average)
        start = load_checkpoint(output_dir, name, **resume_state) if resume else 0
        drawn = {}  # stable targets need the references' latents from the same posterior draw as the batch's

        def compute_loss(step: int) -> torch.Tensor:
            index = torch.from_numpy(rng.choice(len(clips), config["batch_size"], replace=False))
            if stable:
                if "latents" not in drawn or step % CHECKPOINT_EVERY == 0:  # so a resumed run draws the same
                    drawn["latents"] = posterior_draw(slice(None))
                latents = drawn["latents"][index]
            else:
                latents = posterior_draw(index)
            dropped = rng.random(len(index)) < config["caption_dropout"]
            texts = ["" if is_dropped else captions[i] for i, is_dropped in zip(index, dropped)]
            noise = torch.randn_like(latents)
            t = sample_t(len(index))
            noisy = (1 - t.view(-1, 1, 1, 1, 1)) * latents + t.view(-1, 1, 1, 1, 1) * noise
            velocity = transformer(noisy, timestep=t * 1000, encoder_hidden_states=text_embeddings(pipeline, texts)).sample
            if not stable:
                return F.mse_loss(velocity, noise - latents)
            references = draw_references(rng, index.numpy(), dropped, groups, captions,
                                         config["stable_target_references"])
            targets = stable_targets(noisy, t, drawn["latents"][references])
            return F.mse_loss(velocity, (noisy - targets) / t.view(-1, 1, 1, 1, 1))

        losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=lr, warmup=min(200, steps // 10 + 1),
                           desc=desc, max_grad_norm=1.0, after_step=lambda step: average.update_parameters(trained),
                           checkpoint=lambda step: save_checkpoint(output_dir, step, name, **resume_state))
        # the next phase, and the export, start from the average (a phase that ran no step leaves
        # the weights as they were: the average is their copy until its first update)
        with torch.no_grad():
            for weight, averaged in zip(trained.parameters(), average.module.parameters()):
                weight.copy_(averaged)
        return losses

    collapse_wan_padding(transformer, MAX_SEQUENCE_LENGTH)
    transformer.train()
    text_encoder.train()
    losses = flow_phase(steps, config["lr"], torch.rand, TRANSFORMER_CHECKPOINT, 5, "shapes-video")
    # warm restarts (Loshchilov & Hutter 2017, SGDR): more cosine cycles of the same objective, one
    # per entry of restart_steps; on the 192-wide model, after its first phases training captions
    # passed only 19%, so it was short of training, not of data
    for cycle, cycle_steps in enumerate(config["restart_steps"], start=1):
        losses += flow_phase(cycle_steps, config["restart_lr"], torch.rand, f"checkpoint-restart-{cycle}.pt",
                             7 + cycle, f"shapes-video (uniform t, restart {cycle})")

    if config["deeper_layers"]:
        # the fourth cycle fitted the 192-wide 6-block model's training captions better (17% → 28%) and
        # held-out ones no better (22% → 20%), squares and triangles drawn as blobs on both; more
        # blocks went the same way (held-out 20% → 23%, training 28% → 37%; README, "Where it stands")
        restore_attention(transformer)
        transformer = deepen(transformer, config["deeper_layers"])
        pipeline.register_modules(transformer=transformer)
        collapse_wan_padding(transformer, MAX_SEQUENCE_LENGTH)
        transformer.train()
        losses += flow_phase(config["deeper_steps"], config["deeper_lr"], torch.rand, TRANSFORMER_DEEPER_CHECKPOINT,
                             20, f"shapes-video (uniform t, {config['deeper_layers']} more blocks)")

    def high_noise_t(count: int) -> torch.Tensor:
        high = torch.rand(count) < config["high_noise_fraction"]
        return torch.where(high, config["high_noise_from"] + (1 - config["high_noise_from"]) * torch.rand(count),
                           torch.rand(count))

    # on the 1×4×4 transformer, after both phases, the clean-latent estimate at t ≥ 0.95 was further
    # from the clips than their caption's mean latent, so the first sampling steps added structure
    # that is not there; this phase lowered it only a little, but lifted the direction head
    losses += flow_phase(config["high_noise_steps"], config["high_noise_lr"], high_noise_t,
                         TRANSFORMER_HIGH_NOISE_CHECKPOINT, 7, "shapes-video (high noise)", stable=True)
    restore_attention(transformer)
    transformer.eval()
    text_encoder.eval()
    export_atomically(output_dir, lambda folder: pipeline.to(torch.float16).save_pretrained(folder), last="model_index.json")
    log(f"trained shapes-video in {watch}; saved {output_dir}")
    return {"steps": steps, "minutes": round(watch.minutes, 1), "vae_losses": vae_losses, "losses": losses}
