"""Alignment methods, one file each: its config dataclass with the paper's defaults, its objective,
and where it needs one, its data collection."""

from ..sampling import postprocess  # community pipelines import only from algorithms and rewards
from .best_of_n import BestOfNCompletions, BestOfNOutput, best_of_n, best_of_n_completions
from .d3po import D3POConfig, d3po, d3po_loss
from .finetune import FinetuneConfig, finetune
from .flow_dpo import FlowDPOConfig, flow_dpo, flow_dpo_loss
from .flow_nrg import nrg_sample
from .flow_rwr import FlowRWRConfig, flow_rwr, flow_rwr_loss
from .latent_reward import LatentRewardConfig, LatentRewardModel, train_latent_reward
from .prdp import PRDPConfig, prdp, prdp_loss
from .raft import RAFTConfig, raft, select_samples
from .reno import PAPER_REWARD_WEIGHTS, ReNOConfig, ReNOOutput, noise_regularizer, optimize_noise, reno

__all__ = ["PAPER_REWARD_WEIGHTS", "BestOfNCompletions", "BestOfNOutput", "D3POConfig", "FinetuneConfig", "FlowDPOConfig",
           "FlowRWRConfig", "LatentRewardConfig", "LatentRewardModel", "PRDPConfig", "RAFTConfig", "ReNOConfig", "ReNOOutput", "best_of_n",
           "best_of_n_completions", "d3po", "d3po_loss", "finetune", "flow_dpo", "flow_dpo_loss", "flow_rwr", "flow_rwr_loss",
           "noise_regularizer", "nrg_sample", "optimize_noise", "postprocess", "prdp", "prdp_loss", "raft", "reno",
           "select_samples", "train_latent_reward"]
