"""Any mmalign text reward as a TRL reward function, for ``GRPOTrainer(reward_funcs=[...])``.

TRL's contract for a custom reward function (``trl.GRPOTrainer`` docs, "Using a custom reward
function"; ``GRPOTrainer._calculate_rewards`` in TRL ≥ 0.14): it is called as
``f(prompts=..., completions=..., completion_ids=..., **dataset_columns, trainer_state=...)`` and
returns one float per completion. Prompts and completions are strings in the standard format, and
chat-message lists in the conversational one (each completion then being
``[{"role": "assistant", "content": ...}]``). A ``None`` means "not applicable": TRL turns it into
NaN and leaves that function out of the sample's summed reward. Its logs name the function by its
``__name__``.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidInputError
from .base import Reward


class TRLRewardFunction:
    """A callable with TRL's reward-function signature around a text :class:`Reward`.

    A plain object rather than a closure, so that it pickles (TRL may send reward functions to
    worker processes) and carries ``__name__`` for TRL's logs (``rewards/<name>/mean``).
    """

    def __init__(self, reward: Reward):
        self.reward = reward
        self.__name__ = reward.name

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        # kwargs hold TRL's extras (completion_ids, trainer_state, dataset columns), which a reward ignores
        with torch.no_grad():
            output = self.reward(list(completions), list(prompts))
        scores = output.reward.detach().float().cpu().tolist()
        scored = output.mask.cpu().tolist()
        return [score if ok and not math.isnan(score) else None for score, ok in zip(scores, scored)]

    def __repr__(self) -> str:
        return f"TRLRewardFunction({self.__name__!r})"


def as_trl_reward_func(reward: Reward) -> TRLRewardFunction:
    """``reward`` as ``f(prompts, completions, **kwargs) -> list[float | None]`` for TRL's
    ``GRPOTrainer(reward_funcs=[...])``; unscorable items (NaN) become None, and no gradient flows.

    Example:
        >>> from mmalign.rewards import as_trl_reward_func, load_reward
        >>> verifier = as_trl_reward_func(load_reward("shapes-arithmetic-verifier"))
        >>> verifier(prompts=["2+2=", "hello"], completions=["4", "hi"])
        [1.0, None]
    """
    if not isinstance(reward, Reward):
        raise InvalidInputError(
            f"reward: expected an mmalign Reward, got {type(reward).__name__}. Fix: pass load_reward(name)."
        )
    if reward.spec.modality != "text":
        raise InvalidInputError(
            f"reward: {reward.name!r} scores {reward.spec.modality}, but TRL reward functions score text. "
            "Fix: pick a text reward (`mmalign rewards` lists each reward's modality)."
        )
    return TRLRewardFunction(reward)
