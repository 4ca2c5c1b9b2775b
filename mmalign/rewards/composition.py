"""Rewards built from several rewards: weighted sums, ensembles, preference strength, and losses.

Each combination is itself a :class:`Reward`. A NaN (unscored) item in any member stays NaN in the
combination, so the mask propagates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError, NotDifferentiableError
from .base import Reward, RewardOutput, RewardSpec
from .inputs import as_prompts

AGGREGATES = ("mean", "min", "mean_minus_std", "mean_minus_var")


def as_reward_list(rewards) -> list[Reward]:
    if isinstance(rewards, Reward) or not isinstance(rewards, Sequence) or not rewards \
            or not all(isinstance(m, Reward) for m in rewards):
        raise InvalidInputError("rewards: pass a non-empty list of Reward objects (see `load_reward`).")
    return list(rewards)


def combined_spec(members: Sequence[Reward], **changes) -> RewardSpec:
    """The spec of a combination: one shared modality; differentiable only if every member is."""
    modalities = sorted({m.spec.modality for m in members})
    if len(modalities) != 1:
        raise InvalidInputError(f"rewards: members must share one modality, got {modalities}.")
    values = dict(
        modality=modalities[0],
        differentiable=all(m.spec.differentiable for m in members),
        needs_prompt=any(m.spec.needs_prompt for m in members),
        output_kind="score",
    )
    return RewardSpec(**{**values, **changes})


def head_names(members: Sequence[Reward]) -> list[str]:
    """Member names, made unique with an index where two members share one."""
    names = [m.name for m in members]
    return [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]


def card_statistics(member: Reward, index: int) -> tuple[float, float]:
    """The member's ``(μ, σ)`` from its card, or an error saying how to supply them."""
    if member.spec.mean is None or member.spec.std is None:
        raise InvalidInputError(
            f"rewards[{index}] ({member.name!r}) has no normalisation statistics in its card. "
            "Fix: wrap it as ZScore(reward, mean=..., std=...), or pass normalize=False."
        )
    return member.spec.mean, member.spec.std


class WeightedSum(Reward):
    """``R(x, p) = Σ_i w_i · r_i(x, p)``, the combined objective of ReNO (Eyring et al. 2024, Eq. 4).

    Heads hold each member's unweighted reward under its name.
    """

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float] | None = None):
        rewards = as_reward_list(rewards)
        weights = [1.0] * len(rewards) if weights is None else [float(w) for w in weights]
        if not all(math.isfinite(w) for w in weights):
            raise InvalidInputError(f"weights: must be finite numbers, got {weights}.")
        if len(weights) != len(rewards):
            raise InvalidInputError(f"weights: got {len(weights)} weights for {len(rewards)} rewards.")
        super().__init__(combined_spec(rewards), name=" + ".join(f"{w:g}·{n}" for w, n in zip(weights, head_names(rewards))))
        self.members = nn.ModuleList(rewards)
        self.weights = weights
        self.freeze()

    def forward(self, samples, prompts=None) -> RewardOutput:
        outputs = [member(samples, prompts) for member in self.members]
        total = sum(w * o.reward for w, o in zip(self.weights, outputs))
        return RewardOutput(reward=total, heads={n: o.reward for n, o in zip(head_names(self.members), outputs)})


def weighted_objective(rewards, reward_weights: Sequence[float] | None = None) -> WeightedSum:
    """One objective from a reward, a registry name, or a list of either, weighted by
    ``reward_weights`` (1 each by default): what ReNO and best-of-N take."""
    from .registry import load_reward

    if isinstance(rewards, (str, Reward)):
        rewards = [rewards]
    if not rewards:
        raise InvalidInputError("rewards: pass at least one reward, e.g. rewards=['shapes-clip'].")
    if reward_weights is not None and len(reward_weights) != len(rewards):
        raise InvalidInputError(
            f"reward_weights: got {len(reward_weights)} weights for {len(rewards)} rewards; pass one weight per reward."
        )
    return WeightedSum([load_reward(r) if isinstance(r, str) else r for r in rewards], reward_weights)


