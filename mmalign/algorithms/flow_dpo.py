"""Flow-DPO: Diffusion-DPO on the velocity predictions of a rectified-flow model (Liu et al.,
"Improving Video Generation with Human Feedback", 2025, arXiv:2501.13918, Sec. 4; Diffusion-DPO:
Wallace et al., CVPR 2024).

For a preferred sample ``x^w`` and a dispreferred ``x^l`` of one prompt, both noised with the same
ε and σ, the loss is

    −log σ(−β/2 · [(‖v^w − vθ(x^w_σ)‖² − ‖v^w − v_ref(x^w_σ)‖²) − (‖v^l − vθ(x^l_σ)‖² − ‖v^l − v_ref(x^l_σ)‖²)])

with ``v = ε − x₀``, each ‖·‖² averaged over dimensions. The reference is the model with its LoRA
disabled. β is constant by default: the paper derives β_t = β(1 − t)², and its ablation finds that
this schedule hacks the reward (text-alignment win rate 28%), so ``beta_schedule="time"`` exists to
reproduce that finding.

Pairs come offline from a preference set (a store, JSONL or Parquet; :func:`~mmalign.prefs.load_preference_pairs`),
or online: each iteration samples ``group_size`` per prompt, scores them with the reward, and pairs
the best with the worst.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError
from ..sampling import flow
from .finetune import Collected
from .flow_method import FlowConfig, FlowMethod
from .raft import iteration_prompts

BETA_SCHEDULES = ("constant", "time")


@dataclass
class FlowDPOConfig(FlowConfig):
    """Flow-DPO's settings; the shared model, training and logging fields are :class:`FinetuneConfig`'s.

    Defaults follow VideoAlign (arXiv:2501.13918) for video unless marked.

    Preferences:
        reward: ranks each online group; with ``preferences`` set it only reports the proxy.
        preferences: a preference store (``.db``), or a JSONL or Parquet file of pairs; videos in a
            JSONL file are GIF paths. Offline mode: no sampling, the pairs are the data.
        prompt_file: prompts for online groups (one per line; default: the shapes world's).
        prompts_per_iteration: prompts (so pairs) per iteration.
        group_size: samples per prompt online; the best and the worst by reward make the pair.

    Sampling (online):
        num_inference_steps, guidance_scale: the model's own when ``None``.
        height, width, num_frames: the sample size; the model's own when ``None`` (shapes-video:
            9 frames of 32 px; a hub Wan model: its pipeline's 81 frames of 480×832).
        sample_batch_size: samples drawn at once.

    Method:
        beta: β of the DPO logit: 500 for video (VideoAlign's setting as this project's design
            records it; its Appendix E could not be read here), 100 for SD3.5-M images (flow_grpo's
            port, confirmed by its author).
        beta_schedule: "constant" (VideoAlign's choice) or "time", β(1 − σ)², the derived schedule
            that the paper's ablation shows hacking the reward. (With x_σ = (1−σ)x₀ + σε the
            ε-prediction error is (1−σ)²·the velocity error, so Diffusion-DPO's β becomes β(1−σ)².)
        logit_mean, logit_std: σ = sigmoid(N(mean, std²)), then the scheduler's shift (SD3's 0, 1).

    Training: learning_rate 5e-6 (VideoAlign, which trains one epoch at batch 64 over 16 GPUs, from a
    secondary summary of the paper); train_batch_size 8 per process is ours. Offline, each
    iteration draws ``prompts_per_iteration`` pairs from the set, with replacement. LoRA rank 64,
    alpha 128 on the attention projections.
    """

    output_dir: str = "outputs/flow-dpo"
    num_iterations: int = 20
    learning_rate: float = 5e-6
    train_batch_size: int = 8
    beta: float = 500.0
    beta_schedule: str = "constant"
    preferences: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise InvalidInputError(f"beta: must be > 0, got {self.beta} (VideoAlign: 500 for video, 100 for images).")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise InvalidInputError(f"beta_schedule: must be one of {', '.join(BETA_SCHEDULES)}, got {self.beta_schedule!r}.")
        if not self.use_lora:
            raise InvalidInputError("use_lora: Flow-DPO's reference is the model with its LoRA disabled, never a "
                                    "second copy. Fix: keep use_lora=true (raise rank for more capacity).")
        if self.reward is None and self.preferences is None:
            raise InvalidInputError("reward: with no preferences file, a reward must rank the online groups. Fix: set "
                                    "reward (e.g. shapes-video-reward) or preferences (a store or JSONL/Parquet file).")


def flow_dpo_loss(policy_chosen: Tensor, reference_chosen: Tensor, policy_rejected: Tensor, reference_rejected: Tensor,
                  beta: float | Tensor = 500.0) -> Tensor:
    """Per-pair Flow-DPO loss ``−log σ(−β/2·[(e^w_θ − e^w_ref) − (e^l_θ − e^l_ref)])`` from the
    flow-matching errors ``e`` of each side; ``beta`` may be a per-pair tensor (the time schedule)."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(-beta / 2 * margin)


def beta_at(beta: float, schedule: str, sigmas: Tensor) -> Tensor:
    """β per pair: constant, or ``β(1 − σ)²`` (VideoAlign's derived β_t, σ = 1 being noise)."""
    return torch.full_like(sigmas, beta) if schedule == "constant" else beta * (1 - sigmas) ** 2


def best_and_worst(rewards: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For ``[P, K]`` rewards: which groups make a pair (not all equal, no NaN) and, for those, the
    index of the best and of the worst sample."""
    usable = ~rewards.isnan().any(1) & (rewards.max(1).values > rewards.min(1).values)
    return usable, rewards.argmax(1)[usable], rewards.argmin(1)[usable]


class FlowDPO(FlowMethod):
    name = "flow-dpo"

    def build(self, device):
        model = super().build(device)
        self.pairs = None
        if self.config.preferences:
            self.pairs = self.encoded_preferences()
        return model

    def encoded_preferences(self) -> list[dict]:
        """The preference set's pairs, chosen side first, encoded once to latents."""
        from ..prefs import load_preference_pairs

        source = self.config.preferences
        pairs = load_preference_pairs(source, include_ties=False)
        if not pairs:
            raise InvalidInputError(f"preferences: {source} holds no pair with a preference (ties are skipped). "
                                    "Fix: label some pairs first.")
        encoded, first = [], pairs[0].left.shape
        if self.video and len(first) == 4:  # [T,3,H,W]: the set's frame count, before any encoding
            flow.check_num_frames(self.pipeline, first[0], "preferences")
        for number, pair in enumerate(pairs, 1):
            chosen, rejected = (pair.left, pair.right) if pair.choice == "left" else (pair.right, pair.left)
            if chosen.shape == rejected.shape != first:  # pairs are batched together: one size for all
                raise InvalidInputError(
                    f"preferences: pair {number} ({pair.prompt!r}) has samples of shape {tuple(chosen.shape)}, pair 1 "
                    f"{tuple(first)}; every pair of a set must have the same frame count and size.")
            if chosen.shape != rejected.shape:
                kind = "videos" if chosen.dim() == 4 else "images"
                raise InvalidInputError(
                    f"preferences: pair {number} ({pair.prompt!r}) has {kind} of different shapes, {tuple(chosen.shape)} and "
                    f"{tuple(rejected.shape)}; both sides of a pair must have the same frame count and size.")
            if (chosen.dim() == 4) != self.video:
                raise InvalidInputError(
                    f"preferences: pair {number} holds {'videos' if chosen.dim() == 4 else 'images'}, but "
                    f"{self.config.model!r} generates {'videos' if self.video else 'images'}.")
            latents = flow.encode(self.pipeline, torch.stack([chosen, rejected])).cpu()
            encoded.append({"prompt": pair.prompt, "chosen": latents[0], "rejected": latents[1]})
        return encoded

    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected:
        config = self.config
        if self.pairs is not None:
            picks = iteration_prompts(list(range(len(self.pairs))), config.prompts_per_iteration, config.seed, iteration,
                                      accelerator.process_index, accelerator.num_processes)
            examples = [self.pairs[i] for i in picks]
            return Collected(examples, {"pairs": len(examples)})
        prompts = iteration_prompts(self.pool, config.prompts_per_iteration, config.seed, iteration,
                                    accelerator.process_index, accelerator.num_processes)
        samples = self.sample_groups(prompts, generator)
        rewards = samples["rewards"]
        usable, best, worst = best_and_worst(rewards)
        rows = torch.arange(len(prompts))[usable]
        latents = samples["latents"].view(len(prompts), config.group_size, *samples["latents"].shape[1:])
        examples = [{"prompt": prompts[p], "chosen": latents[p, b], "rejected": latents[p, w]}
                    for p, b, w in zip(rows.tolist(), best.tolist(), worst.tolist())]
        metrics = {"reward_mean": float(rewards.nanmean()), "pairs": len(examples),
                   "reward_gap": float((rewards[rows, best] - rewards[rows, worst]).mean()) if examples else float("nan")}
        return Collected(examples, metrics)

    def loss(self, module, examples: list[dict], generator: torch.Generator):
        chosen = torch.stack([e["chosen"] for e in examples])
        rejected = torch.stack([e["rejected"] for e in examples])
        noise, sigmas = self.draw_noise(chosen, generator)  # one ε and σ per pair, shared by its two sides
        both = torch.cat([chosen, rejected])
        shared_noise, shared_sigmas = noise.repeat(2, *([1] * (noise.dim() - 1))), sigmas.repeat(2)
        conditioning = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in self.conditioning([e["prompt"] for e in examples]).items()}
        policy = self.flow_errors(module, both, shared_noise, shared_sigmas, conditioning)
        reference = self.flow_errors(module, both, shared_noise, shared_sigmas, conditioning, reference=True)
        policy_chosen, policy_rejected = policy.chunk(2)
        reference_chosen, reference_rejected = reference.chunk(2)
        beta = beta_at(self.config.beta, self.config.beta_schedule, sigmas.to(policy.device))
        losses = flow_dpo_loss(policy_chosen, reference_chosen, policy_rejected, reference_rejected, beta)
        with torch.no_grad():  # TRL's convention: implicit rewards −β/2·(e_θ − e_ref), their margin positive when right
            reward_margin = -beta / 2 * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
        return losses.mean(), {"implicit_accuracy": float((reward_margin > 0).float().mean()),
                               "reward_margin": float(reward_margin.mean())}


def flow_dpo(config: FlowDPOConfig | None = None, resume: bool = False, **overrides) -> list[dict]:
    """Run Flow-DPO; returns the log (one row per iteration). ``overrides`` are config fields."""
    from .finetune import finetune

    return finetune(FlowDPO(config or FlowDPOConfig(**overrides)), resume=resume)
