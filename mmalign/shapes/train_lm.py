"""shapes-lm: a tiny ``LlamaForCausalLM`` that does 2–3 digit arithmetic, imperfectly.

It is the text path's generator: RAFT, best-of-N and TRL's GRPOTrainer improve it, and its
answers are checked exactly by :mod:`mmalign.shapes.arithmetic`. It is trained by supervised
next-token prediction on ``prompt + answer + eos`` (the loss on the answer and eos only, as in
completion-only SFT), with AdamW and a cosine schedule. 40% of its training answers are near misses
(``label_noise``), as from a careless annotator, so the model learns to put about that much
probability on wrong answers: greedy decoding is mostly right, sampling at temperature 1 often is
not. That is the room RAFT and best-of-N have to gain, and a knob that sets it predictably. Run
length is no such knob: accuracy jumps from ~10% to ~70% within a few hundred steps, at a step
that varies from run to run (on clean data, about step 900 of 1,000 or 2,000; with noise, later).

The tokenizer is character level, built offline with the ``tokenizers`` library and saved as a
``PreTrainedTokenizerFast``; it adds no BOS (as Qwen2's does not), pads on the left for generation,
and its chat template renders a conversation as the plain text the model was trained on (user
turns verbatim, each assistant turn followed by eos), so chat-format prompts work too. The folder
loads with the stock ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .arithmetic import answer, is_correct, near_miss, random_prompt, split_of
from .training import Stopwatch, export_atomically, load_checkpoint, run_steps, save_checkpoint

DEFAULTS = {"steps": 1800, "batch_size": 128, "lr": 3e-3, "warmup": 100, "label_noise": 0.4, "hidden_size": 128,
            "intermediate_size": 256, "layers": 4, "heads": 4, "eval_prompts": 256}
SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
CHARACTERS = ["\n"] + [chr(code) for code in range(32, 127)]  # newline and printable ASCII
# User (and system) turns verbatim, assistant turns followed by eos: the conversation
# [user "12+5=", assistant "17"] renders as the training text "12+5=17</s>".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{ message['content'] }}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}{%- endfor -%}"
)


def build_tokenizer():
    """The character-level ``PreTrainedTokenizerFast`` of shapes-lm and shapes-lm-rm."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS.values(), *CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()  # join characters without spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, padding_side="left", model_max_length=64,
        **{f"{role}_token": token for role, token in SPECIAL_TOKENS.items()},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, config: dict, architecture: str = "LlamaForCausalLM"):
    """A randomly initialised tiny Llama; ``architecture`` picks the head (causal LM or classifier)."""
    import transformers

    model_config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["layers"], num_attention_heads=config["heads"], num_key_value_heads=config["heads"],
        max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, num_labels=1,
    )
    return getattr(transformers, architecture)(model_config)


def training_pairs(rng: np.random.Generator, count: int, label_noise: float = 0.0) -> list[tuple[str, str]]:
    """``count`` (prompt, answer) pairs of the train split, half additions and half subtractions; a
    ``label_noise`` fraction of the answers are near misses, like a careless annotator's."""
    pairs = []
    while len(pairs) < count:
        prompt = random_prompt(rng)
        if split_of(prompt) == "train":
            right = answer(prompt)
            pairs.append((prompt, near_miss(right, rng) if rng.random() < label_noise else right))
    return pairs


def sft_batch(tokenizer, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ``prompt + answer + eos`` with labels on the answer and eos only."""
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False).input_ids
    answers = tokenizer([a + tokenizer.eos_token for _, a in pairs], add_special_tokens=False).input_ids
    length = max(len(p) + len(a) for p, a in zip(prompts, answers))
    input_ids = torch.full((len(pairs), length), tokenizer.pad_token_id)
    labels = torch.full((len(pairs), length), -100)
    attention_mask = torch.zeros((len(pairs), length), dtype=torch.long)
    for row, (prompt, target) in enumerate(zip(prompts, answers)):
        tokens = prompt + target
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, len(prompt) : len(tokens)] = torch.tensor(target)
        attention_mask[row, : len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], *, temperature: float = 0.0, max_new_tokens: int = 6,
             batch_size: int = 128, seed: int = 0) -> list[str]:
    """Decoded completions of string prompts: greedy at temperature 0, else pure sampling (no top-k/top-p)."""
    from ..sampling.text import generate_completions

    return generate_completions(model, tokenizer, prompts, temperature=temperature, max_new_tokens=max_new_tokens,
                                batch_size=batch_size, seed=seed)


def accuracy(model, tokenizer, prompts: list[str], **sampling) -> float:
    """The fraction of ``prompts`` whose completion is exactly right."""
    completions = complete(model, tokenizer, prompts, **sampling)
    return sum(is_correct(p, c) for p, c in zip(prompts, completions)) / len(prompts)


def train(output_dir: Path, steps: int, seed: int, resume: bool, log=print, **overrides) -> dict:
    """Train shapes-lm into ``output_dir``; ``overrides`` change :data:`DEFAULTS` (tests use tiny runs)."""
    from .arithmetic import arithmetic_prompts

    config = {**DEFAULTS, **overrides}
    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    watch = Stopwatch()
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng([seed, 3])
    resume_state = dict(total_steps=steps, rng=rng, model=model, optimizer=optimizer)
    start = load_checkpoint(output_dir, **resume_state) if resume else 0

    def compute_loss(step: int) -> torch.Tensor:
        return model(**sft_batch(tokenizer, training_pairs(rng, config["batch_size"], config["label_noise"]))).loss

    model.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=config["lr"],
                       warmup=min(config["warmup"], steps // 10 + 1), desc="shapes-lm", max_grad_norm=1.0,
                       checkpoint=lambda step: save_checkpoint(output_dir, step, **resume_state))
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.max_new_tokens = 6

    def write(folder: Path) -> None:
        model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    export_atomically(output_dir, write, last="config.json")
    model.float()
    heldout = arithmetic_prompts("heldout", config["eval_prompts"], seed=1)
    summary = {"steps": steps, "minutes": round(watch.minutes, 1),
               "heldout_greedy_accuracy": accuracy(model, tokenizer, heldout),
               "heldout_sampled_accuracy": accuracy(model, tokenizer, heldout, temperature=1.0, seed=1),
               "losses": losses}
    log(f"trained shapes-lm in {watch}; saved {output_dir}")
    return summary
