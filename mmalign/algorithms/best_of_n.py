"""Best-of-N: sample N candidates per prompt and keep the one a reward ranks highest.

The baseline every alignment method must beat at equal reward evaluations (ReNO, Eyring et al.
2024, compares against it at N=50, the cost of its 50 iterations). The reward needs no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..rewards import weighted_objective
from ..sampling import stock_pipeline


@dataclass
class BestOfNOutput:
    """``images`` ``[B,3,H,W]`` in [0,1], the best candidate per prompt; ``scores`` ``[B,N]`` the
    reward of every candidate; ``best_index`` ``[B]``; ``candidates`` ``[B,N,3,H,W]`` if kept."""

    images: torch.Tensor
    scores: torch.Tensor
    best_index: torch.Tensor
    candidates: torch.Tensor | None = None


@torch.no_grad()
def best_of_n(pipeline, prompt: str | list[str], rewards, num_candidates: int = 4, reward_weights=None,
              generator: torch.Generator | None = None, batch_size: int = 16, keep_candidates: bool = False,
              progress: bool = True, **call_kwargs) -> BestOfNOutput:
    """Sample ``num_candidates`` images per prompt with the pipeline's own ``__call__`` (any number
    of steps, any guidance; extra keyword arguments go to it), score them, keep the best."""
    if num_candidates < 1:
        raise InvalidInputError(f"num_candidates: must be at least 1, got {num_candidates}.")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size: must be at least 1, got {batch_size}.")
    objective = weighted_objective(rewards, reward_weights).to(pipeline.device)
    pipeline = stock_pipeline(pipeline)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    chunk_sizes = [min(batch_size, num_candidates - start) for start in range(0, num_candidates, batch_size)]
    best, scores, best_index, kept = [], [], [], []
    for text in tqdm(prompts, desc="best-of-N", unit="prompt", disable=not progress or len(prompts) < 2, leave=False):
        candidates = torch.cat([
            pipeline(text, num_images_per_prompt=size, generator=generator, output_type="pt", **call_kwargs).images.float()
            for size in chunk_sizes
        ])
        reward = objective(candidates, [text] * num_candidates).reward.float().cpu()
        index = torch.nan_to_num(reward, nan=-torch.inf).argmax()
        scores.append(reward)
        best_index.append(index)
        best.append(candidates[index])
        if keep_candidates:
            kept.append(candidates.cpu())
    return BestOfNOutput(torch.stack(best).cpu(), torch.stack(scores), torch.stack(best_index),
                         torch.stack(kept) if keep_candidates else None)


@dataclass
class BestOfNCompletions:
    """``completions`` the best per prompt; ``scores`` ``[B,N]`` the reward of every candidate;
    ``best_index`` ``[B]``; ``candidates`` all ``B·N`` completions, prompt by prompt."""

    completions: list[str]
    scores: torch.Tensor
    best_index: torch.Tensor
    candidates: list[str]


@torch.no_grad()
def best_of_n_completions(model, tokenizer, prompt: str | list[str], rewards, num_candidates: int = 4, reward_weights=None,
                          temperature: float = 1.0, max_new_tokens: int = 32, seed: int = 0) -> BestOfNCompletions:
    """Best-of-N for a causal LM: sample ``num_candidates`` completions per prompt, keep the one the
    (weighted) text rewards rank highest; a prompt whose candidates are all unscored keeps its first."""
    from ..sampling.text import generate_completions

    if num_candidates < 1:
        raise InvalidInputError(f"num_candidates: must be at least 1, got {num_candidates}.")
    if temperature <= 0 and num_candidates > 1:
        raise InvalidInputError("temperature: greedy decoding gives N identical candidates. Fix: sample, e.g. temperature=1.0.")
    objective = weighted_objective(rewards, reward_weights)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    candidates = generate_completions(model, tokenizer, prompts, num_return_sequences=num_candidates, temperature=temperature,
                                      max_new_tokens=max_new_tokens, seed=seed)
    repeated = [text for text in prompts for _ in range(num_candidates)]
    scores = objective(candidates, repeated).reward.float().cpu().view(len(prompts), num_candidates)
    best_index = torch.nan_to_num(scores, nan=-torch.inf).argmax(1)
    best = [candidates[row * num_candidates + int(column)] for row, column in enumerate(best_index)]
    return BestOfNCompletions(best, scores, best_index, candidates)
