"""RAFT: reward-ranked fine-tuning (Dong et al., "RAFT: Reward rAnked FineTuning for Generative
Foundation Model Alignment", TMLR 2023, arXiv:2304.06767).

Each iteration samples K outputs per prompt from the current model, keeps the best by a reward
(optionally only the global top fraction of those), and fine-tunes on what it kept with the
model's own training loss: the denoising loss for diffusion models, the LM loss for causal LMs.
The reward is only ranked, never differentiated, so any reward works: non-differentiable ones,
verifiers and judges included.

The loop itself (accelerate, checkpoints, resume, logging) is :func:`~mmalign.algorithms.finetune.finetune`;
this file holds RAFT's config, its selection rule and its data collection for images and text.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .finetune import FinetuneConfig

MODES = ("online", "offline")


@dataclass
class RAFTConfig(FinetuneConfig):
    """RAFT's settings; the shared model, training and logging fields are :class:`FinetuneConfig`'s.

    Defaults follow LMFlow's ``RaftAlignerArguments`` (the authors' code): 20 iterations, the best of
    K = 1 / top_reward_percentage = 5 samples per prompt (its "local" ranking, top_reward_percentage=0.2),
    one SFT epoch per iteration on what was kept.

    Data:
        prompt_file: a text file with one prompt per line; by default the shapes world's training
            prompts (images) or arithmetic problems (text).
        prompts_per_iteration: prompts sampled (with replacement) from the pool each iteration.
        num_eval_prompts: held-out prompts for the evaluation logged each ``eval_every`` iterations.

    Method:
        reward: reward name or ``local-dir:``/``hf-hub:`` path scoring the samples (``load_reward``).
        num_samples_per_prompt: K. K = 1 gives nothing to rank and so nothing to learn; it warns.
        keep_per_prompt: how many of each prompt's K samples are kept (the paper: 1).
        global_top_fraction: if set, of the kept samples only this top fraction by reward, ranked over
            all prompts, is trained on (LMFlow's "top" ranking, applied to the per-prompt winners).
        mode: "online" samples from the updated model every iteration (the paper); "offline" samples
            one fixed pool from the base model and trains on its selection every iteration.
        num_epochs: SFT passes over the kept samples per iteration.
        caption_dropout: images only: the fraction of kept samples trained with the empty prompt. It
            keeps the unconditional prediction, which classifier-free guidance subtracts, moving
            with the conditional one; without it, guided samples drift as the adapter learns.

    Sampling (images):
        num_inference_steps, guidance_scale: how the pool is sampled; ``None`` means the model's own
            defaults (evaluation always samples with those, as users do). The kept samples
            are learnt with the denoising loss at uniform timesteps, as the model was trained, so RAFT
            suits multi-step samplers; a distilled one-step model (shapes-turbo, SD-Turbo) was not trained
            with that loss, and fine-tuning it with the loss undoes its distillation.

    Sampling (text):
        max_new_tokens, temperature: generation settings of the causal LM.
    """

    model: str = "shapes-sd"
    output_dir: str = "outputs/raft"
    num_iterations: int = 20
    reward: str = "shapes-clip"
    prompt_file: str | None = None
    prompts_per_iteration: int = 64
    num_eval_prompts: int = 96
    num_samples_per_prompt: int = 5
    keep_per_prompt: int = 1
    global_top_fraction: float | None = None
    mode: str = "online"
    num_epochs: int = 1
    caption_dropout: float = 0.1
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    max_new_tokens: int = 8
    temperature: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        for name in ("prompts_per_iteration", "num_samples_per_prompt", "keep_per_prompt", "num_epochs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: must be at least 1, got {getattr(self, name)}.")
        if self.keep_per_prompt > self.num_samples_per_prompt:
            raise InvalidInputError(f"keep_per_prompt: cannot keep {self.keep_per_prompt} of {self.num_samples_per_prompt} "
                                    "samples per prompt. Fix: lower keep_per_prompt or raise num_samples_per_prompt.")
        if not 0 <= self.caption_dropout < 1:
            raise InvalidInputError(f"caption_dropout: must lie in [0, 1), got {self.caption_dropout}.")
        if self.global_top_fraction is not None and not 0 < self.global_top_fraction <= 1:
            raise InvalidInputError(f"global_top_fraction: must lie in (0, 1], got {self.global_top_fraction}.")
        if self.mode not in MODES:
            raise InvalidInputError(f"mode: must be one of {MODES}, got {self.mode!r}.")
        if self.num_samples_per_prompt == 1:
            warnings.warn("num_samples_per_prompt=1: with one sample per prompt there is nothing to rank, so RAFT "
                          "only fine-tunes on the model's own samples and learns nothing from the reward. "
                          "Use K ≥ 2 (the paper's default ranking keeps 1 of 5).", stacklevel=3)


def select_samples(rewards: Tensor, keep_per_prompt: int = 1, global_top_fraction: float | None = None,
                   all_winners: Tensor | None = None) -> tuple[Tensor, int]:
    """RAFT's selection. ``rewards`` is ``[P, K]`` (NaN where unscored). Returns a ``[P, K]`` bool mask
    of the kept samples and the number of prompts skipped because none of their samples was scored.

    Each prompt keeps its ``keep_per_prompt`` best scored samples (ties broken by lower index). With
    ``global_top_fraction``, only winners whose reward reaches the top fraction of ``all_winners``
    (every process's winners; this process's if None) are kept, so the fraction is global across
    prompts and processes.
    """
    if rewards.ndim != 2:
        raise InvalidInputError(f"rewards: expected [prompts, samples], got shape {tuple(rewards.shape)}.")
    scored = ~torch.isnan(rewards)
    skipped = int((~scored.any(1)).sum())
    ranked = torch.where(scored, rewards, torch.full_like(rewards, -torch.inf))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :keep_per_prompt]
    keep = torch.zeros_like(scored).scatter_(1, order, True) & scored
    if global_top_fraction is not None:
        pool = rewards[keep] if all_winners is None else all_winners[~torch.isnan(all_winners)]
        if pool.numel():
            count = max(1, round(global_top_fraction * pool.numel()))
            threshold = torch.topk(pool, count).values[-1]
            keep &= ranked >= threshold
    return keep, skipped


def load_ranking_reward(name: str, modality: str):
    """The reward RAFT ranks by, refused with a fix when it scores another modality."""
    from ..rewards import load_reward

    reward = load_reward(name)
    if reward.spec.modality != modality:
        raise InvalidInputError(f"reward: {name!r} scores {reward.spec.modality}, not {modality}. "
                                f"Fix: pick a {modality} reward (`mmalign rewards` lists them).")
    return reward


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"prompt_file: {str(path)!r} is not a file.")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise InvalidInputError(f"prompt_file: {path} holds no prompts. Fix: write one prompt per line.")
    return prompts


def iteration_prompts(pool: list[str], count: int, seed: int, iteration: int, process: int, processes: int) -> list[str]:
    """This process's share of the iteration's prompts: the same draw on every process, then split."""
    if count % processes:
        raise InvalidInputError(f"prompts_per_iteration: {count} does not split evenly over {processes} processes. "
                                f"Fix: use a multiple of {processes}.")
    generator = torch.Generator().manual_seed(seed * 7_919 + iteration)
    picks = torch.randint(len(pool), (count,), generator=generator).tolist()
    return [pool[i] for i in picks][process::processes]


def selection_metrics(rewards: Tensor, keep: Tensor, skipped: int) -> dict:
    return {"reward_mean": float(rewards.nanmean()), "reward_kept": float(rewards[keep].mean()) if keep.any() else float("nan"),
            "kept": int(keep.sum()), "skipped_groups": skipped}


def gather_winners(accelerator, rewards: Tensor, keep_per_prompt: int) -> Tensor:
    """Every process's per-prompt winners' rewards, for a global top fraction."""
    winners, _ = select_samples(rewards, keep_per_prompt)
    values = torch.where(winners, rewards, torch.full_like(rewards, float("nan")))
    return accelerator.gather(values.to(accelerator.device)).cpu()


def keep_best(accelerator, rewards: Tensor, config: RAFTConfig) -> tuple[Tensor, dict]:
    """The ``[P, K]`` mask of the samples this process keeps under ``config``'s selection, and the
    iteration's selection metrics; a global top fraction is taken over every process's winners."""
    winners = gather_winners(accelerator, rewards, config.keep_per_prompt) if config.global_top_fraction else None
    keep, skipped = select_samples(rewards, config.keep_per_prompt, config.global_top_fraction, winners)
    return keep, selection_metrics(rewards, keep, skipped)


def is_text_model(name: str) -> bool:
    """A causal LM (the shipped shapes-lm, or a transformers folder) rather than a diffusers pipeline;
    hub ids are taken for pipelines, since telling them apart would need the network."""
    folder = Path(name).expanduser()
    if name == "shapes-lm":
        return True
    return folder.is_dir() and (folder / "config.json").is_file() and not (folder / "model_index.json").is_file()


def raft_method(config: RAFTConfig):
    """The RAFT method object for ``config.model``: images for a diffusers pipeline, text for a causal LM."""
    if is_text_model(config.model):
        from .raft_text import TextRAFT

        return TextRAFT(config)
    from .raft_images import ImageRAFT

    return ImageRAFT(config)


def raft(config: RAFTConfig | None = None, resume: bool = False, **overrides) -> list[dict]:
    """Run RAFT; returns the log (one row per iteration). ``overrides`` are config fields."""
    from .finetune import finetune

    config = config or RAFTConfig(**overrides)
    return finetune(raft_method(config), resume=resume)
