"""Alignment methods, one file each: its config dataclass with the paper's defaults, its objective,
and where it needs one, its data collection."""

from ..sampling import postprocess  # community pipelines import only from algorithms and rewards
from .best_of_n import BestOfNOutput, best_of_n
from .reno import PAPER_REWARD_WEIGHTS, ReNOConfig, ReNOOutput, noise_regularizer, optimize_noise, reno

__all__ = ["PAPER_REWARD_WEIGHTS", "BestOfNOutput", "ReNOConfig", "ReNOOutput", "best_of_n", "noise_regularizer",
           "optimize_noise", "postprocess", "reno"]
