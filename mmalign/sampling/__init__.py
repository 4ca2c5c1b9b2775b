"""Sampling from diffusers pipelines: differentiable calls, prompt embeddings computed once, and
initial noise of the right shape for each pipeline family."""

from .pipelines import differentiable_call, initial_noise, postprocess, prompt_embedding_kwargs, stock_pipeline

__all__ = ["differentiable_call", "initial_noise", "postprocess", "prompt_embedding_kwargs", "stock_pipeline"]
