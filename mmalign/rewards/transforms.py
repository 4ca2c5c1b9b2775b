"""Rewards that transform one reward's score: affine, z-score, clamp, log-sigmoid centring,
PPO-C calibration and uncertainty weighting. Each is itself a :class:`Reward`; NaN (unscored)
items stay NaN and the mask passes through.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError
from .base import Reward, RewardOutput


def require_reward(reward) -> Reward:
    if not isinstance(reward, Reward):
        raise InvalidInputError(f"reward: expected a Reward (see `load_reward`), got {type(reward).__name__}.")
    return reward


class TransformedReward(Reward):
    """Base of the one-reward transforms: score with ``self.reward``, then :meth:`transform`."""

    def __init__(self, reward: Reward, name: str, **spec_changes):
        require_reward(reward)
        spec_changes.setdefault("mean", None)
        spec_changes.setdefault("std", None)
        super().__init__(reward.spec.replace(**spec_changes), name=f"{name}({reward.name})")
        self.reward = reward
        self.freeze()

    def transform(self, output: RewardOutput, samples, prompts) -> RewardOutput:
        raise NotImplementedError

    def forward(self, samples, prompts=None) -> RewardOutput:
        return self.transform(self.reward(samples, prompts), samples, prompts)


def _replace_reward(output: RewardOutput, reward: Tensor, **changes) -> RewardOutput:
    return RewardOutput(reward=reward, heads=changes.pop("heads", output.heads),
                        uncertainty=changes.pop("uncertainty", output.uncertainty), mask=output.mask)


class Affine(TransformedReward):
    """``r' = a·r + b``; card statistics follow (``μ' = aμ + b``, ``σ' = |a|σ``)."""

    def __init__(self, reward: Reward, scale: float = 1.0, shift: float = 0.0):
        spec = require_reward(reward).spec
        stats = dict(mean=scale * spec.mean + shift if spec.mean is not None else None,
                     std=abs(scale) * spec.std if spec.std is not None and scale != 0 else None)
        super().__init__(reward, "affine", output_kind="score", output_range=None, **stats)
        self.scale, self.shift = float(scale), float(shift)

    def transform(self, output, samples, prompts):
        return _replace_reward(output, self.scale * output.reward + self.shift)


class ZScore(TransformedReward):
    """``r' = (r − μ)/σ`` with the card's statistics, or with ``mean=``/``std=`` given here."""

    def __init__(self, reward: Reward, mean: float | None = None, std: float | None = None):
        mean = require_reward(reward).spec.mean if mean is None else mean
        std = reward.spec.std if std is None else std
        if mean is None or std is None:
            raise InvalidInputError(
                f"reward: {reward.name!r} has no normalisation statistics in its card. "
                "Fix: pass mean= and std= measured on your samples."
            )
        if not std > 0:
            raise InvalidInputError(f"std: must be positive, got {std}.")
        super().__init__(reward, "zscore", output_kind="score", output_range=None, mean=0.0, std=1.0)
        self.center, self.scale = float(mean), float(std)

    def transform(self, output, samples, prompts):
        return _replace_reward(output, (output.reward - self.center) / self.scale)


class Clamp(TransformedReward):
    """``r' = min(max(r, lo), hi)``; the gradient is zero outside the band."""

    def __init__(self, reward: Reward, min: float | None = None, max: float | None = None):
        if min is None and max is None:
            raise InvalidInputError("min, max: give at least one bound.")
        if min is not None and max is not None and min > max:
            raise InvalidInputError(f"min, max: min {min} exceeds max {max}.")
        inner_low, inner_high = require_reward(reward).spec.output_range or (-math.inf, math.inf)
        low = builtins.max(min, inner_low) if min is not None else inner_low
        high = builtins.min(max, inner_high) if max is not None else inner_high
        super().__init__(reward, "clamp", output_range=(low, high))
        self.low, self.high = min, max

    def transform(self, output, samples, prompts):
        return _replace_reward(output, output.reward.clamp(self.low, self.high))


class LogSigmoidCentered(TransformedReward):
    """``u = log σ(r − r_ref(p))`` (Wang et al. 2024, "Transforming and Combining Rewards for
    Aligning Large Language Models"). The sum of transformed rewards rewards being good on all
    of them. ``reference`` is a number, or a prompt → number mapping; the paper takes a high
    quantile (about the 85th) of the base policy's rewards per prompt.
    """

    def __init__(self, reward: Reward, reference: float | Mapping[str, float] = 0.0):
        per_prompt = isinstance(reference, Mapping)
        super().__init__(
            reward, "log-sigmoid-centred", output_kind="logit", output_range=(-math.inf, 0.0),
            needs_prompt=require_reward(reward).spec.needs_prompt or per_prompt,
        )
        self.reference = reference

    @staticmethod
    def reference_from_scores(scores: Tensor, quantile: float = 0.85) -> float:
        """The ``quantile`` of base-policy rewards, as the paper centres them."""
        return torch.nanquantile(scores.float(), quantile).item()

    def transform(self, output, samples, prompts):
        if isinstance(self.reference, Mapping):
            missing = [p for p in prompts if p not in self.reference]
            if missing:
                raise InvalidInputError(f"reference: no reference reward for prompt(s) {missing[:3]}.")
            reference = torch.tensor([self.reference[p] for p in prompts], device=output.reward.device)
        else:
            reference = float(self.reference)
        return _replace_reward(output, F.logsigmoid(output.reward - reference))


CONFIDENCE_PATTERN = re.compile(r"Confidence:\s*(\d+(?:\.\d+)?)(?:/\d+)?\s*[,.!?]*", re.IGNORECASE)


