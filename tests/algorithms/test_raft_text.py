"""RAFT and best-of-N for causal LMs: the LM loss only on completions, a short run on the shipped
shapes-lm that the verifier scores, and LoRA adapters that load back into the base model."""

import json

import pytest
import torch

from mmalign.algorithms import best_of_n_completions, raft
from mmalign.algorithms.raft import RAFTConfig
from mmalign.algorithms.raft_text import IGNORE_INDEX, completion_batch
from mmalign.errors import InvalidInputError
from mmalign.models import load_causal_lm
from mmalign.rewards import load_reward
from mmalign.shapes.arithmetic import arithmetic_prompts


@pytest.fixture(scope="module")
def shapes_lm():
    return load_causal_lm("shapes-lm")


def test_labels_cover_the_completion_and_eos_only(shapes_lm):
    _, tokenizer = shapes_lm
    batch = completion_batch(tokenizer, ["12+34=", "5+6="], ["46", "11"], "cpu")
    for row, (prompt, completion) in enumerate([("12+34=", "46"), ("5+6=", "11")]):
        labels = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        assert labels == tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt_length = len(tokenizer(prompt)["input_ids"])
        assert batch["input_ids"][row][:prompt_length].tolist() == tokenizer(prompt)["input_ids"]
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # the shorter row is padded on the right


def test_best_of_n_completions_keeps_the_verified_answer(shapes_lm):
    model, tokenizer = shapes_lm
    verifier = load_reward("shapes-arithmetic-verifier")
    prompts = arithmetic_prompts("heldout", 64, seed=1)
    one = best_of_n_completions(model, tokenizer, prompts, verifier, num_candidates=1, max_new_tokens=8)
    eight = best_of_n_completions(model, tokenizer, prompts, verifier, num_candidates=8, max_new_tokens=8)
    assert eight.scores.shape == (64, 8) and len(eight.candidates) == 64 * 8
    chosen = torch.tensor([eight.scores[row, i] for row, i in enumerate(eight.best_index)])
    torch.testing.assert_close(chosen, eight.scores.max(1).values)
    assert verifier(eight.completions, prompts).reward.mean() > verifier(one.completions, prompts).reward.mean() + 0.2
    with pytest.raises(InvalidInputError, match="temperature"):
        best_of_n_completions(model, tokenizer, prompts, verifier, num_candidates=4, temperature=0.0)


def test_raft_with_the_verifier_raises_held_out_accuracy(tmp_path):
    config = RAFTConfig(model="shapes-lm", reward="shapes-arithmetic-verifier", output_dir=str(tmp_path), use_lora=False,
                        learning_rate=1e-4, num_iterations=10, prompts_per_iteration=128, num_samples_per_prompt=8,
                        train_batch_size=32, eval_every=10, num_eval_prompts=256, report_to="none")
    history = raft(config)
    assert history[-1]["accuracy"] > 0.55  # shapes-lm samples about 47% right at temperature 1
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["accuracy"] == history[-1]["accuracy"]
    model, tokenizer = load_causal_lm(str(tmp_path))  # a full fine-tune saves a loadable model and tokenizer
    assert tokenizer("1+1=")["input_ids"] and model.config.architectures == ["LlamaForCausalLM"]


def test_raft_lora_adapter_loads_back_into_the_base(tmp_path):
    config = RAFTConfig(model="shapes-lm", reward="shapes-arithmetic-verifier", output_dir=str(tmp_path), rank=4,
                        learning_rate=1e-3, num_iterations=2, prompts_per_iteration=16, num_samples_per_prompt=4,
                        train_batch_size=8, eval_every=0, report_to="none")
    raft(config)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    model, tokenizer = load_causal_lm("shapes-lm")
    inputs = tokenizer(["123+45="], return_tensors="pt")
    base = model(**inputs).logits
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(model, str(tmp_path))(**inputs).logits
    assert (tuned - base).abs().max() > 1e-5


def test_a_text_model_refuses_an_image_reward(tmp_path):
    with pytest.raises(InvalidInputError, match="not text"):
        raft(RAFTConfig(model="shapes-lm", reward="shapes-clip", output_dir=str(tmp_path)))
