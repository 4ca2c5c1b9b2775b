"""RAFT's data collection and loss for causal LMs: sample K completions per prompt with
``generate``, keep the best by the reward, fine-tune with the LM loss on the kept completions only
(prompt tokens and padding are masked out of the labels, as in SFT on responses)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import load_causal_lm
from ..rewards import load_reward
from ..sampling.text import generate_completions
from .finetune import Collected
from .lora import add_lora
from .raft import RAFTConfig, iteration_prompts, keep_best, load_ranking_reward, read_prompt_file

IGNORE_INDEX = -100  # the label transformers' LM loss skips
VERIFIER = "shapes-arithmetic-verifier"


def completion_batch(tokenizer, prompts: list[str], completions: list[str], device) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` of prompt + completion + EOS, with
    labels only on the completion and its EOS."""
    rows, labels = [], []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + completion_ids)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + completion_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device),
        "labels": torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in labels], device=device),
    }


class TextRAFT:
    name = "raft"

    def __init__(self, config: RAFTConfig):
        self.config = config
        self.reward = load_ranking_reward(config.reward, "text")
        if config.prompt_file:
            self.pool, self.eval_prompts = read_prompt_file(config.prompt_file), None
        else:
            from ..shapes.arithmetic import arithmetic_prompts

            self.pool = arithmetic_prompts("train", 4096, seed=config.seed)
            self.eval_prompts = arithmetic_prompts("heldout", config.num_eval_prompts, seed=config.seed)

    def build(self, device):
        config = self.config
        self.model, self.tokenizer = load_causal_lm(config.model, device=str(device))
        if config.use_lora:
            self.model = add_lora(self.model, config.rank, config.lora_alpha, config.lora_target_modules)
        else:
            self.model.requires_grad_(True)
        return self.model

    def sample(self, prompts: list[str], generator: torch.Generator, temperature: float | None = None) -> list[str]:
        """K completions per prompt at the config's temperature, or one at ``temperature``."""
        config = self.config
        return generate_completions(
            self.model, self.tokenizer, prompts, num_return_sequences=config.num_samples_per_prompt if temperature is None else 1,
            temperature=config.temperature if temperature is None else temperature, max_new_tokens=config.max_new_tokens,
            seed=int(torch.randint(2**31 - 1, (1,), generator=generator)))

    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected:
        config = self.config
        prompts = iteration_prompts(self.pool, config.prompts_per_iteration, config.seed, iteration,
                                    accelerator.process_index, accelerator.num_processes)
        completions = self.sample(prompts, generator)
        repeated = [prompt for prompt in prompts for _ in range(config.num_samples_per_prompt)]
        rewards = self.reward(completions, repeated).reward.float().cpu().view(len(prompts), -1)
        keep, metrics = keep_best(accelerator, rewards, config)
        k = config.num_samples_per_prompt
        examples = [{"prompt": prompts[p], "completion": completions[p * k + j]} for p, j in keep.nonzero().tolist()]
        return Collected(examples * config.num_epochs, metrics)

    def loss(self, module, examples: list[dict], generator: torch.Generator) -> torch.Tensor:
        batch = completion_batch(self.tokenizer, [e["prompt"] for e in examples], [e["completion"] for e in examples],
                                 self.model.device)
        return module(**batch).loss

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The ranking reward's mean on held-out completions sampled at the training temperature; on
        the arithmetic task also their exact-answer accuracy, and that of greedy completions."""
        generator = torch.Generator().manual_seed(self.config.seed)
        prompts = self.eval_prompts or self.pool[: self.config.num_eval_prompts]
        sampled = self.sample(prompts, generator, temperature=self.config.temperature)
        metrics = {"eval_proxy": float(self.reward(sampled, prompts).reward.nanmean())}
        if self.eval_prompts is not None:
            verifier = load_reward(VERIFIER)
            greedy = self.sample(prompts, generator, temperature=0.0)
            metrics["accuracy"] = float(verifier(sampled, prompts).reward.mean())
            metrics["accuracy_greedy"] = float(verifier(greedy, prompts).reward.mean())
        return metrics

    def save_pretrained(self, directory: Path) -> None:
        """A LoRA run saves the adapter (``PeftModel.from_pretrained(base, directory)`` restores it);
        a full fine-tune saves the model. The tokenizer goes beside either."""
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