def _strip_confidence(text: str) -> tuple[float, str]:
    match = CONFIDENCE_PATTERN.search(text)
    if not match:
        return 0.5, text
    return min(max(float(match.group(1)), 0.0), 10.0) / 10, CONFIDENCE_PATTERN.sub("", text).rstrip()


def verbalized_confidence(samples: list) -> tuple[Tensor, list]:
    """``Confidence: X`` (0–10) read from each sample as X/10 (0.5 when absent), and the samples
    without it. A chat sample is read in its last message. As in the PPO-C code
    (SeanLeng1/Reward-Calibration): case-insensitive, clamped to [0, 10], default 5.
    """
    values, stripped = [], []
    for sample in samples:
        if isinstance(sample, str):
            value, sample = _strip_confidence(sample)
        else:  # chat messages: [{"role": ..., "content": ...}, ...]
            value, content = _strip_confidence(sample[-1].get("content", "")) if sample else (0.5, "")
            sample = [*sample[:-1], {**sample[-1], "content": content}] if sample else sample
        values.append(value)
        stripped.append(sample)
    return torch.tensor(values), stripped


class PPOCCalibration(TransformedReward):
    """PPO-C reward calibration (Leng et al. 2024, "Taming Overconfidence in LLMs: Reward
    Calibration in RLHF"; official code ``calibrated_experience_maker.py``).

    Per call, rewards are clamped to [−10, 10], then the moving average is updated first,
    ``r̄ ← α·mean(r) + (1−α)·r̄`` (starting at the card mean, else 0), and with confidence c ∈ [0,1]:

    - ``"threshold"`` (default): ``f = w·|r|·(c − 0.5)``; ``r' = r + f`` if ``r ≥ r̄`` else ``r − f``;
    - ``"difference"``: ``r' = r + w·(r − r̄)·(c − 0.5)``.

    Defaults α=0.1, w=0.5 are the code's (its scripts use w=2.0 with "difference"). For text, c is the
    verbalised ``Confidence: X`` (X/10), removed before scoring; other modalities pass ``confidence``,
    a function of the samples giving ``Tensor[B]`` in [0,1]. The average is a buffer in ``state_dict``.

    The average moves on every call while ``update`` is True, as during PPO rollouts; so scores
    depend on the batches seen before. Set ``update = False`` to evaluate with the average frozen.
    """

    def __init__(self, reward: Reward, alpha: float = 0.1, w: float = 0.5, mode: str = "threshold",
                 confidence: Callable[[object], Tensor] | None = None):
        require_reward(reward)
        if not 0 < alpha <= 1:
            raise InvalidInputError(f"alpha: must lie in (0, 1], got {alpha}.")
        if mode not in ("threshold", "difference"):
            raise InvalidInputError(f"mode: {mode!r} is not one of ('threshold', 'difference').")
        if confidence is None and reward.spec.modality != "text":
            raise InvalidInputError("confidence: non-text rewards need a function giving each sample's confidence.")
        super().__init__(reward, "ppo-c", output_kind="score", output_range=None)
        self.alpha, self.w, self.mode, self.confidence = float(alpha), float(w), mode, confidence
        self.update = True
        self.register_buffer("reward_average", torch.tensor(float(reward.spec.mean or 0.0)))

    def forward(self, samples, prompts=None) -> RewardOutput:
        if self.confidence is None:
            confidence, samples = verbalized_confidence(samples)
        else:
            confidence = torch.as_tensor(self.confidence(samples), dtype=torch.float32)
        output = self.reward(samples, prompts)
        if confidence.shape != output.reward.shape or not ((confidence >= 0) & (confidence <= 1)).all():
            raise InvalidInputError(
                f"confidence: must give a Tensor[{len(output)}] in [0, 1], got shape {tuple(confidence.shape)}."
            )
        raw = output.reward.clamp(-10.0, 10.0)
        valid = raw[output.mask].detach()
        if self.update and valid.numel():
            self.reward_average.mul_(1 - self.alpha).add_(self.alpha * valid.mean().to(self.reward_average))
        average, confidence = self.reward_average.to(raw), confidence.to(raw)
        if self.mode == "difference":
            calibrated = raw + self.w * (raw - average) * (confidence - 0.5)
        else:
            shift = self.w * raw.abs() * (confidence - 0.5)
            calibrated = torch.where(raw >= average, raw + shift, raw - shift)
        return _replace_reward(output, calibrated, heads={**output.heads, "raw": output.reward, "confidence": confidence})


class UncertaintyWeighted(TransformedReward):
    """``r' = exp(−U)·r − λ·U``: trust a reward less where it is unsure (Ctrl-U, Zhang et al. 2024,
    whose loss is ``L/exp(U) + λU``). ``U`` is the wrapped reward's ``uncertainty`` (an
    :class:`~mmalign.rewards.composition.Ensemble` gives its std); ``penalty`` is λ, 0 by default.
    Note that exp(−U) shrinks a score toward 0, so centre rewards (ZScore) before weighting them.
    """

    def __init__(self, reward: Reward, penalty: float = 0.0):
        super().__init__(reward, "uncertainty-weighted", output_kind="score", output_range=None)
        self.penalty = float(penalty)

    def transform(self, output, samples, prompts):
        if output.uncertainty is None:
            raise InvalidInputError(
                f"reward: {self.reward.name!r} reports no uncertainty. Fix: wrap an Ensemble of rewards, "
                "or a reward whose output carries `uncertainty`."
            )
        weighted = torch.exp(-output.uncertainty) * output.reward - self.penalty * output.uncertainty
        return _replace_reward(output, weighted)
