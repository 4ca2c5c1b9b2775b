"""D3PO: DPO on the denoising steps of diffusion models, from human or simulated preferences
(Yang et al., "Using Human Feedback to Fine-tune Diffusion Models without Any Reward Model",
CVPR 2024, arXiv:2311.13231; official code github.com/yk7333/d3po).

Two trajectories of one prompt start from the same ``x_T``; someone (a person, or a reward acting as
one) prefers one final image. Each denoising step is then a DPO comparison: the preferred
trajectory's step should gain probability relative to the reference, the other's should lose it.

The loop (accelerate, checkpoints, resume, logging) is :func:`~mmalign.algorithms.finetune.finetune`;
this file holds D3PO's config, loss and data collection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError
from ..sampling.pipelines import initial_noise
from ..sampling.trajectories import encode_images, posterior_trajectories, text_conditioning
from .finetune import Collected
from .raft import iteration_prompts, load_ranking_reward
from .trajectory_method import TrajectoryConfig, TrajectoryMethod


@dataclass
class D3POConfig(TrajectoryConfig):
    """D3PO's settings; the shared model, training and logging fields are :class:`FinetuneConfig`'s.

    Defaults follow the official code (``config/base.py`` and ``scripts/train_with_rm.py`` of
    yk7333/d3po) unless marked.

    Preferences:
        reward: the simulated human: a reward name that labels each pair (``load_reward``); with
            ``preferences`` set it only reports the proxy beside ShapesEval. Ties are skipped.
        preferences: a preference store (``.db``), or a JSONL or Parquet file of pairs
            (:func:`~mmalign.prefs.load_preference_pairs`). Their images carry no recorded sampling
            path, so each pair gets a fresh one from the forward process every iteration, shared by
            its two images (see :func:`~mmalign.sampling.trajectories.posterior_trajectories`).
        prompt_file: prompts for simulated preferences (one per line; default: the shapes world's).
        prompts_per_iteration: pairs sampled each iteration (code: 2 batches × 10 per GPU = 20).

    Sampling:
        num_inference_steps: DDIM steps (code: 20). eta: DDIM η (code: 1.0; must be > 0).
        guidance_scale: classifier-free guidance of sampling and training, policy and reference
            alike (code: 5.0).
        log_prob_reduction: "mean" (code, after DDPO: log-probs averaged over latent dimensions) or "sum".
        sample_batch_size: trajectories sampled at once.

    Memory:
        gradient_checkpointing: recompute the denoiser's activations in the backward pass (code:
            ``train.activation_checkpoint = True``); less memory for more time.

    Method:
        beta: β of the DPO logit (code: ``train.beta = 0.1``).
        clip_range: ε; each step's ratio πθ/πref is clamped to [1−ε, 1+ε] before its log is taken
            (code: ``train.eps = 0.1``). As in the official code this zeroes the gradient of a step
            whose ratio has left the band: a trust region, not a cap on the loss.
        timestep_fraction: the share of each pair's steps trained on per iteration (code: 1.0).
        num_epochs: passes over the collected steps per iteration (code: ``num_inner_epochs = 1``).

    Training (code): learning_rate 3e-5, adam_weight_decay 1e-4, train_batch_size 1 (one pair's
    step per optimiser step), 400 iterations, LoRA on the UNet's attention (rank 4).
    """

    output_dir: str = "outputs/d3po"
    num_iterations: int = 400
    learning_rate: float = 3e-5
    adam_weight_decay: float = 1e-4
    train_batch_size: int = 1
    preferences: str | None = None
    prompts_per_iteration: int = 20
    timestep_fraction: float = 1.0
    num_epochs: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.timestep_fraction <= 1:
            raise InvalidInputError(f"timestep_fraction: must lie in (0, 1], got {self.timestep_fraction}.")
        if self.num_epochs < 1:
            raise InvalidInputError(f"num_epochs: must be at least 1, got {self.num_epochs}.")
        if self.reward is None and self.preferences is None:
            raise InvalidInputError("reward: with no preferences file, a reward must label the pairs. Fix: set "
                                    "reward (e.g. shapes-clip) or preferences (a store or JSONL/Parquet file).")


def d3po_loss(policy_chosen: Tensor, reference_chosen: Tensor, policy_rejected: Tensor, reference_rejected: Tensor,
              beta: float = 0.1, clip_range: float = 0.1) -> Tensor:
    """Per-step D3PO loss, elementwise:

        −log σ(β·(log clamp(r_w, 1−ε, 1+ε) − log clamp(r_l, 1−ε, 1+ε))),  r = πθ(x_{t−1}|x_t)/πref(x_{t−1}|x_t),

    from log-probabilities (the official code's ``ratio_0``/``ratio_1``, with the ±1 preference
    folded into which trajectory is chosen). The clamp passes no gradient once a ratio leaves the band.
    """
    chosen = clamped_log_ratio(policy_chosen, reference_chosen, clip_range)
    rejected = clamped_log_ratio(policy_rejected, reference_rejected, clip_range)
    return -F.logsigmoid(beta * (chosen - rejected))


def clamped_log_ratio(policy: Tensor, reference: Tensor, clip_range: float) -> Tensor:
    """``log clamp(πθ/πref, 1−ε, 1+ε)`` from log-probabilities, clamped in log space: the same value
    and the same zero gradient outside the band, without ``exp`` overflowing to a NaN gradient."""
    return (policy.float() - reference.float()).clamp(math.log(1 - clip_range), math.log(1 + clip_range))


def simulated_choices(rewards: Tensor) -> Tensor:
    """``[P]`` +1 where the first of each pair's ``[P, 2]`` rewards is higher, −1 where the second is,
    0 for a tie or an unscored image (such pairs are skipped)."""
    choice = torch.sign(rewards[:, 0] - rewards[:, 1])
    return torch.nan_to_num(choice, nan=0.0)


def sides(chosen: dict, rejected: dict):
    return (("chosen", chosen), ("rejected", rejected))


class D3PO(TrajectoryMethod):
    name = "d3po"

    def __init__(self, config: D3POConfig):
        reward = load_ranking_reward(config.reward, "image") if config.reward else None
        super().__init__(config, reward)
        self.pairs = None
        if config.preferences:
            from ..prefs import load_preference_pairs

            self.pairs = load_preference_pairs(config.preferences, include_ties=False)
            if not self.pairs:
                raise InvalidInputError(f"preferences: {config.preferences} holds no pair with a preference (ties are "
                                        "skipped). Fix: label some pairs first (the demo, or `mmalign prefs`).")

    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected:
        config = self.config
        pool = list(range(len(self.pairs))) if self.pairs else self.pool
        picks = iteration_prompts(pool, config.prompts_per_iteration, config.seed, iteration,
                                  accelerator.process_index, accelerator.num_processes)
        chosen, rejected, conditioning, metrics = (self.recorded_pairs(picks, generator) if self.pairs
                                                   else self.simulated_pairs(picks, generator))
        steps = config.num_inference_steps
        per_pair = max(1, round(config.timestep_fraction * steps))
        # one example per (pair, step): both sides' x_t and x_{t-1}, their reference log-probs, the prompt;
        # cloned, since a view would carry its whole batch along when examples are dealt to processes
        examples = []
        for p in range(chosen["latents"].shape[0]):
            for j in torch.randperm(steps, generator=generator)[:per_pair].tolist():
                examples.append({"step": j, "text": {key: value[p].clone() for key, value in conditioning.items()},
                                 **{f"{side}_latents": data["latents"][p, j : j + 2].clone() for side, data in sides(chosen, rejected)},
                                 **{f"{side}_reference": data["ref_log_probs"][p, j].clone() for side, data in sides(chosen, rejected)}})
        return Collected(examples, metrics, passes=config.num_epochs)

    @torch.no_grad()
    def simulated_pairs(self, prompts: list[str], generator: torch.Generator):
        """Two trajectories per prompt from one ``x_T``, labelled by the reward; ties skipped."""
        starts = initial_noise(self.pipeline, len(prompts), generator=generator).repeat_interleave(2, 0)
        doubled = [prompt for prompt in prompts for _ in range(2)]
        trajectories = self.sample(doubled, generator, starts)
        rewards = self.reward(trajectories.images, doubled).reward.float().cpu().view(-1, 2)
        choice = simulated_choices(rewards)
        kept = choice != 0
        first_wins = (choice[kept] > 0).long()
        index = torch.arange(len(prompts))[kept] * 2
        winner, loser = index + 1 - first_wins, index + first_wins
        pick = lambda rows: {"latents": trajectories.latents[rows], "ref_log_probs": trajectories.ref_log_probs[rows]}  # noqa: E731
        metrics = {"reward_mean": float(rewards.nanmean()), "pairs": int(kept.sum()), "ties": int((~kept).sum()),
                   "kl_to_reference": float(trajectories.kl.mean())}
        return pick(winner), pick(loser), {k: v[winner] for k, v in trajectories.conditioning.items()}, metrics

    @torch.no_grad()
    def recorded_pairs(self, indices: list[int], generator: torch.Generator):
        """The labelled pairs ``indices`` of the preference set, each given one shared forward path."""
        pairs = [self.pairs[i] for i in indices]
        images = torch.stack([image for pair in pairs for image in
                              ((pair.left, pair.right) if pair.choice == "left" else (pair.right, pair.left))])
        x0 = encode_images(self.pipeline, images).cpu()
        paths = posterior_trajectories(self.scheduler, x0, torch.arange(len(pairs)).repeat_interleave(2), generator,
                                       self.config.eta)
        conditioning, _ = text_conditioning(self.pipeline, [pair.prompt for pair in pairs])
        per_image = {k: v.repeat_interleave(2, 0) for k, v in conditioning.items()}
        steps = torch.arange(self.config.num_inference_steps)
        reference = torch.stack([self.reference_log_probs(paths[:, j], paths[:, j + 1], steps[j].repeat(len(paths)), per_image)
                                 for j in steps.tolist()], 1)
        side = lambda offset: {"latents": paths[offset::2], "ref_log_probs": reference[offset::2]}  # noqa: E731
        return side(0), side(1), {k: v.cpu() for k, v in conditioning.items()}, {"pairs": len(pairs)}

    def loss(self, module, examples: list[dict], generator: torch.Generator):
        stack = lambda key: torch.stack([torch.as_tensor(e[key]) for e in examples])  # noqa: E731
        paths = torch.cat([stack("chosen_latents"), stack("rejected_latents")])  # [2N, 2, C, H, W]: x_t, x_{t-1}
        text = {key: torch.stack([e["text"][key] for e in examples]).repeat(2, *([1] * (examples[0]["text"][key].ndim)))
                for key in examples[0]["text"]}
        policy = self.policy_log_probs(module, paths[:, 0], paths[:, 1], stack("step").repeat(2), text)
        chosen, rejected = policy.chunk(2)
        reference_chosen, reference_rejected = stack("chosen_reference").to(policy.device), stack("rejected_reference").to(policy.device)
        losses = d3po_loss(chosen, reference_chosen, rejected, reference_rejected, self.config.beta, self.config.clip_range)
        with torch.no_grad():
            margin = (chosen - reference_chosen) - (rejected - reference_rejected)
            clamped = (clamped_log_ratio(chosen, reference_chosen, self.config.clip_range)
                       - clamped_log_ratio(rejected, reference_rejected, self.config.clip_range))
        # accuracy on the true ratios; the margin as the loss sees it (clamped), so one ratio far out
        # of the band cannot swamp the mean
        return losses.mean(), {"implicit_accuracy": float((margin > 0).float().mean()), "margin": float(clamped.mean())}


def d3po(config: D3POConfig | None = None, resume: bool = False, **overrides) -> list[dict]:
    """Run D3PO; returns the log (one row per iteration). ``overrides`` are config fields."""
    from .finetune import finetune

    return finetune(D3PO(config or D3POConfig(**overrides)), resume=resume)
