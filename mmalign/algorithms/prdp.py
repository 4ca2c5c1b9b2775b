"""PRDP: proximal reward difference prediction (Deng et al., "PRDP: Proximal Reward Difference
Prediction for Large-Scale Reward Finetuning of Diffusion Models", CVPR 2024, arXiv:2402.08714).

The model learns to predict, from two denoising trajectories of one prompt, the difference of their
rewards: its log-probability ratio to the reference, summed over steps, is regressed onto
``Δr / β``. A model that predicts every difference exactly is the optimum of the KL-regularised RL
objective (the paper's Eq. 15). Proximal updates keep each step's log-ratio within ``±ε`` of the
sampling model's, as PPO keeps its ratio. No official code is public; equations are the paper's.

The loop (accelerate, checkpoints, resume, logging) is :func:`~mmalign.algorithms.finetune.finetune`;
this file holds PRDP's config, loss and data collection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .finetune import Collected
from .raft import iteration_prompts, load_ranking_reward
from .trajectory_method import TrajectoryConfig, TrajectoryMethod

STEP_REDUCTIONS = ("sum", "mean")


@dataclass
class PRDPConfig(TrajectoryConfig):
    """PRDP's settings; the shared model, training and logging fields are :class:`FinetuneConfig`'s.

    Defaults are the paper's large-scale setting (Table 4, App. E) unless marked.

    Data:
        reward: the reward whose differences are predicted (``load_reward``); any reward works,
            since it is never differentiated.
        prompt_file: one prompt per line (default: the shapes world's training prompts).
        prompts_per_iteration: N, prompts per epoch (64).
        samples_per_prompt: B ≥ 2 trajectories per prompt; every pair of them is used (8).

    Sampling:
        num_inference_steps: 50, the paper's DDPM sampler, i.e. DDIM with eta = 1.
        guidance_scale: 5.0, the same for policy, reference and old policy.
        log_prob_reduction: over latent dimensions, "mean" (as DDPO, whose sampler the paper uses) or "sum".
        sample_batch_size: trajectories sampled at once.
        gradient_checkpointing: recompute the denoiser's activations in the backward pass, since each
            gradient step runs every step of every trajectory of its groups (on by default).

    Method:
        beta: β of the target Δr/β (Eq. 14). 10, from the paper's KL-regularisation study (Sec. 4.4,
            App. C: β = 10 keeps text–image alignment); Table 4's 3e-6…3e-5 go with its code's
            mean over steps and its rewards' scale. β is relative to how log-probs are reduced: Eq. 19
            sums full densities, so with ``log_prob_reduction="mean"`` the same β means a D-fold
            (latent size) weaker regularisation; scale β to your reward and reduction.
        clip_range: ε, each step's log-ratio to the reference is clipped to within ε of the
            sampling model's (Eq. 20), i.e. log πθ/πθ_old to ±ε; the loss is the max of the clipped
            and unclipped squared errors (Eq. 18). 1e-4 (Table 4).
        step_reduction: r̂ over steps: "sum" (Eq. 19) or "mean" (the paper's App. G code).
        gradient_steps_per_iteration: K, passes over each epoch's samples, θ_old being the model that
            sampled them: their log-probs are stored at sampling time, not a third model (1). With
            ``train_batch_size`` equal to ``prompts_per_iteration`` (the default), a pass is one
            gradient step on the whole epoch, as in Algorithm 1.

    Training: learning_rate 7e-6 and adam_weight_decay 1e-4 (Table 4; the paper fine-tunes all of the
    UNet, mmalign a LoRA, whose disabled adapters are the reference); train_batch_size 64 prompt
    groups, i.e. the whole epoch in one step, as Algorithm 1.
    """

    output_dir: str = "outputs/prdp"
    num_iterations: int = 1000
    learning_rate: float = 7e-6
    adam_weight_decay: float = 1e-4
    train_batch_size: int = 64
    num_inference_steps: int = 50
    samples_per_prompt: int = 8
    beta: float = 10.0
    clip_range: float = 1e-4
    step_reduction: str = "sum"
    gradient_steps_per_iteration: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.samples_per_prompt < 2:
            raise InvalidInputError(f"samples_per_prompt: PRDP compares pairs, so B must be at least 2, got "
                                    f"{self.samples_per_prompt}.")
        if self.step_reduction not in STEP_REDUCTIONS:
            raise InvalidInputError(f"step_reduction: must be one of {STEP_REDUCTIONS}, got {self.step_reduction!r}.")
        if self.gradient_steps_per_iteration < 1:
            raise InvalidInputError(f"gradient_steps_per_iteration: must be at least 1, got {self.gradient_steps_per_iteration}.")
        if self.reward is None:
            raise InvalidInputError("reward: PRDP predicts reward differences, so it needs a reward. Fix: set reward.")


def prdp_loss(log_ratios: Tensor, old_log_ratios: Tensor, rewards: Tensor, beta: float = 10.0, clip_range: float = 1e-4,
              step_reduction: str = "sum") -> tuple[Tensor, dict]:
    """The proximal RDP loss over all pairs of each group's samples.

    ``log_ratios`` ``[G, B, T]`` are log πθ/πref of each step (with gradients), ``old_log_ratios``
    the same under the sampling model θ_old, ``rewards`` ``[G, B]``. With r̂ = Σ_t (or mean_t) of the
    log-ratios (Eq. 19), r̂ᶜ the same of ``clip(log_ratio, old − ε, old + ε)`` (Eqs. 20–21), and for
    every pair i < j of a group, Δr̂ = r̂_i − r̂_j, Δr = r_i − r_j:

        l = max((Δr̂ − Δr/β)², (Δr̂ᶜ − Δr/β)²)   (Eqs. 14, 17, 18)

    averaged over the pairs whose rewards are both scored and differ (the paper's code averages
    over ``reward_diffs > 0``). Returns the loss and, detached, the share of pairs whose Δr̂ has Δr's
    sign (implicit accuracy) and the share of clipped steps.
    """
    reduce = (lambda x: x.sum(-1)) if step_reduction == "sum" else (lambda x: x.mean(-1))
    log_ratios, old_log_ratios = log_ratios.float(), old_log_ratios.float()
    clipped = torch.clamp(log_ratios, old_log_ratios - clip_range, old_log_ratios + clip_range)
    predicted, predicted_clipped = reduce(log_ratios), reduce(clipped)  # [G, B]
    rewards = rewards.float()
    pair_difference = lambda x: x[:, :, None] - x[:, None, :]  # noqa: E731  [G, B, B]: row i minus column j
    target = pair_difference(rewards) / beta
    upper = torch.ones(rewards.shape[1], rewards.shape[1], dtype=torch.bool, device=rewards.device).triu(1)
    valid = upper & torch.isfinite(target) & (target != 0)
    target = torch.nan_to_num(target)
    errors = torch.maximum((pair_difference(predicted) - target) ** 2, (pair_difference(predicted_clipped) - target) ** 2)
    count = valid.sum()
    loss = torch.where(valid, errors, torch.zeros_like(errors)).sum() / count.clamp(min=1)
    with torch.no_grad():
        agree = (torch.sign(pair_difference(predicted)) == torch.sign(target)) & valid
        metrics = {"implicit_accuracy": float(agree.sum() / count.clamp(min=1)),
                   "clip_fraction": float((clipped != log_ratios).float().mean()), "pairs": int(count)}
    return loss, metrics


class PRDP(TrajectoryMethod):
    name = "prdp"

    def __init__(self, config: PRDPConfig):
        super().__init__(config, load_ranking_reward(config.reward, "image"))

    @torch.no_grad()
    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected:
        """B trajectories per prompt from the current model (θ_old), their rewards, and each step's
        log-probs under θ_old and under the reference."""
        config = self.config
        prompts = iteration_prompts(self.pool, config.prompts_per_iteration, config.seed, iteration,
                                    accelerator.process_index, accelerator.num_processes)
        b = config.samples_per_prompt
        repeated = [prompt for prompt in prompts for _ in range(b)]
        trajectories = self.sample(repeated, generator)
        rewards = self.reward(trajectories.images, repeated).reward.float().cpu().view(len(prompts), b)
        group = lambda x: x.view(len(prompts), b, *x.shape[1:])  # noqa: E731
        latents, old, reference = group(trajectories.latents), group(trajectories.log_probs), group(trajectories.ref_log_probs)
        examples = [{"latents": latents[p].clone(), "old_log_probs": old[p].clone(), "ref_log_probs": reference[p].clone(),
                     "rewards": rewards[p].clone(),  # clones: a view would carry its whole batch to other processes
                     "text": {key: value[p * b].clone() for key, value in trajectories.conditioning.items()}}
                    for p in range(len(prompts))]
        metrics = {"reward_mean": float(rewards.nanmean()), "reward_std_in_group": float(rewards.std(1).nanmean()),
                   "kl_to_reference": float(trajectories.kl.mean())}
        return Collected(examples, metrics, passes=config.gradient_steps_per_iteration)

    def loss(self, module, examples: list[dict], generator: torch.Generator):
        groups, (b, steps_plus_one) = len(examples), examples[0]["latents"].shape[:2]
        steps = steps_plus_one - 1
        latents = torch.stack([e["latents"] for e in examples])  # [G, B, T+1, C, H, W]
        flat = lambda x: x.reshape(-1, *x.shape[3:])  # noqa: E731
        text = {key: torch.stack([e["text"][key] for e in examples]).repeat_interleave(b * steps, 0)
                for key in examples[0]["text"]}
        step_index = torch.arange(steps).repeat(groups * b)
        policy = self.policy_log_probs(module, flat(latents[:, :, :-1]), flat(latents[:, :, 1:]), step_index, text)
        policy = policy.view(groups, b, steps)
        reference = torch.stack([e["ref_log_probs"] for e in examples]).to(policy.device)
        old = torch.stack([e["old_log_probs"] for e in examples]).to(policy.device)
        rewards = torch.stack([e["rewards"] for e in examples]).to(policy.device)
        return prdp_loss(policy - reference, old - reference, rewards, self.config.beta, self.config.clip_range,
                         self.config.step_reduction)


def prdp(config: PRDPConfig | None = None, resume: bool = False, **overrides) -> list[dict]:
    """Run PRDP; returns the log (one row per iteration). ``overrides`` are config fields."""
    from .finetune import finetune

    return finetune(PRDP(config or PRDPConfig(**overrides)), resume=resume)
