"""Sampling from causal LMs: completions of string prompts, repeatable for a seed."""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: list[str], *, num_return_sequences: int = 1, temperature: float = 0.0,
                         max_new_tokens: int = 8, batch_size: int = 128, seed: int = 0) -> list[str]:
    """Decoded completions, ``num_return_sequences`` per prompt in prompt order: greedy at temperature
    0, else pure sampling (no top-k or top-p, so the reward sees the model's own distribution).
    ``generate`` draws from the global RNG, which is seeded with ``seed`` first."""
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
    completions = []
    for start in range(0, len(prompts), batch_size):
        inputs = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left")
        inputs = inputs.to(model.device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, num_return_sequences=num_return_sequences,
                                pad_token_id=tokenizer.pad_token_id, **sampling)
        completions += tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return completions