class Ensemble(Reward):
    """An ensemble of reward models, members z-scored with their card statistics first.

    With ``z_i = (r_i − μ_i)/σ_i`` over M members (Coste et al. 2024, "Reward Model Ensembles Help
    Mitigate Overoptimization"):

    - ``"mean"``: ``mean_i z_i``;
    - ``"min"``: ``min_i z_i`` (worst-case optimisation, WCO);
    - ``"mean_minus_std"``: ``mean_i z_i − λ·std_i z_i``;
    - ``"mean_minus_var"``: ``mean_i z_i − λ·var_i z_i`` (uncertainty-weighted optimisation, UWO, as
      in the official code; λ=0.5 for best-of-n there, 0.1 for PPO).

    std and var are over members with ddof=0. ``uncertainty`` is the std; heads are the ``z_i``.
    """

    def __init__(self, rewards: Sequence[Reward], aggregate: str = "mean", coefficient: float = 0.5, normalize: bool = True):
        if aggregate not in AGGREGATES:
            raise InvalidInputError(f"aggregate: {aggregate!r} is not one of {AGGREGATES}.")
        rewards = as_reward_list(rewards)
        super().__init__(combined_spec(rewards), name=f"ensemble-{aggregate}({', '.join(head_names(rewards))})")
        self.members = nn.ModuleList(rewards)
        self.aggregate, self.coefficient = aggregate, float(coefficient)
        # looked up now, so a missing statistic fails at construction, not at the first batch
        self.statistics = [card_statistics(m, i) for i, m in enumerate(rewards)] if normalize else None
        self.freeze()

    def member_scores(self, samples, prompts) -> Tensor:
        """``[M, B]`` member rewards, z-scored when ``normalize``."""
        scores = [member(samples, prompts).reward for member in self.members]
        if self.statistics is not None:
            scores = [(score - mean) / std for score, (mean, std) in zip(scores, self.statistics)]
        return torch.stack(scores)

    def forward(self, samples, prompts=None) -> RewardOutput:
        scores = self.member_scores(samples, prompts)
        mean, std = scores.mean(0), scores.std(0, correction=0)
        combined = {
            "mean": lambda: mean,
            "min": lambda: scores.min(0).values,
            "mean_minus_std": lambda: mean - self.coefficient * std,
            "mean_minus_var": lambda: mean - self.coefficient * std.square(),
        }[self.aggregate]()
        heads = dict(zip(head_names(self.members), scores))
        return RewardOutput(reward=combined, heads=heads, uncertainty=std)


class PreferenceStrength(Reward):
    """How strongly an ensemble prefers ``chosen`` over ``rejected`` (Wang et al. 2024, "Secrets of
    RLHF in Large Language Models Part II", §2.2; M=10 reward models there).

    ``d_m = r_m(x, y_c) − r_m(x, y_r)``; ``reward = mean_m d_m``, ``uncertainty = std_m d_m``
    (ddof=0, as in the paper). Members are z-scored first when ``normalize``. Called as
    ``strength(chosen, rejected, prompts)``; heads are each member's ``d_m``.
    """

    def __init__(self, rewards: Sequence[Reward], normalize: bool = False):
        super().__init__(combined_spec(as_reward_list(rewards)), name="preference-strength")
        self.ensemble = Ensemble(rewards, aggregate="mean", normalize=normalize)
        self.freeze()

    def __call__(self, chosen, rejected, prompts=None) -> RewardOutput:
        (chosen, size), (rejected, rejected_size) = self.convert(chosen), self.convert(rejected)
        if size != rejected_size:
            raise InvalidInputError(f"rejected: got {rejected_size} samples for {size} chosen ones.")
        prompts = as_prompts(prompts, size, required=self.spec.needs_prompt)
        self.check_gradient_request(chosen)
        self.check_gradient_request(rejected)
        return nn.Module.__call__(self, chosen, rejected, prompts)

    def forward(self, chosen, rejected, prompts=None) -> RewardOutput:
        differences = self.ensemble.member_scores(chosen, prompts) - self.ensemble.member_scores(rejected, prompts)
        heads = dict(zip(head_names(self.ensemble.members), differences))
        return RewardOutput(reward=differences.mean(0), heads=heads, uncertainty=differences.std(0, correction=0))


class RewardLoss(nn.Module):
    """A differentiable reward as a per-sample loss to minimise.

    - ``"linear"``: ``w · (c − r)``, ReNO's form (Eyring et al. 2024; e.g. ``1 − HPS``,
      ``10 − aesthetic`` in the official code);
    - ``"hinge"``: ``w · max(0, c − r)``: no push once the reward reaches ``c``.

    ``c`` defaults to the top of the reward's ``output_range`` (1 for a cosine, 10 for the
    aesthetic score).
    """

    def __init__(self, reward: Reward, offset: float | None = None, kind: str = "linear", weight: float = 1.0):
        super().__init__()
        if not reward.spec.differentiable:
            raise NotDifferentiableError(
                f"reward: {reward.name!r} is not differentiable, so it cannot be a loss. "
                "Fix: use it with best-of-N or RAFT, or pick a differentiable reward."
            )
        if kind not in ("linear", "hinge"):
            raise InvalidInputError(f"kind: {kind!r} is not one of ('linear', 'hinge').")
        if offset is None:
            if reward.spec.output_range is None:
                raise InvalidInputError(f"offset: {reward.name!r} has no bounded output range; pass `offset=`.")
            offset = reward.spec.output_range[1]
        if not math.isfinite(offset):
            raise InvalidInputError(f"offset: must be finite, got {offset}; pass `offset=` explicitly.")
        self.reward, self.offset, self.kind, self.weight = reward, float(offset), kind, float(weight)

    def forward(self, samples, prompts=None) -> Tensor:
        gap = self.offset - self.reward(samples, prompts).reward
        return self.weight * (gap.clamp_min(0) if self.kind == "hinge" else gap)


def as_loss(reward: Reward, offset: float | None = None, kind: str = "linear", weight: float = 1.0) -> RewardLoss:
    """``reward`` as a :class:`RewardLoss`; see there for the forms."""
    return RewardLoss(reward, offset=offset, kind=kind, weight=weight)
