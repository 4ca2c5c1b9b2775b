"""Alignment methods, one file each: its config dataclass with the paper's defaults, its objective,
and where it needs one, its data collection."""

from ..sampling import postprocess  # community pipelines import only from algorithms and rewards
from .best_of_n import BestOfNCompletions, BestOfNOutput, best_of_n, best_of_n_completions
from .d3po import D3POConfig, d3po, d3po_loss
from .finetune import FinetuneConfig, finetune
from .prdp import PRDPConfig, prdp, prdp_loss
from .raft import RAFTConfig, raft, select_samples
from .reno import PAPER_REWARD_WEIGHTS, ReNOConfig, ReNOOutput, noise_regularizer, optimize_noise, reno

__all__ = ["PAPER_REWARD_WEIGHTS", "BestOfNCompletions", "BestOfNOutput", "D3POConfig", "FinetuneConfig", "PRDPConfig",
           "RAFTConfig", "ReNOConfig", "ReNOOutput", "best_of_n", "best_of_n_completions", "d3po", "d3po_loss", "finetune",
           "noise_regularizer", "optimize_noise", "postprocess", "prdp", "prdp_loss", "raft", "reno", "select_samples"]
