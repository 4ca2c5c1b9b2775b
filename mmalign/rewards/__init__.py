"""Rewards for images, video and text behind one interface: ``reward(samples, prompts) -> RewardOutput``.

>>> from mmalign.rewards import load_reward, list_rewards
>>> reward = load_reward("jpeg-compressibility")
"""

from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .composition import Ensemble, PreferenceStrength, RewardLoss, WeightedSum, as_loss, weighted_objective
from .registry import list_rewards, load_reward, parse_weighted_name
from .sequence_classification import SequenceClassificationReward
from .text import ExactAnswerVerifier, TextReward
from .transforms import Affine, Clamp, LogSigmoidCentered, PPOCCalibration, UncertaintyWeighted, ZScore
from .trl import TRLRewardFunction, as_trl_reward_func

__all__ = [
    "Affine",
    "Clamp",
    "Ensemble",
    "ExactAnswerVerifier",
    "LogSigmoidCentered",
    "PPOCCalibration",
    "PreferenceStrength",
    "Reward",
    "RewardCard",
    "RewardLoss",
    "RewardOutput",
    "RewardSpec",
    "SequenceClassificationReward",
    "TRLRewardFunction",
    "TextReward",
    "UncertaintyWeighted",
    "WeightedSum",
    "ZScore",
    "as_loss",
    "as_trl_reward_func",
    "list_rewards",
    "load_reward",
    "parse_weighted_name",
    "weighted_objective",
]
