"""Flow-RWR: reward-weighted flow matching (Liu et al., "Improving Video Generation with Human
Feedback", 2025, arXiv:2501.13918, Sec. 4; reward-weighted regression: Peters & Schaal 2007,
for diffusion Lee et al. 2023).

Each iteration samples ``group_size`` per prompt and trains on every sample with the flow-matching
loss weighted by its reward:

    L = mean_i w_i · ‖v_i − vθ(x_{i,σ})‖²,    w_i ∝ exp(r_i / τ)  (mean 1 over each iteration's samples)

exponentiated as the paper writes it (flow_grpo's port weights by the raw r). With
``normalize="group"`` the rewards are first standardised within their prompt's group, so prompts
of different difficulty weigh alike. ``weighting="best"`` keeps only each group's best sample with
weight 1: supervised fine-tuning on the winners, the paper's SFT baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .finetune import Collected
from .flow_method import FlowConfig, FlowMethod
from .raft import iteration_prompts

WEIGHTINGS = ("exp", "best")
NORMALIZATIONS = ("group", "none")


@dataclass
class FlowRWRConfig(FlowConfig):
    """Flow-RWR's settings; the shared model, training and logging fields are :class:`FinetuneConfig`'s.

    Data:
        reward: scores each sample of a group. prompt_file: prompts (default: the shapes world's).
        prompts_per_iteration: prompts per iteration. group_size: samples per prompt.

    Method:
        weighting: "exp", w = exp(r/τ) (VideoAlign), or "best", each group's best sample alone
            with weight 1 (SFT on winners).
        temperature: τ of the exponent.
        normalize: "group", rewards standardised within each prompt's group (mean 0, std 1) before
            weighting; or "none", the raw reward.
        num_epochs: passes over the samples collected each iteration.

    Sampling: num_inference_steps, guidance_scale, height, width, num_frames and sample_batch_size
    as for :class:`~mmalign.algorithms.flow_dpo.FlowDPOConfig`.

    Training: learning_rate 5e-6, LoRA rank 64, alpha 128 on the attention projections, as for
    Flow-DPO (VideoAlign); train_batch_size 16 per process is ours.
    """

    output_dir: str = "outputs/flow-rwr"
    num_iterations: int = 20
    learning_rate: float = 5e-6
    train_batch_size: int = 16
    weighting: str = "exp"
    temperature: float = 1.0
    normalize: str = "group"
    num_epochs: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.weighting not in WEIGHTINGS:
            raise InvalidInputError(f"weighting: must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if self.normalize not in NORMALIZATIONS:
            raise InvalidInputError(f"normalize: must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}.")
        if not self.temperature > 0:
            raise InvalidInputError(f"temperature: must be > 0, got {self.temperature}.")
        if self.reward is None:
            raise InvalidInputError("reward: Flow-RWR weights samples by a reward. Fix: set reward (e.g. shapes-video-reward).")
        if self.num_epochs < 1:
            raise InvalidInputError(f"num_epochs: must be at least 1, got {self.num_epochs}.")


def rwr_weights(rewards: Tensor, temperature: float = 1.0, normalize: str = "group", weighting: str = "exp") -> Tensor:
    """``[P, K]`` sample weights from ``[P, K]`` rewards: ``exp(r/τ)`` (or 1 for each group's best),
    scaled to mean 1 over the samples kept (weight > 0), so that a minibatch loss ``mean(w·e)``
    weighs every sample against the whole collected set; computed as ``exp(r/τ − max)`` so no
    reward overflows.
    A group with a NaN reward weighs 0 (it was not scored); so does a constant group under group
    normalisation (it ranks nothing)."""
    scored = ~rewards.isnan().any(1, keepdim=True)
    rewards = torch.nan_to_num(rewards, nan=0.0)
    if weighting == "best":
        weights = torch.zeros_like(rewards).scatter_(1, rewards.argmax(1, keepdim=True), 1.0)
    else:
        if normalize == "group":
            spread = rewards.std(1, keepdim=True)
            scored = scored & (spread > 0)
            rewards = (rewards - rewards.mean(1, keepdim=True)) / spread.clamp_min(1e-8)
        logits = (rewards / temperature).masked_fill(~scored, float("-inf"))
        weights = torch.exp(logits - logits.max()) if scored.any() else torch.zeros_like(rewards)
    weights = weights * scored
    kept = weights > 0  # the samples a run trains on
    return weights / weights[kept].mean() if kept.any() else weights


def flow_rwr_loss(errors: Tensor, weights: Tensor) -> Tensor:
    """``mean(w_i·e_i)``: the flow-matching errors of a minibatch, each weighted by its sample's
    weight from :func:`rwr_weights` (mean 1 over the collected set)."""
    return (weights * errors).mean()


class FlowRWR(FlowMethod):
    name = "flow-rwr"

    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected:
        config = self.config
        prompts = iteration_prompts(self.pool, config.prompts_per_iteration, config.seed, iteration,
                                    accelerator.process_index, accelerator.num_processes)
        samples = self.sample_groups(prompts, generator)
        weights = rwr_weights(samples["rewards"], config.temperature, config.normalize, config.weighting)
        k = config.group_size
        examples = [{"prompt": prompts[i // k], "latents": samples["latents"][i], "weight": float(w)}
                    for i, w in enumerate(weights.flatten().tolist()) if w > 0]
        metrics = {"reward_mean": float(samples["rewards"].nanmean()), "samples": len(examples),
                   "weight_max": float(weights.max()) if examples else float("nan")}
        return Collected(examples, metrics, passes=config.num_epochs)

    def loss(self, module, examples: list[dict], generator: torch.Generator) -> Tensor:
        x0 = torch.stack([e["latents"] for e in examples])
        noise, sigmas = self.draw_noise(x0, generator)
        errors = self.flow_errors(module, x0, noise, sigmas, self.conditioning([e["prompt"] for e in examples]))
        weights = torch.tensor([e["weight"] for e in examples], device=errors.device)
        return flow_rwr_loss(errors, weights)


def flow_rwr(config: FlowRWRConfig | None = None, resume: bool = False, **overrides) -> list[dict]:
    """Run Flow-RWR (or SFT on winners, ``weighting="best"``); returns the log, one row per iteration."""
    from .finetune import finetune

    return finetune(FlowRWR(config or FlowRWRConfig(**overrides)), resume=resume)
