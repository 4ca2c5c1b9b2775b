"""Sampling from diffusers pipelines: differentiable calls, prompt embeddings computed once, and
initial noise of the right shape for each pipeline family."""

from .ddim import DDIMStep, ddim_step, gaussian_log_prob
from .pipelines import differentiable_call, initial_noise, postprocess, prompt_embedding_kwargs, stock_pipeline
from .trajectories import Trajectories, sample_trajectories, step_log_probs

__all__ = ["DDIMStep", "Trajectories", "ddim_step", "differentiable_call", "gaussian_log_prob", "initial_noise",
           "postprocess", "prompt_embedding_kwargs", "sample_trajectories", "step_log_probs", "stock_pipeline"]
