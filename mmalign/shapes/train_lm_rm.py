"""shapes-lm-rm: a learned reward model for the arithmetic task, imperfect on purpose.

A ``LlamaForSequenceClassification`` initialised from shapes-lm's body, as InstructGPT's reward
models start from the SFT model (Ouyang et al. 2022, §3.5), with a new one-logit head. It is trained
with the Bradley–Terry loss ``-log σ(r(x, y_correct) - r(x, y_wrong))`` (Bradley & Terry 1952) on
pairs whose wrong answer is a realistic near miss: half are shapes-lm's own wrong samples, half are
one-edit corruptions of the right answer (a digit off by one, a dropped carry, swapped or dropped
digits). Its input is what :class:`~mmalign.rewards.SequenceClassificationReward` gives it, the chat
template's ``prompt + completion + eos``. Trained for 1,000 steps (about 3 CPU-minutes), it ranks
69% of held-out pairs right (65% against shapes-lm's own mistakes), so a policy can climb it while
the verifier's accuracy falls: reward hacking, measurable. (A learning rate of 3e-3 gave 56%.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .arithmetic import answer, arithmetic_prompts, extract_answer, near_miss
from .training import Stopwatch, export_atomically, load_checkpoint, run_steps, save_checkpoint

DEFAULTS = {"steps": 1000, "batch_size": 64, "lr": 1e-3, "warmup": 50, "own_sample_prompts": 2048,
            "eval_pairs": 512}
BASE_DIR = Path(__file__).resolve().parent / "weights" / "shapes-lm"


def own_mistakes(model, tokenizer, prompts: list[str], seed: int) -> list[tuple[str, str]]:
    """(prompt, wrong answer) pairs from shapes-lm's own samples at temperature 1."""
    from .train_lm import complete

    completions = complete(model, tokenizer, prompts, temperature=1.0, seed=seed)
    pairs = [(p, extract_answer(c)) for p, c in zip(prompts, completions)]
    return [(p, a) for p, a in pairs if a and a != answer(p)]


def preference_pairs(prompts: list[str], mistakes: list[tuple[str, str]], rng: np.random.Generator,
                     count: int) -> list[tuple[str, str, str]]:
    """``count`` (prompt, correct, wrong) triples: half the model's own mistakes, half near misses."""
    triples = []
    for _ in range(count):
        if mistakes and rng.random() < 0.5:
            prompt, wrong = mistakes[int(rng.integers(len(mistakes)))]
        else:
            prompt = prompts[int(rng.integers(len(prompts)))]
            wrong = near_miss(answer(prompt), rng)
        triples.append((prompt, answer(prompt), wrong))
    return triples


def rm_batch(tokenizer, prompts: list[str], completions: list[str]) -> dict[str, torch.Tensor]:
    """Inputs exactly as SequenceClassificationReward builds them: the chat template's rendering,
    tokenized without adding special tokens, right-padded."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                           tokenize=False) for p, c in zip(prompts, completions)]
    return tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """``-log σ(r_w - r_l)``, averaged over pairs (Bradley & Terry 1952; InstructGPT eq. 1)."""
    return -F.logsigmoid(chosen - rejected).mean()


def train(output_dir: Path, steps: int, seed: int, resume: bool, log=print, base: Path | str = BASE_DIR,
          **overrides) -> dict:
    """Train shapes-lm-rm from the shapes-lm folder ``base`` into ``output_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification

    from ..models import resolve_causal_lm
    from ..rewards import SequenceClassificationReward

    config = {**DEFAULTS, **overrides}
    output_dir, base = Path(output_dir), resolve_causal_lm(str(base))
    torch.manual_seed(seed)
    watch = Stopwatch()
    tokenizer = AutoTokenizer.from_pretrained(base)
    policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    train_prompts = arithmetic_prompts("train", config["own_sample_prompts"], seed=seed)
    heldout_prompts = arithmetic_prompts("heldout", config["eval_pairs"], seed=seed + 1)
    mistakes = own_mistakes(policy, tokenizer, train_prompts, seed)
    heldout_mistakes = own_mistakes(policy, tokenizer, heldout_prompts, seed + 1)
    log(f"{len(mistakes)} own mistakes on {len(train_prompts)} train prompts, in {watch}")
    del policy

    model = LlamaForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    rng = np.random.default_rng([seed, 4])
    resume_state = dict(total_steps=steps, rng=rng, model=model, optimizer=optimizer)
    start = load_checkpoint(output_dir, **resume_state) if resume else 0

    def compute_loss(step: int) -> torch.Tensor:
        prompts, chosen, rejected = zip(*preference_pairs(train_prompts, mistakes, rng, config["batch_size"]))
        scores = model(**rm_batch(tokenizer, list(prompts) * 2, list(chosen) + list(rejected))).logits[:, 0]
        return bradley_terry_loss(*scores.chunk(2))

    model.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=config["lr"],
                       warmup=min(config["warmup"], steps // 10 + 1), desc="shapes-lm-rm", max_grad_norm=1.0,
                       checkpoint=lambda step: save_checkpoint(output_dir, step, **resume_state))
    model.eval()

    def write(folder: Path) -> None:
        model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    export_atomically(output_dir, write, last="config.json")
    # held-out pairwise accuracy, measured through the reward class users load, on the shipped fp16 weights
    reward = SequenceClassificationReward.from_pretrained(output_dir, batch_size=256)
    evaluation = preference_pairs(heldout_prompts, heldout_mistakes, np.random.default_rng([seed, 5]), config["eval_pairs"])
    prompts, chosen, rejected = (list(column) for column in zip(*evaluation))
    with torch.no_grad():
        margin = reward(chosen, prompts).reward - reward(rejected, prompts).reward
    own = [p for p, _ in heldout_mistakes]
    own_margin = reward([answer(p) for p in own], own).reward - reward([w for _, w in heldout_mistakes], own).reward
    summary = {"steps": steps, "minutes": round(watch.minutes, 1),
               "heldout_pairwise_accuracy": round((margin > 0).float().mean().item(), 3),
               "heldout_own_mistake_accuracy": round((own_margin > 0).float().mean().item(), 3),
               "heldout_own_mistakes": len(own), "losses": losses}
    log(f"trained shapes-lm-rm in {watch}; saved {output_dir}")
    return summary
